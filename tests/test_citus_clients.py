"""The client, ordering and fan-out tests again, on a queue distributed over the Citus cluster.

The same test functions as tests/test_client.py, tests/test_async_client.py,
tests/test_ordering.py and tests/test_fanout.py, with ``dsn`` giving each one a database of its
own on the coordinator, distributed by pushpop.distribute() (a copy of a template made once per
module, so a test starts in a fraction of a second). Afterwards every message left must keep the
queue table's rules, as on one server. tests/test_citus_worker.py does the same for the workers
with these fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest
import test_async_client
import test_client
import test_fanout
import test_ordering
from citus import CitusCluster
from conftest import BROKEN_RULES
from roles import Logins, made
from test_citus_distribute import node_of, nodes_touched

from pushpop import migrations

_databases = itertools.count()

Conn = psycopg.Connection[Any]

# What a distributed installation does differently, on purpose, or what a test reads that only
# one server has; one line each.
DIFFERENT = {
    # Inserts rows with plain SQL, without the route a distributed table needs.
    "test_cleanup_deletes_more_than_one_batch",
    # Expects synchronous_commit on by default; the Citus test nodes run with it off.
    "test_a_push_that_need_not_be_durable_commits_without_waiting_for_the_disk",
    # Counts the database's sessions; Citus's maintenance daemon holds one of its own.
    "test_async_with_opens_the_pool_and_closing_releases_its_connections",
}

# The fixtures of those modules that their tests use: ``logins`` is made on the coordinator below.
sync_client = test_client.sync_client


def one(conn: Conn, query: Any, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def collect(*modules: ModuleType, different: set[str]) -> dict[str, Any]:
    """Every test function of ``modules`` but those in ``different``, to collect a second time."""
    return {
        name: test
        for module in modules
        for name, test in vars(module).items()
        if name.startswith("test_") and callable(test) and name not in different
    }


globals().update(
    collect(test_client, test_async_client, test_ordering, test_fanout, different=DIFFERENT)
)


# conftest's check of the rules, with the live message of a key looked up in the blocked one's
# route: Citus joins a distributed table with itself only on the distribution column (and a
# key lives in one topic, so in one route).
DISTRIBUTED_BROKEN_RULES = BROKEN_RULES.replace(
    "WHERE h.topic = m.topic", "WHERE h.route = m.route AND h.topic = m.topic"
)
assert DISTRIBUTED_BROKEN_RULES != BROKEN_RULES


def rules_broken(conninfo: str) -> list[tuple[Any, ...]]:
    """The messages of ``conninfo`` that break the queue table's rules."""
    with psycopg.connect(conninfo, autocommit=True) as check:
        return check.execute(DISTRIBUTED_BROKEN_RULES).fetchall()


@pytest.fixture(scope="module")
def distributed_template(
    request: pytest.FixtureRequest, citus_cluster: CitusCluster
) -> Iterator[str]:
    """A database with pushpop migrated and distributed, frozen as a template on every node."""
    dbname = f"{request.module.__name__}_template"
    dsn = citus_cluster.create_database(dbname)
    migrations.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pushpop.distribute(shard_count => 8)")
    citus_cluster.freeze_as_template(dbname)
    yield dbname
    citus_cluster.drop_database(dbname)


@pytest.fixture
def dsn(
    request: pytest.FixtureRequest, citus_cluster: CitusCluster, distributed_template: str
) -> Iterator[str]:
    """This test's own distributed database on the coordinator (overrides conftest's ``dsn``);
    afterwards its messages must keep the queue table's rules."""
    dbname = f"{request.module.__name__}_{next(_databases)}"
    conninfo = citus_cluster.clone_database(distributed_template, dbname)
    yield conninfo
    broken = rules_broken(conninfo)
    citus_cluster.drop_database(dbname)
    assert not broken, f"messages breaking the queue table's rules: {broken}"


@pytest.fixture(scope="module")
def logins(citus_cluster: CitusCluster, distributed_template: str) -> Iterator[Logins]:
    """LOGIN roles holding pushpop_producer, pushpop_consumer and pushpop_admin, made on the
    coordinator (overrides test_fanout's, which makes them on the single server)."""
    kinds = {"producer": ["pushpop_producer"], "consumer": ["pushpop_consumer"]}
    with made(citus_cluster.coordinator.dsn(), kinds | {"admin": ["pushpop_admin"]}) as logins:
        yield logins


# --- Keyed messages and fan-out: which nodes each call reaches -------------------------------


def test_each_keyed_call_and_the_unblocking_it_does_touch_one_worker_node(
    citus_cluster: CitusCluster, conn: Conn
) -> None:
    topic = "orders"
    home = {node_of(conn, topic)}
    assert citus_cluster.worker_of_port(next(iter(home))) is not None
    keyed = "SELECT pushpop.push(%s, 'x'::bytea, ordering_key => 'k')"
    for _ in range(4):
        assert nodes_touched(conn, keyed, [topic]) == home
    assert (
        nodes_touched(
            conn,
            "SELECT pushpop.push_many(%s, ARRAY['a', 'b', 'c', 'd']::bytea[],"
            " ordering_keys => ARRAY['j', 'j', 'j', 'j'])",
            [topic],
        )
        == home
    )
    popping = "SELECT id, lease FROM pushpop.pop(%s, '1 minute', 10)"
    for acknowledge in (
        "SELECT pushpop.complete(%s, %s)",  # unblock_next: the key's next message is ready
        "SELECT pushpop.discard(%s, %s, 'no')",
        "SELECT pushpop.complete_many(ARRAY[%s]::uuid[], ARRAY[%s]::uuid[])",
    ):
        live = conn.execute(popping, [topic]).fetchall()
        assert len(live) == 2  # one per key, the rest blocked
        for message in live:
            assert nodes_touched(conn, acknowledge, list(message)) == home
    # Three of each key's four messages were finished, one at a time: the last is ready.
    assert conn.execute(
        "SELECT ordering_key, state FROM pushpop.messages"
        " WHERE state NOT IN ('completed', 'discarded') ORDER BY 1"
    ).fetchall() == [("j", "ready"), ("k", "ready")]


def test_a_fanned_out_push_writes_on_the_nodes_of_its_subscriber_topics_only(
    citus_cluster: CitusCluster, conn: Conn
) -> None:
    topics = [f"subscriber-{n}" for n in range(16)]
    by_node: dict[int, list[str]] = {}
    for topic in topics:
        by_node.setdefault(node_of(conn, topic), []).append(topic)
    assert len(by_node) == 2  # the topics are spread over both workers
    port, subscribers = next(iter(by_node.items()))
    for subscriber in subscribers[:2]:
        conn.execute("SELECT pushpop.subscribe('orders', %s)", [subscriber])
    for statement in (
        "SELECT pushpop.push('orders', 'x'::bytea)",
        "SELECT pushpop.push('orders', 'x'::bytea, ordering_key => 'k')",
        "SELECT pushpop.push_many('orders', ARRAY['a', 'b']::bytea[])",
    ):
        assert nodes_touched(conn, statement) == {port}
    copies = conn.execute(
        "SELECT topic, count(*) FROM pushpop.messages GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert copies == [(subscriber, 4) for subscriber in sorted(subscribers[:2])]
