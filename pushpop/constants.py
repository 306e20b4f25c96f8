"""Numbers and names pushpop spells once: the SQL functions' defaults, roles, lock ids, knobs.

The SQL is the source of the defaults it declares (``tests/test_constants.py`` holds these
against the database); the rest are the clients' and workers' own choices.
"""

from __future__ import annotations

from datetime import timedelta

# -- what the SQL functions declare (sql/functions/) ----------------------------------------

PRIORITY = 0
"""``pushpop.push(priority)``: higher pops first."""
MAX_ATTEMPTS = 25
"""``pushpop.push(max_attempts)``: deliveries before a message is discarded."""
LEASE = timedelta(minutes=5)
"""``pushpop.pop(lease_for)`` and ``pushpop.extend(lease_for)``."""
CLEANUP_GRACE = timedelta(days=1)
"""``pushpop.cleanup(grace)``: finished messages are kept this long."""
STALE_AFTER = timedelta(minutes=1)
"""``pushpop.workers(stale_after)``: a worker silent this long is dead."""
LEAD_LEASE = timedelta(seconds=1)
"""``pushpop.lead_maintenance(lease_for)``: the maintenance leader renews its lead within this.
Short, so that schedules tick on within 2 s of a leader's death: workers ask every third of it."""

# The pushpop role that grants a call (sql/functions/90_security.sql); ADMIN may make them all.
PRODUCER = "pushpop_producer"
CONSUMER = "pushpop_consumer"
MAINTAINER = "pushpop_maintainer"
ADMIN = "pushpop_admin"

# -- clients --------------------------------------------------------------------------------

MIN_SIZE = 1
MAX_SIZE = 10
POOL_TIMEOUT = 30.0
"""Seconds a call waits for a pooled connection before it raises Unavailable."""
RECONNECT_CAP = 5.0
"""Seconds between reconnection attempts to a database that went away, at most."""
CLEANUP_BATCH = 10_000
"""Finished messages ``cleanup`` deletes per transaction."""

# -- workers --------------------------------------------------------------------------------

CONCURRENCY = 4
POLL_INTERVAL = 1.0
SHUTDOWN_TIMEOUT = 30.0
REQUEUE_INTERVAL = 5.0
CLEANUP_INTERVAL = 60.0
HEARTBEAT_INTERVAL = 10.0
SCHEDULE_INTERVAL = 0.25
"""Seconds between the maintenance leader's calls of ``pushpop.run_schedules``."""
RETRY_BASE = 1.0
RETRY_CAP = 3600.0
RETRY_JITTER = 0.25
COMPLETE_BATCH = 500
"""Completions sent in one ``pushpop.complete_many``, at most."""
SETTLE = 0.1
"""After asking for a wake-up (``pushpop.wait_for_push``) the popper waits this long, or until
woken, before its last pop: a push that checked for waiting consumers just before the request
committed is popped then, instead of a poll interval later."""
