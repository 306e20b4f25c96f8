"""``pushpop migrate --distributed``: the migration and pushpop.distribute() in one transaction.

On the session's Citus cluster it installs pushpop already sharded, or shards an installed one,
and says which; on a single server without Citus it refuses with the database's reason and
leaves nothing of the migration behind.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from citus import CitusCluster

import pushpop
from pushpop import MigrationError, cli, migrations

_databases = itertools.count()

Conn = psycopg.Connection[tuple[Any, ...]]

EVERY_FILE = [
    *(f"applied {migrations.relative(m.path)}" for m in migrations.available()),
    *(f"applied {migrations.relative(path)}" for path in migrations.function_files()),
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs the command in-process; returns (exit status, stdout, stderr)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def sharding(conninfo: str) -> list[tuple[Any, ...]]:
    """Citus's tables of the database: (name, type, distribution column, shard count)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(
            "SELECT table_name::text, citus_table_type, distribution_column, shard_count"
            " FROM citus_tables WHERE table_name::text LIKE 'pushpop.%' ORDER BY 1"
        ).fetchall()


@pytest.fixture
def citus_empty(citus_cluster: CitusCluster) -> Iterator[str]:
    """A database on the Citus coordinator (Citus created, workers registered), no pushpop."""
    dbname = f"citus_migrate_{next(_databases)}"
    yield citus_cluster.create_database(dbname)
    citus_cluster.drop_database(dbname)


def test_migrate_distributed_installs_pushpop_sharded_then_finds_nothing_to_do(
    capsys: pytest.CaptureFixture[str], citus_empty: str
) -> None:
    status, out, err = run(capsys, "migrate", "--distributed", "--shard-count", "4", "--dsn",
                           citus_empty)  # fmt: skip
    assert (status, err) == (0, "")
    assert out.splitlines() == [*EVERY_FILE, "distributed"]
    assert sharding(citus_empty) == [("pushpop.messages", "distributed", "route", 4)]
    status, out, _ = run(capsys, "migrate", "--distributed", "--dsn", citus_empty)
    assert (status, out) == (0, "up to date\ndistributed already\n")
    assert sharding(citus_empty) == [("pushpop.messages", "distributed", "route", 4)]
    with pushpop.Client(citus_empty) as client:
        id = client.push("orders", b"x")
        message = client.pop("orders")
        assert message is not None
        assert message.id == id
        message.complete()


def test_migrate_distributed_shards_an_installed_queue_and_keeps_its_messages(
    capsys: pytest.CaptureFixture[str], citus_empty: str
) -> None:
    migrations.migrate(citus_empty)
    with pushpop.Client(citus_empty) as client:
        ids = client.push_many("orders", [b"a", b"b"])
        assert run(capsys, "migrate", "--distributed", "--dsn", citus_empty) == (
            0, "up to date\ndistributed\n", "",
        )  # fmt: skip
        assert sharding(citus_empty) == [("pushpop.messages", "distributed", "route", 32)]
        assert [m.id for m in client.pop_many("orders", 10)] == ids


def test_the_clients_migrate_distributed_too(citus_empty: str) -> None:
    with pushpop.Client(citus_empty) as client:
        assert client.migrate(distributed=True, shard_count=2)[:1] == [
            "migrations/0001_baseline.sql"
        ]
        assert client.migrate(distributed=True) == []
    assert migrations.migrate_distributed(citus_empty) == migrations.Outcome([], False)
    assert sharding(citus_empty) == [("pushpop.messages", "distributed", "route", 2)]


def test_migrate_distributed_without_citus_says_why_and_applies_nothing(
    capsys: pytest.CaptureFixture[str], empty_dsn: str
) -> None:
    status, out, err = run(capsys, "migrate", "--distributed", "--dsn", empty_dsn)
    assert (status, out) == (1, "")
    assert err.startswith(
        "pushpop: error: migration failed: distribute() needs the Citus extension"
    )
    assert "CREATE EXTENSION citus" in err  # the database's hint: what to do
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pushpop')").fetchone() == (None,)


def test_migrate_distributed_on_an_installed_single_server_changes_nothing(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pushpop.push('orders', 'kept')")
        conn.execute("DELETE FROM pushpop.schema_functions")  # the function files are due again
        with pytest.raises(MigrationError, match=r"needs the Citus extension, which database"):
            migrations.migrate(dsn, distributed=True)
        assert conn.execute("SELECT count(*) FROM pushpop.schema_functions").fetchone() == (0,)
        assert conn.execute("SELECT pushpop.distributed()").fetchone() == (False,)
        assert conn.execute("SELECT count(*) FROM pushpop.messages").fetchone() == (1,)
    assert migrations.migrate(dsn) != []  # the files the refused migration had rolled back
