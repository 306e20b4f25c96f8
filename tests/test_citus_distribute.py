"""pushpop.distribute() on a Citus cluster: the queue sharded by topic, each call on one node.

Each test gets a database on the session's coordinator with pushpop migrated into it, as a user
would have it; ``citus.log_remote_commands`` shows which worker node each statement went to.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from citus import ONLINE_MOVES, CitusCluster, citus_or_skip, remote_commands, shard_ports
from faults import report
from psycopg import sql
from psycopg.conninfo import make_conninfo
from waiting import wait_for

from pushpop import migrations

TOPICS = [f"topic-{n}" for n in range(16)]
_databases = itertools.count()

Conn = psycopg.Connection[Any]


@pytest.fixture
def citus_queue(citus_cluster: CitusCluster) -> Iterator[str]:
    """A database on the Citus coordinator with pushpop installed, not distributed yet."""
    dbname = f"citus_distribute_{next(_databases)}"
    dsn = citus_cluster.create_database(dbname)
    migrations.migrate(dsn)
    yield dsn
    citus_cluster.drop_database(dbname)


@pytest.fixture
def sharded(citus_queue: str) -> Iterator[Conn]:
    """An autocommit connection to a queue distributed over both workers in 8 shards."""
    with psycopg.connect(citus_queue, autocommit=True) as conn:
        assert one(conn, "SELECT pushpop.distribute(shard_count => 8)") is True
        yield conn


def one(conn: Conn, query: Any, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def node_of(conn: Conn, topic: str) -> int:
    """The port of the worker node that holds the topic's shard."""
    return int(
        one(
            conn,
            "SELECT nodeport FROM citus_shards WHERE shardid ="
            " get_shard_id_for_distribution_column('pushpop.messages', pushpop.route_of(%s))",
            [topic],
        )
    )


def nodes_touched(conn: Conn, statement: Any, params: list[Any] | None = None) -> set[int]:
    """The ports of the nodes the coordinator sent commands to while running ``statement``."""
    _, sent = remote_commands(conn, statement, params or [])
    return {port for port, _ in sent}


def test_distribute_shards_the_queue_by_route_over_both_workers(
    citus_cluster: CitusCluster, citus_queue: str
) -> None:
    with psycopg.connect(citus_queue, autocommit=True) as conn:
        for topic in TOPICS:
            conn.execute("SELECT pushpop.push(%s, 'before'::bytea)", [topic])
        assert one(conn, "SELECT pushpop.distribute(shard_count => 8)") is True
        assert one(conn, "SELECT pushpop.distributed()") is True
        tables = conn.execute(
            "SELECT table_name::text, citus_table_type, distribution_column, shard_count"
            " FROM citus_tables WHERE table_name::text LIKE 'pushpop.%'"
        ).fetchall()
        assert tables == [("pushpop.messages", "distributed", "route", 8)]
        assert set(shard_ports(conn, "pushpop.messages").values()) == {
            w.port for w in citus_cluster.workers
        }
        rows = conn.execute(
            "SELECT topic, route = pushpop.route_of(topic) FROM pushpop.messages ORDER BY topic"
        ).fetchall()
        assert rows == sorted((topic, True) for topic in TOPICS)
        popped = conn.execute("SELECT id, lease FROM pushpop.pop('topic-3')").fetchall()
        assert len(popped) == 1
        assert one(conn, "SELECT pushpop.complete(%s, %s)", list(popped[0])) is True


def test_distribute_again_changes_nothing(citus_queue: str) -> None:
    with psycopg.connect(citus_queue, autocommit=True) as conn:
        assert one(conn, "SELECT pushpop.distribute(shard_count => 4)") is True
        assert one(conn, "SELECT pushpop.distribute(shard_count => 16)") is False
        assert one(conn, "SELECT shard_count FROM citus_tables") == 4


def test_every_unique_index_of_the_queue_includes_the_route(sharded: Conn) -> None:
    without_route = sharded.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index AS i"
        " WHERE i.indrelid = 'pushpop.messages'::regclass AND i.indisunique"
        "   AND NOT EXISTS (SELECT FROM pg_attribute AS a WHERE a.attrelid = i.indrelid"
        "                   AND a.attname = 'route' AND a.attnum = ANY (i.indkey))"
    ).fetchall()
    assert without_route == []


