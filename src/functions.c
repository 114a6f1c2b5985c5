/*-------------------------------------------------------------------------
 * functions.c
 *	  SQL functions over what the worker publishes in shared memory: its
 *	  state, per-partition progress, the instances of the group and the
 *	  owner of a key.
 *
 * Each copies what it needs (a consistent copy of the engine's segment,
 * the supervisor's record under its LWLock), then builds tuples, so a slow
 * client never delays the engine.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "common/partitioner.h"
#include "common/settings.h"
#include "common/shmem.h"
#include "common/stores.h"

PG_FUNCTION_INFO_V1(iq_worker);
PG_FUNCTION_INFO_V1(iq_stats);
PG_FUNCTION_INFO_V1(iq_instances);
PG_FUNCTION_INFO_V1(iq_key_owner);

/* iq_stats' columns as iq_fdw--0.4.sql declares them, role last */
#define IQ_STATS_COLUMNS_0_4	19
/* iq_worker's columns as iq_fdw--0.5.sql declares them, the restore's last */
#define IQ_WORKER_COLUMNS_0_4	13
#define IQ_WORKER_COLUMNS_0_5	19

static ArrayType *
int_array(const int *values, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int32GetDatum(values[i]);
	return construct_array(d, n, INT4OID, sizeof(int32), true, TYPALIGN_INT);
}

static ArrayType *
store_names_array(void)
{
	Datum		d[IQ_NUM_STORES];

	for (int i = 0; i < IQ_NUM_STORES; i++)
		d[i] = CStringGetTextDatum(iq_stores[i].name);
	return construct_array(d, IQ_NUM_STORES, TEXTOID, -1, false, TYPALIGN_INT);
}

static TupleDesc
result_desc(FunctionCallInfo fcinfo)
{
	TupleDesc	desc;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	return BlessTupleDesc(desc);
}

/*
 * has_backlog
 *		Some partition held here has records to process beyond the one
 *		offset a transaction's commit marker takes (see
 *		iq_consumer_caught_up).
 */
static bool
has_backlog(const IqShared *s)
{
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		const IqPartitionStats *ps = &s->partitions[p];

		if (ps->assigned &&
			(ps->order_end - Max(ps->order_offset, 0) > 1 ||
			 ps->customer_end - Max(ps->customer_offset, 0) > 1))
			return true;
	}
	return false;
}

/*
 * restore_columns
 *		The restore under way, all NULL when none: partition, topic,
 *		offsets read and to read, the rate since it began (records/s) and
 *		the seconds left at that rate (NULL until a record was read).
 */
static void
restore_columns(const IqShared *s, Datum *values, bool *nulls)
{
	const IqRestoreProgress *r = &s->restore;
	double		secs = Max(iq_monotonic_ms() - r->started_ms, 1) / 1000.0;
	double		rate = r->records / secs;

	if (!r->running)
	{
		memset(nulls, true, sizeof(bool) * (IQ_WORKER_COLUMNS_0_5 - IQ_WORKER_COLUMNS_0_4));
		return;
	}
	values[0] = Int32GetDatum(r->partition);
	values[1] = CStringGetTextDatum(r->topic);
	values[2] = Int64GetDatum(r->records);
	values[3] = Int64GetDatum(r->total);
	values[4] = Float8GetDatum(rate);
	values[5] = Float8GetDatum(rate > 0 ? (r->total - r->records) / rate : 0);
	nulls[5] = rate <= 0;
}

/*
 * iq_worker
 *		The worker's state, last message and assigned partitions, and the
 *		watchdog: what its main thread does now and when it last made
 *		progress.
 *
 * The worker cannot say that it is stuck (a stuck thread says nothing), so
 * the backend decides: no progress for iq_fdw.stall_timeout while there is
 * work, a step of its own (anything but waiting for records or to retry) or
 * a backlog, is "stalled", with the step and the state it was in.  Filled
 * to the width the SQL declaration asks for, as iq_stats: the restore
 * under way (since 0.5) only when the declaration has its columns.
 */
