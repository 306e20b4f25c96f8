"""The SQL contract and maintenance tests again, on a queue distributed over the Citus cluster.

The same test functions as tests/test_sql_contract.py and tests/test_sql_maintenance.py, with
``dsn`` giving each one a database of
its own on the coordinator, distributed by pushpop.distribute() (a copy of a template made once
per module, so a test starts in a fraction of a second).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
import test_sql_contract
import test_sql_maintenance
from citus import CitusCluster

from pushpop import migrations

_databases = itertools.count()

# What a distributed installation does differently, on purpose, or what a test reads that
# only one server has.
DIFFERENT = {
    # An id is unique per topic: the unique index includes the route (docs/scaling.md).
    "test_push_with_an_id_taken_in_another_topic_is_refused_and_inserts_nothing",
    # Reads the table's own statistics; on Citus the rows live in the shards.
    "test_extending_a_lease_is_a_hot_update",
    # Inserts rows with plain SQL, without the route a distributed table needs.
    "test_pop_keeps_priority_order_however_many_scheduled_messages_fall_due_at_once",
}

# Every other test of the contract, collected here a second time.
# The fixtures of those modules that their tests use.
listener = test_sql_maintenance.listener

for module in (test_sql_contract, test_sql_maintenance):
    globals().update(
        {
            name: test
            for name, test in vars(module).items()
            if name.startswith("test_") and name not in DIFFERENT
        }
    )


@pytest.fixture(scope="module")
def distributed_template(citus_cluster: CitusCluster) -> Iterator[str]:
    """A database with pushpop migrated and distributed, frozen as a template on every node."""
    dbname = "citus_contract_template"
    dsn = citus_cluster.create_database(dbname)
    migrations.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pushpop.distribute(shard_count => 8)")
    citus_cluster.freeze_as_template(dbname)
    yield dbname
    citus_cluster.drop_database(dbname)


@pytest.fixture
def dsn(citus_cluster: CitusCluster, distributed_template: str) -> Iterator[str]:
    """This test's own distributed database on the coordinator (overrides conftest's ``dsn``)."""
    dbname = f"citus_contract_{next(_databases)}"
    yield citus_cluster.clone_database(distributed_template, dbname)
    citus_cluster.drop_database(dbname)
