-- Settings are validated where they are set, and the error names them.
SHOW iq_fdw.application_id;
SHOW iq_fdw.customer_topic;
SHOW iq_fdw.order_topic;
SHOW iq_fdw.partitioner;
SHOW iq_fdw.processing_guarantee;

-- a range PostgreSQL enforces; its message words the range differently
-- from 17 on ("1 ms .. 3600000 ms"), so the refusal shows as its SQLSTATE
SELECT min_val, max_val, unit FROM pg_settings WHERE name = 'iq_fdw.peer_timeout';
\set VERBOSITY sqlstate
SET iq_fdw.peer_timeout = 0;
\set VERBOSITY default
SET iq_fdw.peer_timeout = 1;
SET iq_fdw.peer_timeout = '2s';
SHOW iq_fdw.peer_timeout;
SET iq_fdw.max_lag = 1000;
SET iq_fdw.lag_policy = 'sometimes';
SET iq_fdw.lag_policy = 'wait';
SET iq_fdw.no_such_setting = 1;

-- Worker settings change with ALTER SYSTEM and a reload, not per session.
SET iq_fdw.bootstrap_servers = '127.0.0.1:9092';
ALTER SYSTEM SET iq_fdw.bootstrap_servers = 'no-port-here';
ALTER SYSTEM SET iq_fdw.bootstrap_servers = '127.0.0.1:9092,';
ALTER SYSTEM SET iq_fdw.http_listen = '127.0.0.1:99999';
ALTER SYSTEM SET iq_fdw.state_dir = 'relative/path';
ALTER SYSTEM SET iq_fdw.state_dir = '/proc/iq_fdw';
ALTER SYSTEM SET iq_fdw.application_id = 'has space';
ALTER SYSTEM SET iq_fdw.processing_guarantee = 'twice';

-- Standby replicas (issue 18): where a read may be answered from, per
-- session; how many standbys each partition has, for the whole server.
SHOW iq_fdw.read_from;
SET iq_fdw.read_from = 'owner_or_standby';
SET iq_fdw.read_from = 'nearest';
SET iq_fdw.read_from = 'anywhere';
SHOW iq_fdw.read_from;
SHOW iq_fdw.standby_max_lag;
SET iq_fdw.standby_max_lag = -1;
SHOW iq_fdw.standby_replicas;
SET iq_fdw.standby_replicas = 1;
ALTER SYSTEM SET iq_fdw.standby_replicas = 'two';
ALTER SYSTEM SET iq_fdw.standby_replicas = '64';
