/*
 * local_rtt.c: round trip of a point get over the worker's local socket,
 * as a backend does it (u32 length + wire request, read the answer).
 *
 *   cc -O2 -I. bench/local_rtt.c common/wire.c -o /tmp/local_rtt
 *   /tmp/local_rtt <data directory> <store 0|1> <key> [iterations] [spin_us]
 *
 * The worker listens on iq_fdw.sock in the instance's data directory (the
 * first argument may also be a socket's path); run it as the PostgreSQL
 * user or root.  It connects from inside the directory, as backends do, so
 * a long data directory path does not overflow sun_path.
 *
 * Prints the median, p99 and mean round trip in microseconds.  With
 * spin_us, the answer is first awaited by spinning on a non-blocking recv
 * for up to that long before blocking.
 *
 * Measured 2026-11-25 on the shared 2-CPU box (load average 3..8), a found
 * key of order-count, RocksDB get included: median 21..34 us, p99 84 us
 * and up.  Spinning 50 us first made the median ~70 us (the spinner takes
 * the CPU the worker's thread needs), so src/fetch.c blocks in poll.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/wire.h"

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	struct sockaddr_un addr;
	IqWireRequest req;
	IqBuf		body;
	IqBuf		msg;
	const char *key;
	uint32_t	klen;
	int			n;
	int			fd;
	double	   *t;
	double		sum = 0;
	int			rows = 0;
	double		spin;
	const char *path;
	struct stat st;

	if (argc < 4)
	{
		fprintf(stderr, "usage: %s datadir|socket store key [iterations] [spin_us]\n", argv[0]);
		return 2;
	}
	n = argc > 4 ? atoi(argv[4]) : 100000;
	spin = argc > 5 ? atof(argv[5]) : 0;
	key = argv[3];
	klen = (uint32_t) strlen(key);
	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_GET;
	req.store = (uint8_t) atoi(argv[2]);
	req.nkeys = 1;
	req.keys = &key;
	req.key_lens = &klen;
	iq_buf_init(&body);
	iq_wire_encode_request(&req, &body);
	iq_buf_init(&msg);
	iq_buf_u32(&msg, (uint32_t) body.len);
	iq_buf_append(&msg, body.data, body.len);

	path = argv[1];
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
	{
		if (chdir(path) < 0)
		{
			perror("chdir");
			return 1;
		}
		path = "iq_fdw.sock";
	}
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0)
	{
		perror("connect");
		return 1;
	}
	t = malloc(sizeof(double) * n);
	for (int i = 0; i < n; i++)
	{
		IqWireReader r;
		char		buf[4096];
		IqWireEvent ev = IQ_EV_NEED_MORE;
		double		t0 = now_us();

		if (write(fd, msg.data, msg.len) != (ssize_t) msg.len)
		{
			perror("write");
			return 1;
		}
		iq_wire_reader_init(&r);
		while (ev != IQ_EV_END && ev != IQ_EV_ERROR)
		{
			ssize_t		got;

			ev = iq_wire_reader_next(&r);
			if (ev == IQ_EV_ROW)
				rows++;
			if (ev != IQ_EV_NEED_MORE)
				continue;
			got = -1;
			if (spin > 0)
			{
				double		until = now_us() + spin;

				do
					got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
				while (got < 0 && now_us() < until);
			}
			if (got < 0)
				got = read(fd, buf, sizeof(buf));
			if (got <= 0)
			{
				perror("read");
				return 1;
			}
			iq_wire_reader_feed(&r, buf, (size_t) got);
		}
		if (ev == IQ_EV_ERROR)
		{
			fprintf(stderr, "error: %s\n", r.message);
			return 1;
		}
		iq_wire_reader_free(&r);
		t[i] = now_us() - t0;
		sum += t[i];
	}
	qsort(t, n, sizeof(double), cmp);
	printf("%d point gets over %s: median %.1f us, p99 %.1f us, mean %.1f us (%d found)\n",
		   n, argv[1], t[n / 2], t[n * 99 / 100], sum / n, rows);
	return 0;
}
