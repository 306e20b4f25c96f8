"""Failover for real: a primary and a synchronous streaming standby, promoted under load.

Clients name both servers in one multi-host DSN with ``target_session_attrs=read-write``, so
they always land on whichever accepts writes; ``synchronous_standby_names`` makes every
acknowledged commit reach the standby before the client hears of it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from cluster import Cluster, wait_until_streaming
from faults import (
    PICKUP_WITHIN,
    RESUME_WITHIN,
    Producers,
    done_entries,
    first_done_after,
    migrated_cluster,
    query,
    report,
    server_binaries,
    states,
    worker_options,
)
from processes import Journal, Spawner
from waiting import wait_for

import pushpop

pytestmark = pytest.mark.slow

# Messages pushed before the failover, and after it.
PUSHES = int(os.environ.get("PUSHPOP_FAULTS_BETWEEN", "150"))


def multi_host_dsn(*clusters: Cluster) -> str:
    """One DSN naming every server; libpq tries them in order and keeps the writable one."""
    hosts = ",".join("127.0.0.1" for _ in clusters)
    ports = ",".join(str(c.port) for c in clusters)
    return (f"host={hosts} port={ports} user=postgres dbname=postgres"
            " target_session_attrs=read-write connect_timeout=2")  # fmt: skip


def test_failover_to_a_synchronous_standby_keeps_every_acknowledged_push(tmp_path: Path) -> None:
    bindir = server_binaries()
    with migrated_cluster(bindir, "primary") as primary:
        standby = primary.standby("standby")
        spawn: Spawner | None = None
        try:
            standby.start()
            primary.set(synchronous_standby_names="'standby'")
            primary.reload()
            wait_until_streaming(primary, "standby")
            dsn = multi_host_dsn(primary, standby)
            journal = Journal(tmp_path / "journal.txt")
            spawn = Spawner(dsn, journal)
            worker = spawn.script("fault_worker.py", "orders,ping", **worker_options())
            wait_for(lambda: query(dsn, "SELECT count(*) FROM pushpop.workers()") == [(1,)],
                     timeout=20, what="the worker registered")  # fmt: skip

            with Producers(dsn, "orders") as producers:

                def more_pushes() -> None:
                    mark = len(producers.acked)
                    wait_for(lambda: len(producers.acked) >= mark + PUSHES, timeout=60,
                             what=f"{PUSHES} more pushes")  # fmt: skip

                more_pushes()
                before = len(producers.acked)
                started = time.time()
                standby.promote()
                primary.stop("immediate")
                failed_over = time.time()
                more_pushes()
            producers.stop()

            # Every acknowledged push is on the new primary, and the worker completes them all.
            acked = producers.acked
            assert all(isinstance(exc, pushpop.Error) for _, exc in producers.raised)
            new_primary = standby.dsn()
            assert states(new_primary, acked)["missing"] == 0
            wait_for(lambda: states(new_primary, acked)["completed"] == len(acked), timeout=60,
                     what="every acknowledged push completed on the new primary")  # fmt: skip
            resumed = first_done_after(journal, worker.popen.pid, failed_over)
            assert resumed is not None
            assert resumed - failed_over <= RESUME_WITHIN

            # The worker listens on the new primary: an idle one picks a push up at once.
            with pushpop.Client(dsn) as client:
                pushed = time.time()
                id = str(client.push("ping", b"ping"))
            done = wait_for(lambda: [d for d in done_entries(journal) if d.id == id], timeout=5,
                            what="the ping handled")[0]  # fmt: skip
            assert done.at - pushed < PICKUP_WITHIN
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, worker.output()
        finally:
            if spawn is not None:
                spawn.close()
            standby.remove()

    executions = [d.id for d in done_entries(journal) if d.id in set(acked)]
    report(
        "failover", pushes_acked_before=before, pushes_acked_after=len(acked) - before,
        pushes_raised=len(producers.raised), lost=0, duplicates=len(executions) - len(acked),
        failover_s=round(failed_over - started, 2), resumed_after_s=round(resumed - failed_over, 2),
        pickup_ms=round((done.at - pushed) * 1000, 1),
    )  # fmt: skip
