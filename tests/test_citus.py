"""The Citus cluster the distributed tests run on: a coordinator and two worker nodes.

These tests prove the fixture itself (tests/citus.py): shards spread over both workers, a query
by distribution value goes to one node, a worker restarts, and a third node takes shards in a
rebalance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from citus import CitusCluster, citus_or_skip, remote_commands, shard_ports

_databases = itertools.count()


@pytest.fixture
def citus_db(citus_cluster: CitusCluster) -> Iterator[str]:
    """Conninfo of a fresh database on the coordinator, with the workers registered in it."""
    dbname = f"citus_test_{next(_databases)}"
    dsn = citus_cluster.create_database(dbname)
    yield dsn
    citus_cluster.drop_database(dbname)


def _distributed_table(conn: psycopg.Connection[Any], shards: int = 8) -> None:
    conn.execute("CREATE TABLE items (topic text, n integer, PRIMARY KEY (topic, n))")
    conn.execute("SELECT create_distributed_table('items', 'topic', shard_count => %s)", [shards])
    conn.execute("INSERT INTO items SELECT 'topic-' || g % 16, g FROM generate_series(1, 160) AS g")


def test_a_distributed_table_spans_both_workers(citus_cluster: CitusCluster, citus_db: str) -> None:
    with psycopg.connect(citus_db, autocommit=True) as conn:
        _distributed_table(conn)
        ports = set(shard_ports(conn, "items").values())
        assert ports == {w.port for w in citus_cluster.workers}
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (160,)


def test_a_query_by_distribution_value_is_sent_to_one_worker(
    citus_cluster: CitusCluster, citus_db: str
) -> None:
    with psycopg.connect(citus_db, autocommit=True) as conn:
        _distributed_table(conn)
        rows, sent = remote_commands(conn, "SELECT count(*) FROM items WHERE topic = 'topic-3'")
        assert rows == [(10,)]
        assert len({port for port, _ in sent}) == 1, sent
        assert citus_cluster.worker_of_port(sent[0][0]) is not None
        _, everywhere = remote_commands(conn, "SELECT count(*) FROM items")
        assert {port for port, _ in everywhere} == {w.port for w in citus_cluster.workers}


def test_a_restarted_worker_serves_its_shards_again(
    citus_cluster: CitusCluster, citus_db: str
) -> None:
    with psycopg.connect(citus_db, autocommit=True) as conn:
        _distributed_table(conn)
    citus_cluster.restart_worker(0)
    # A new session: the coordinator's connections to the old worker process died with it.
    with psycopg.connect(citus_db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (160,)
        conn.execute("INSERT INTO items SELECT 'topic-' || g, -g FROM generate_series(1, 16) AS g")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (176,)


def test_a_third_node_takes_shards_in_a_rebalance() -> None:
    # A cluster of its own: the session's keeps two workers for the other tests.
    with citus_or_skip() as own:
        dsn = own.create_database("rebalance")
        with psycopg.connect(dsn, autocommit=True) as conn:
            _distributed_table(conn, shards=6)
            third = own.add_worker()
            assert third.port not in shard_ports(conn, "items").values()
            conn.execute("SELECT citus_rebalance_start(shard_transfer_mode => 'block_writes')")
            conn.execute("SELECT citus_rebalance_wait()")
            placed = shard_ports(conn, "items").values()
            assert {w.port for w in own.workers} == set(placed)
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (160,)