def test_a_lease_carries_the_route_of_its_topic(sharded: Conn) -> None:
    sharded.execute("SELECT pushpop.push('orders', 'x'::bytea)")
    lease = one(sharded, "SELECT lease FROM pushpop.pop('orders')")
    assert one(sharded, "SELECT pushpop.lease_route(%s)", [lease]) == one(
        sharded, "SELECT pushpop.route_of('orders')"
    )


def test_each_hot_path_call_touches_one_worker_node(
    citus_cluster: CitusCluster, sharded: Conn
) -> None:
    conn, topic = sharded, "orders"
    home = {node_of(conn, topic)}
    assert citus_cluster.worker_of_port(next(iter(home))) is not None
    assert nodes_touched(conn, "SELECT pushpop.push(%s, 'a'::bytea)", [topic]) == home
    assert (
        nodes_touched(
            conn, "SELECT pushpop.push_many(%s, ARRAY['b', 'c', 'd', 'e', 'f']::bytea[])", [topic]
        )
        == home
    )
    first, second, third, fourth = (
        list(row)
        for row in conn.execute("SELECT id, lease FROM pushpop.pop(%s, '1 minute', 4)", [topic])
    )
    assert nodes_touched(conn, "SELECT * FROM pushpop.pop(%s, '1 minute')", [topic]) == home
    assert nodes_touched(conn, "SELECT pushpop.extend(%s, %s, '2 minutes')", first) == home
    assert nodes_touched(conn, "SELECT pushpop.complete(%s, %s)", first) == home
    assert nodes_touched(conn, "SELECT pushpop.discard(%s, %s, 'no')", second) == home
    assert nodes_touched(conn, "SELECT pushpop.defer(%s, %s, '1 hour')", third) == home
    assert (
        nodes_touched(
            conn, "SELECT pushpop.complete_many(ARRAY[%s]::uuid[], ARRAY[%s]::uuid[])", fourth
        )
        == home
    )
    assert nodes_touched(conn, "SELECT * FROM pushpop.pop(%s, '1 minute', 10)", [topic]) == home
    states = conn.execute(
        "SELECT state, count(*) FROM pushpop.messages GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert states == [("completed", 2), ("discarded", 1), ("pending", 2), ("scheduled", 1)]


def delegated_calls(
    conn: Conn, statement: Any, params: list[Any]
) -> tuple[int, set[int], list[str]]:
    """How many rows ``statement`` returned, the nodes it reached and the commands it sent
    there, less the transaction's own (BEGIN, its distributed id, COMMIT)."""
    rows, sent = remote_commands(conn, statement, params)
    calls = [
        command
        for _, command in sent
        if not command.startswith(("BEGIN ", "COMMIT", "PREPARE TRANSACTION", "COMMIT PREPARED"))
    ]
    return len(rows), {port for port, _ in sent}, calls


def test_pop_is_one_call_delegated_to_the_node_of_its_topic(sharded: Conn) -> None:
    conn, topic = sharded, "orders"
    home = {node_of(conn, topic)}
    route = one(conn, "SELECT pushpop.route_of(%s)", [topic])
    conn.execute("SELECT pushpop.push_many(%s, array_fill('m'::bytea, ARRAY[40]))", [topic])
    # One message and a batch, past the five calls after which PL/pgSQL may plan pop's call of
    # pop_at generically; then the same inside a client's transaction block.
    popped = 0

    def pops(count: int, max_messages: int) -> None:
        nonlocal popped
        for _ in range(count):
            rows, nodes, calls = delegated_calls(
                conn, "SELECT * FROM pushpop.pop(%s, '1 minute', %s)", [topic, max_messages]
            )
            assert rows == max_messages
            popped += rows
            assert nodes == home
            # The coordinator sends the one call of pop_at, with the route and its own now()
            # as a constant, to the shard's node; the statements inside run there locally, so
            # none on a shard is sent.
            assert len(calls) == 1, calls
            assert calls[0].startswith("SELECT ")
            call = (
                f"pushpop.pop_at({route}, 'orders'::text, '00:01:00'::interval, {max_messages}, '"
            )
            assert call in calls[0]
            assert "now()" not in calls[0]
            assert "pushpop.messages" not in calls[0]

    pops(7, 1)
    pops(7, 3)
    with conn.transaction():
        pops(2, 1)
        pops(2, 3)
    assert popped == 36
    pending = conn.execute(
        "SELECT count(*), bool_and(pushpop.lease_route(lease) = %s) FROM pushpop.messages"
        " WHERE state = 'pending'",
        [route],
    ).fetchone()
    assert pending == (36, True)


def test_a_schedule_pushes_its_tick_into_the_shard_of_its_topic(sharded: Conn) -> None:
    sharded.execute("SELECT pushpop.schedule('nightly', 'reports', '{}', every => '1 hour')")
    sharded.execute("UPDATE pushpop.schedules SET next_run_at = now() - interval '1 second'")
    assert one(sharded, "SELECT pushpop.run_schedules()") == 1
    assert one(sharded, "SELECT pushpop.run_schedules()") == 0  # each tick once
    row = sharded.execute("SELECT id, lease, headers FROM pushpop.pop('reports')").fetchone()
    assert row is not None
    assert row[2]["pushpop-schedule"] == "nightly"
    route = one(sharded, "SELECT pushpop.route_of('reports')")
    assert one(sharded, "SELECT pushpop.lease_route(%s)", [row[0]]) == route  # its id too
    assert one(sharded, "SELECT pushpop.complete(%s, %s)", [row[0], row[1]]) is True


def test_find_looks_in_the_shard_of_an_id_push_made(sharded: Conn) -> None:
    topic = "orders"
    home = {node_of(sharded, topic)}
    message_id = one(sharded, "SELECT pushpop.push(%s, 'a'::bytea)", [topic])
    assert nodes_touched(sharded, "SELECT * FROM pushpop.find(%s)", [message_id]) == home
    assert one(sharded, "SELECT state FROM pushpop.find(%s)", [message_id]) == "ready"
    chosen = "00000000-0000-4000-8000-000000000001"
    sharded.execute("SELECT pushpop.push(%s, 'b'::bytea, id => %s)", [topic, chosen])
    assert one(sharded, "SELECT topic FROM pushpop.find(%s)", [chosen]) == topic


def test_an_application_role_pushes_and_pops_but_cannot_read_the_table(
    citus_queue: str, sharded: Conn
) -> None:
    role = f"citus_app_{next(_databases)}"
    sharded.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        sharded.execute(
            sql.SQL("GRANT pushpop_producer, pushpop_consumer TO {}").format(sql.Identifier(role))
        )
        sharded.execute("SELECT pushpop.grant_topics(%s, ARRAY['orders'])", [role])
        with psycopg.connect(make_conninfo(citus_queue, user=role), autocommit=True) as app:
            app.execute("SELECT pushpop.push('orders', 'x'::bytea)")
            message_id, lease = app.execute(
                "SELECT id, lease FROM pushpop.pop('orders')"
            ).fetchone() or (
                None,
                None,
            )
            assert one(app, "SELECT pushpop.complete(%s, %s)", [message_id, lease]) is True
            assert one(app, "SELECT topic FROM pushpop.find(%s)", [message_id]) == "orders"
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT pushpop.push('emails', 'x'::bytea)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT count(*) FROM pushpop.messages")
    finally:
        sharded.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        sharded.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_requeue_and_cleanup_lock_rows_one_node_at_a_time(
    citus_cluster: CitusCluster, sharded: Conn
) -> None:
    conn = sharded
    by_node: dict[int, str] = {}
    for topic in TOPICS:
        by_node.setdefault(node_of(conn, topic), topic)
    assert set(by_node) == {w.port for w in citus_cluster.workers}
    for topic in by_node.values():
        conn.execute("SELECT pushpop.push_many(%s, ARRAY['a', 'b']::bytea[])", [topic])
        conn.execute("SELECT * FROM pushpop.pop(%s, '1 millisecond', 2)", [topic])
    conn.execute("SELECT pg_sleep(0.01)")  # the leases run out
    _, sent = remote_commands(conn, "SELECT pushpop.requeue_expired()")
    locking = [(port, command) for port, command in sent if "FOR UPDATE" in command]
    assert {port for port, _ in locking} == set(by_node)
    assert all(command.count("pushpop.messages_") <= 2 for _, command in locking)
    assert one(conn, "SELECT count(*) FROM pushpop.messages WHERE state = 'ready'") == 4
    for topic in by_node.values():
        for message_id, lease in conn.execute(
            "SELECT id, lease FROM pushpop.pop(%s, '1 minute', 2)", [topic]
        ).fetchall():
            conn.execute("SELECT pushpop.complete(%s, %s)", [message_id, lease])
    assert one(conn, "SELECT pushpop.cleanup('0 seconds', max_rows => 3)") == 3
    assert one(conn, "SELECT pushpop.cleanup('0 seconds')") == 1
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 0


def test_distribute_refuses_where_citus_is_not_installed(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        conn.execute("SELECT pushpop.distribute()")
    assert "needs the Citus extension" in str(refused.value)
    assert one(conn, "SELECT pushpop.distributed()") is False


class Load:
    """A producer and a consumer thread on the queue, each on its own connection to the
    coordinator, counting what the database acknowledged and what failed (and going on)."""

    def __init__(self, dsn: str, topics: list[str]) -> None:
        self.dsn, self.topics = dsn, topics
        self.acknowledged: list[Any] = []
        self.completed: list[Any] = []
        self.failures = {"push": 0, "pop": 0}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.produce, name="citus-producer"),
            threading.Thread(target=self.consume, name="citus-consumer"),
        ]

    def produce(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                topic = self.topics[n % len(self.topics)]
                try:
                    pushed = one(conn, "SELECT pushpop.push(%s, 'x'::bytea)", [topic])
                except psycopg.Error:
                    self.failures["push"] += 1
                else:
                    self.acknowledged.append(pushed)

    def consume(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                topic = self.topics[n % len(self.topics)]
                try:
                    for message_id, lease in conn.execute(
                        "SELECT id, lease FROM pushpop.pop(%s, '1 minute', 5)", [topic]
                    ).fetchall():
                        if one(conn, "SELECT pushpop.complete(%s, %s)", [message_id, lease]):
                            self.completed.append(message_id)
                except psycopg.Error:
                    self.failures["pop"] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def progress(self, pushes: int, completions: int, what: str) -> None:
        """Waits for that many more pushes and completions than so far."""
        pushed, completed = len(self.acknowledged), len(self.completed)
        wait_for(lambda: len(self.acknowledged) >= pushed + pushes, what=f"pushes {what}")
        wait_for(lambda: len(self.completed) >= completed + completions, what=f"completions {what}")

    def check(self, conn: Conn, title: str) -> None:
        """Every acknowledged push is stored, and no delivery was completed twice."""
        stored = one(
            conn,
            "SELECT count(*) FROM pushpop.messages WHERE id = ANY (%s::uuid[])",
            [self.acknowledged],
        )
        report(
            title,
            acknowledged=len(self.acknowledged),
            completed=len(self.completed),
            failed_pushes=self.failures["push"],
            failed_pops=self.failures["pop"],
        )
        assert stored == len(self.acknowledged), self.failures
        assert len(set(self.completed)) == len(self.completed)


def test_a_worker_restarted_under_load_loses_no_acknowledged_push_and_consumers_resume(
    citus_cluster: CitusCluster, sharded: Conn, citus_queue: str
) -> None:
    topics = [t for t in TOPICS if node_of(sharded, t) == citus_cluster.workers[0].port][:2]
    topics += [t for t in TOPICS if node_of(sharded, t) == citus_cluster.workers[1].port][:2]
    with Load(citus_queue, topics) as load:
        load.progress(50, 50, "before the restart")
        citus_cluster.restart_worker(0)
        load.progress(100, 100, "after the restart")
    load.check(sharded, "citus worker restart")


def test_a_third_node_and_a_rebalance_under_load_lose_nothing() -> None:
    # A cluster of its own: the session's keeps two workers for the other tests. Its nodes
    # commit synchronously, which an online move needs (citus.ONLINE_MOVES says why).
    with citus_or_skip(settings=ONLINE_MOVES) as own:
        dsn = own.create_database("rebalance_under_load")
        migrations.migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pushpop.distribute(shard_count => 6)")
            with Load(dsn, TOPICS[:8]) as load:
                load.progress(50, 50, "before the rebalance")
                third = own.add_worker()
                conn.execute("SELECT citus_rebalance_start()")  # online: logical replication
                conn.execute("SELECT citus_rebalance_wait()")
                load.progress(100, 100, "after the rebalance")
            assert third.port in shard_ports(conn, "pushpop.messages").values()
            load.check(conn, "citus rebalance onto a third node")
