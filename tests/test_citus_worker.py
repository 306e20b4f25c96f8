"""The worker tests again, on a queue distributed over the Citus cluster.

The same test functions as tests/test_worker.py, each with a distributed database of its own on
the coordinator (tests/test_citus_clients.py's fixtures): the workers connect to the coordinator
only, and their pops, acknowledgements, heartbeats, wake-ups and maintenance go through it.
"""

from __future__ import annotations

import test_worker
from test_citus_clients import collect, distributed_template, dsn

# What a distributed installation does differently, on purpose, or what a test reads that only
# one server has; one line each.
DIFFERENT = {
    # Its pg_terminate_backend(%s) is ambiguous where Citus adds a bigint one for global pids.
    "test_the_worker_reconnects_its_listener_after_the_connection_is_killed",
}

# The fixtures of test_worker.py that its tests use, and this module's distributed database.
sync_client, start = test_worker.sync_client, test_worker.start
__all__ = ["distributed_template", "dsn", "start", "sync_client"]

globals().update(collect(test_worker, different=DIFFERENT))
