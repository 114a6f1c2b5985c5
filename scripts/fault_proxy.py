#!/usr/bin/python3
"""scripts/fault_proxy.py: a user-space fault proxy in front of one port, for
scripts/hosts (the kernel here has no netem qdisc to slow a link).

    fault_proxy.py --listen ADDR:PORT --target ADDR:PORT slow MS
    fault_proxy.py --listen ADDR:PORT --target ADDR:PORT garbage

slow MS: every chunk the client sends waits MS milliseconds before it goes
on to the target (one HTTP request is one chunk: MS per request); what the
target answers comes back at once. garbage: the target is never reached; a
connection is answered with bytes that are no HTTP, then closed.

scripts/hosts runs it inside a host's namespace, with an nftables redirect
of the other hosts' connections to the HTTP port onto --listen; it connects
to --target from that host, so its own connections are not redirected.
Bounded: it exits on SIGTERM (scripts/hosts proxy I off, down) and after
--lifetime seconds at most.
"""

import argparse
import asyncio
import signal

GARBAGE = b"\x16\x03\x01\xffIQ-FAULT-PROXY garbage \x00\x01\x02\xfe\r\n\r\n\x00" * 4


def addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def pump(reader, writer, delay):
    """pump: copy reader to writer until either end closes, each chunk
    held `delay` seconds first."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


async def serve_slow(target, delay, reader, writer):
    """serve_slow: one client, relayed to the target with its chunks held."""
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pump(reader, up_writer, delay), pump(up_reader, writer, 0))


async def serve_garbage(reader, writer):
    """serve_garbage: one client, answered with bytes no HTTP client can read."""
    try:
        await asyncio.wait_for(reader.read(65536), timeout=2)
        writer.write(GARBAGE)
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=addr, required=True)
    ap.add_argument("--target", type=addr, required=True)
    ap.add_argument("--lifetime", type=float, default=3600.0)
    ap.add_argument("mode", choices=["slow", "garbage"])
    ap.add_argument("ms", nargs="?", type=int, default=0)
    args = ap.parse_args()
    if args.mode == "slow":
        delay = args.ms / 1000.0

        def handler(r, w):
            return serve_slow(args.target, delay, r, w)
    else:
        handler = serve_garbage
    server = await asyncio.start_server(handler, *args.listen, reuse_address=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await asyncio.wait_for(stop, timeout=args.lifetime)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
