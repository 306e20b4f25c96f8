"""The SQL contract and maintenance tests again, on a queue distributed over the Citus cluster.

The same test functions as tests/test_sql_contract.py and tests/test_sql_maintenance.py, with
``dsn`` giving each one a database of
its own on the coordinator, distributed by pushpop.distribute() (a copy of a template made once
per module, so a test starts in a fraction of a second).
"""

from __future__ import annotations

import test_sql_contract
import test_sql_maintenance
from test_citus_clients import distributed_template, dsn  # noqa: F401 (fixtures)

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