Datum
iq_worker(PG_FUNCTION_ARGS)
{
	IqShared   *s = iq_shared_copy();
	TupleDesc	desc = result_desc(fcinfo);
	IqSupervisorShared sup;
	Datum		values[IQ_WORKER_COLUMNS_0_5];
	bool		nulls[IQ_WORKER_COLUMNS_0_5] = {0};
	int			assigned[IQ_MAX_PARTITIONS];
	int			n = 0;
	uint32		step;
	int64		progress_at;
	int64		quiet_ms;
	IqWorkerStep kind;
	char		step_text[128];
	const char *state = iq_worker_state_name(s->state);
	char	   *message = s->message;

	LWLockAcquire(iq_supervisor->lock, LW_SHARED);
	sup = *iq_supervisor;
	LWLockRelease(iq_supervisor->lock);

	/* the step before its time: the worker writes the time first */
	step = pg_atomic_read_u32(&iq_shared->step);
	pg_read_barrier();
	progress_at = (int64) pg_atomic_read_u64(&iq_shared->progress_at);
	quiet_ms = progress_at > 0 ? Max(iq_monotonic_ms() - progress_at, 0) : 0;
	kind = (IqWorkerStep) (step >> 16);
	iq_worker_step_describe(step, step_text, sizeof(step_text));

	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (s->partitions[p].assigned)
			assigned[n++] = p;

	if (sup.engine_pid != 0 && s->state != IQ_WORKER_STOPPED && progress_at > 0 &&
		quiet_ms > iq_stall_timeout_ms &&
		((kind != IQ_STEP_IDLE && kind != IQ_STEP_POLLING) || has_backlog(s)))
	{
		message = psprintf("no progress for %lld s while %s%s; the state before: %s%s%s",
						   (long long) (quiet_ms / 1000), step_text,
						   kind == IQ_STEP_POLLING ? " with a backlog" : "",
						   state, s->message[0] ? ": " : "", s->message);
		state = "stalled";
	}

	values[0] = CStringGetTextDatum(state);
	values[1] = CStringGetTextDatum(message);
	nulls[1] = message[0] == '\0';
	values[2] = Int32GetDatum(sup.engine_pid);
	nulls[2] = sup.engine_pid == 0;
	values[3] = Int64GetDatum((int64) s->generation);
	values[4] = Int32GetDatum(s->partition_count);
	values[5] = PointerGetDatum(int_array(assigned, n));
	values[6] = TimestampTzGetDatum(s->state_since);
	nulls[6] = s->state_since == 0;
	/* step and progress_at came later: heap_form_tuple takes what desc has */
	values[7] = CStringGetTextDatum(step_text);
	nulls[7] = sup.engine_pid == 0;
	values[8] = TimestampTzGetDatum(GetCurrentTimestamp() - quiet_ms * 1000);
	nulls[8] = sup.engine_pid == 0 || progress_at == 0;
	/* the supervisor's record: since 0.3 */
	values[9] = Int32GetDatum(sup.supervisor_pid);
	nulls[9] = sup.supervisor_pid == 0;
	values[10] = Int64GetDatum(sup.engine_restarts);
	values[11] = CStringGetTextDatum(sup.last_exit);
	nulls[11] = sup.last_exit[0] == '\0';
	values[12] = TimestampTzGetDatum(sup.last_exit_at);
	nulls[12] = sup.last_exit_at == 0;
	if (desc->natts >= IQ_WORKER_COLUMNS_0_5)
		restore_columns(s, values + IQ_WORKER_COLUMNS_0_4, nulls + IQ_WORKER_COLUMNS_0_4);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * iq_stats
 *		One row per partition this instance holds, and (since 0.4, whose
 *		declaration ends with role) one per standby replica it keeps.
 *
 * Filled to the width the SQL declaration asks for, so that a database
 * created before state_rebuilds was added keeps working with this library.
 * A declaration without role gets no standby rows: they would read as
 * partitions held here.
 */
Datum
iq_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	IqShared   *s = iq_shared_copy();
	bool		with_role;

	InitMaterializedSRF(fcinfo, 0);
	with_role = rsinfo->setDesc->natts >= IQ_STATS_COLUMNS_0_4;

	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		IqPartitionStats *ps = &s->partitions[p];
		Datum		values[IQ_STATS_COLUMNS_0_4];
		bool		nulls[IQ_STATS_COLUMNS_0_4] = {0};
		int			i = 0;
		const char *state;
		bool		standby = ps->standby && !ps->assigned;

		if (!ps->assigned && !(standby && with_role))
			continue;
		if (ps->restoring)
			state = "restoring";
		else if (s->state == IQ_WORKER_RUNNING)
			state = "running";
		else
			state = iq_worker_state_name(s->state);

		values[i++] = Int32GetDatum(p);
		values[i++] = CStringGetTextDatum(state);
		values[i++] = Int64GetDatum(ps->customer_offset);
		values[i++] = Int64GetDatum(ps->customer_end);
		values[i++] = Int64GetDatum(ps->order_offset);
		values[i++] = Int64GetDatum(ps->order_end);
		/*
		 * An offset of -1 means nothing consumed yet: all of the partition
		 * is lag.  A standby's is its order offset's, the bound reads from it
		 * are held to (its customer topic is read to its end first), and
		 * unknown (NULL) until it has read a flush's mark and learnt its
		 * input's end: such a standby is not read either.
		 */
		if (standby && (ps->order_end < 0 || ps->order_offset < 0))
			nulls[i++] = true;
		else if (standby)
			values[i++] = Int64GetDatum(Max(ps->order_end - ps->order_offset, 0));
		else
			values[i++] = Int64GetDatum(Max(ps->order_end - Max(ps->order_offset, 0), 0) +
										Max(ps->customer_end - Max(ps->customer_offset, 0), 0));
		values[i++] = Int64GetDatum(ps->records_processed);
		values[i++] = Int64GetDatum(ps->orders_joined);
		values[i++] = Int64GetDatum(ps->orders_without_customer);
		values[i++] = Int64GetDatum(ps->dropped_null_key);
		values[i++] = Int64GetDatum(ps->dropped_malformed);
		values[i++] = Int64GetDatum(ps->dropped_unprocessable);
		values[i++] = Int64GetDatum(ps->wrong_partition);
		/* a standby's: the records it has applied since the engine started */
		values[i++] = Int64GetDatum(standby ? ps->standby_applied : ps->restored_records);
		values[i++] = Int64GetDatum(ps->restore_total);
		values[i++] = Int64GetDatum(ps->changelog_offset);
		/* state_rebuilds came with a later script: a 0.1 database lacks it */
		if (rsinfo->setDesc->natts > i)
			values[i++] = Int64GetDatum(ps->state_rebuilds);
		/* role came with 0.4, last */
		if (with_role)
			values[i++] = CStringGetTextDatum(standby ? "standby" : "owner");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * iq_instances
 *		Members of the group holding partitions, as the seed's /metadata.
 */
Datum
iq_instances(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	IqShared   *s = iq_shared_copy();

	InitMaterializedSRF(fcinfo, 0);

	for (int m = 0; m < s->nmembers; m++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};
		int			parts[IQ_MAX_PARTITIONS];
		int			n = 0;

		for (int p = 0; p < s->partition_count && p < IQ_MAX_PARTITIONS; p++)
			if (s->owner[p] == m)
				parts[n++] = p;

		values[0] = CStringGetTextDatum(s->members[m].host);
		values[1] = Int32GetDatum(s->members[m].port);
		values[2] = PointerGetDatum(store_names_array());
		values[3] = PointerGetDatum(int_array(parts, n));
		values[4] = BoolGetDatum(s->members[m].is_self);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * iq_key_owner
 *		The instance owning a key's partition, whether or not the key exists.
 */
Datum
iq_key_owner(PG_FUNCTION_ARGS)
{
	char	   *store = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *key = PG_GETARG_TEXT_PP(1);
	IqShared   *s;
	TupleDesc	desc = result_desc(fcinfo);
	Datum		values[4];
	bool		nulls[4] = {0};
	int			partition;
	int			owner;

	if (iq_store_by_name(store) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("state store \"%s\" does not exist", store),
				 errhint("The stores are \"%s\" and \"%s\".",
						 iq_stores[0].name, iq_stores[1].name)));

	s = iq_shared_copy();
	if (s->partition_count <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the partition count of store \"%s\" is not known yet", store),
				 errdetail("The iq_fdw worker is %s%s%s.", iq_worker_state_name(s->state),
						   s->message[0] ? ": " : "", s->message),
				 errhint("Check SELECT * FROM iq_worker() and the server log.")));

	partition = iq_partition_for_key(iq_partitioner, VARDATA_ANY(key),
									 VARSIZE_ANY_EXHDR(key), s->partition_count);
	owner = partition < IQ_MAX_PARTITIONS ? s->owner[partition] : -1;
	if (owner < 0 || owner >= s->nmembers)
	{
		nulls[0] = nulls[1] = nulls[3] = true;
	}
	else
	{
		values[0] = CStringGetTextDatum(s->members[owner].host);
		values[1] = Int32GetDatum(s->members[owner].port);
		values[3] = BoolGetDatum(s->members[owner].is_self);
	}
	values[2] = Int32GetDatum(partition);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(iq_murmur2_sql);
PG_FUNCTION_INFO_V1(iq_partition_for_key_sql);

/*
 * iq_murmur2_sql
 *		Kafka's murmur2 of raw bytes, signed as Java returns it.
 */
Datum
iq_murmur2_sql(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_INT32((int32) iq_murmur2(VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data)));
}

/*
 * iq_partition_for_key_sql
 *		The partition a producer using iq_fdw.partitioner puts a key in.
 */
Datum
iq_partition_for_key_sql(PG_FUNCTION_ARGS)
{
	text	   *key = PG_GETARG_TEXT_PP(0);
	int32		count = PG_GETARG_INT32(1);

	if (count <= 0 || count > IQ_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition count %d is out of range", count),
				 errhint("Give a count between 1 and %d.", IQ_MAX_PARTITIONS)));
	PG_RETURN_INT32(iq_partition_for_key(iq_partitioner, VARDATA_ANY(key),
										 VARSIZE_ANY_EXHDR(key), count));
}
