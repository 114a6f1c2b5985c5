"""faults/pipeline.py: a fresh pipeline per scenario, so that scenarios stay
independent: new topics, a new application_id (group and changelog), the
processing guarantee and the standby replicas (issue 18), set as a user would (ALTER SYSTEM + reload: each
worker restarts itself with them), and the foreign tables imported.

Run as a program it is the Kafka admin step, spawned where the broker is
reachable (the client namespace on hosts):

    pipeline.py BOOTSTRAP PARTITIONS TOPIC...    create the topics (the first compacted)
"""

import sys
import time

from cluster import wait_until

SCHEMA = "faults"
SETTINGS = ("iq_fdw.application_id", "iq_fdw.customer_topic", "iq_fdw.order_topic",
            "iq_fdw.processing_guarantee")
# issue 18: set with the others by switch (a run.py --standby N), reset with them
STANDBY = "iq_fdw.standby_replicas"


def create_topics(bootstrap, partitions, names):
    """Create names (the first one, the customer topic, compacted)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(n, partitions, 1, config={"cleanup.policy": "compact"} if j == 0 else {})
              for j, n in enumerate(names)]
    for n, f in admin.create_topics(topics, request_timeout=30).items():
        f.result(timeout=60)


def make_topics(cluster, partitions, names):
    """Create topics through the adapter (from the loads' host)."""
    p = cluster.spawn([sys.executable, __file__, cluster.bootstrap, partitions, *names])
    if p.wait(timeout=120) != 0:
        raise RuntimeError(f"could not create the topics {names}")


def settled(cluster, instances, partitions):
    """{partition: instance} once every instance runs and together they own
    each partition once; else None."""
    owner = {}
    for i in instances:
        state, _, _, parts, _ = cluster.worker(i)
        if state != "running":
            return None
        for p in parts:
            if p in owner:
                return None
            owner[p] = i
    return owner if sorted(owner) == list(range(partitions)) else None


def has_setting(cluster, i, name):
    """Whether instance i's build knows the setting (a build before issue 18
    knows no standby_replicas, and refuses an unknown iq_fdw.* in ALTER SYSTEM)."""
    return bool(cluster.sql(i, "SELECT 1 FROM pg_settings WHERE name = %s", (name,)))


def switch(cluster, instances, name, guarantee, partitions, standby=0):
    """Point instances at a new pipeline called name, with standby standby
    replicas of each partition (0: the setting reset, so that a scenario run
    without standbys after one with them has none); return its settings."""
    customer, order = f"{name}_customer", f"{name}_order"
    make_topics(cluster, partitions, [customer, order])
    settings = dict(zip(SETTINGS, (name, customer, order, guarantee)))
    if standby:
        settings[STANDBY] = str(standby)
    pids = {i: cluster.worker_pid(i) for i in instances}
    for i in instances:
        for k, v in settings.items():
            cluster.sql(i, f"ALTER SYSTEM SET {k} = %s", (v,))
        if not standby and has_setting(cluster, i, STANDBY):
            cluster.sql(i, f"ALTER SYSTEM RESET {STANDBY}")
        cluster.sql(i, "SELECT pg_reload_conf()")
    time.sleep(1)
    wait_until(lambda: all(cluster.worker_pid(i) not in (None, pids[i]) for i in instances)
               and settled(cluster, instances, partitions), timeout=180,
               what=f"workers of {instances} running pipeline {name}")
    for i in instances:
        import_stores(cluster, i)
    return settings


def reset(cluster, instances):
    """Back to the settings the cluster had before the suite (ALTER SYSTEM
    RESET), once every worker restarted and owns its share again."""
    pids = {i: cluster.worker_pid(i) for i in instances}
    for i in instances:
        for k in SETTINGS + ((STANDBY,) if has_setting(cluster, i, STANDBY) else ()):
            cluster.sql(i, f"ALTER SYSTEM RESET {k}")
        cluster.sql(i, "SELECT pg_reload_conf()")
    time.sleep(1)
    wait_until(lambda: all(cluster.worker_pid(i) not in (None, pids[i]) for i in instances)
               and settled(cluster, instances, cluster.worker(1)[4] or 0), timeout=180,
               what=f"workers of {instances} back on their own pipeline")


def import_stores(cluster, i):
    """The foreign tables order_count and customer in schema faults."""
    cluster.sql(i, f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_foreign_server WHERE srvname = 'faults_srv') THEN
    CREATE SERVER faults_srv FOREIGN DATA WRAPPER iq_fdw;
  END IF;
END $$;
IMPORT FOREIGN SCHEMA stores FROM SERVER faults_srv INTO {SCHEMA};""")


if __name__ == "__main__":
    create_topics(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
