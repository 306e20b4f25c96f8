"""Faults on a distributed queue with pushpop's own workers: ``pushpop worker`` processes consume
while producer threads push, and a Citus worker node restarts, or a third node joins and the
shards move to it. Every acknowledged push must be handled at least once, the worker processes
must go on without being restarted, and a message may be handled twice only if it was in flight
when the fault struck.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from citus import ONLINE_MOVES, CitusCluster, citus_or_skip, shard_ports
from faults import Producers, done_entries, query, report
from processes import Journal, Proc, Spawner
from waiting import wait_for

import pushpop
from pushpop import migrations

pytestmark = pytest.mark.slow

TOPICS = [f"topic-{n}" for n in range(16)]
PROCESSES = 2
CONCURRENCY = 4
# A delivery whose acknowledgement was lost comes back after its lease and the next requeue
# (every 5 s, the workers' default). Two processes with 4 handlers each.
LEASE = "3s"
# Pushes acknowledged and handled between two steps of a test.
STEP = 60
_databases = itertools.count()
# A worker's log line for a message handled but not acknowledged (pushpop.retry's words).
FAILED_ACK = re.compile(r"message (?P<id>\S+) topic=\S+ attempt=\d+ took [\d.]+ ms: "
                        r"(lease lost before|could not )")  # fmt: skip


@contextlib.contextmanager
def distributed_queue(cluster: CitusCluster, shard_count: int) -> Iterator[str]:
    """A database on the cluster with pushpop migrated and distributed; dropped afterwards."""
    dbname = f"citus_faults_{next(_databases)}"
    dsn = cluster.create_database(dbname)
    try:
        migrations.migrate(dsn)
        query(dsn, "SELECT pushpop.distribute(shard_count => %s)", [shard_count])
        yield dsn
    finally:
        cluster.drop_database(dbname)


def node_of(dsn: str, topic: str) -> int:
    """The port of the worker node holding the topic's shard."""
    rows = query(
        dsn,
        "SELECT nodeport FROM citus_shards WHERE shardid ="
        " get_shard_id_for_distribution_column('pushpop.messages', pushpop.route_of(%s))",
        [topic],
    )
    return int(rows[0][0])


@dataclass
class Load:
    """Producer threads (one per topic) and ``pushpop worker`` processes on the same topics."""

    dsn: str
    topics: list[str]
    journal: Journal
    producers: list[Producers]
    workers: list[Proc]

    @property
    def acked(self) -> list[str]:
        return [id for p in self.producers for id in p.acked]

    @property
    def raised(self) -> list[str]:
        return [id for p in self.producers for id, _ in p.raised]

    def handled(self) -> Counter[str]:
        """How often each message id was handled so far."""
        return Counter(d.id for d in done_entries(self.journal))

    def progress(self, what: str) -> None:
        """Waits for STEP more pushes acknowledged, and for all of them to be handled."""
        mark = len(self.acked)
        wait_for(lambda: len(self.acked) >= mark + STEP, timeout=20, what=f"pushes {what}")
        wanted = set(self.acked)
        try:
            wait_for(lambda: wanted <= set(self.handled()), timeout=20, what=f"handling {what}")
        except pytest.fail.Exception:
            missing = sorted(wanted - set(self.handled()))
            rows = query(
                self.dsn,
                "SELECT id, topic, state, attempts, lease_until, now() FROM pushpop.messages"
                " WHERE id = ANY (%s::uuid[])",
                [missing],
            )
            tails = [w.lines[-20:] for w in self.workers]
            pytest.fail(f"not handled {what}: {len(missing)} of them, stored as {rows}; {tails}")

    def handled_since(self, since: float, topics: list[str] | None = None) -> dict[int, int]:
        """Per worker process, the messages (of ``topics``, else any) it handled after
        ``since`` (wall clock)."""
        ids = {id for p in self.producers if p.topic in (topics or self.topics) for id in p.acked}
        pids = {w.popen.pid: 0 for w in self.workers}
        for done in done_entries(self.journal):
            if done.at > since and done.pid in pids and done.id in ids:
                pids[done.pid] += 1
        return pids

    def resumed(self, since: float, topics: list[str], what: str) -> dict[int, int]:
        """Waits until every worker process has handled messages of ``topics`` after
        ``since``; how many each."""
        return dict(
            wait_for(
                lambda: all((n := self.handled_since(since, topics)).values()) and n,
                timeout=30,
                what=f"every worker process handling messages {what}",
            )
        )


@contextlib.contextmanager
def load(dsn: str, topics: list[str], tmp_path: Path) -> Iterator[Load]:
    """Starts the worker processes, waits until both are registered, then starts pushing."""
    journal = Journal(tmp_path / "journal.txt")
    spawn = Spawner(dsn, journal)
    producers: list[Producers] = []
    try:
        options = [f"--topic={t}" for t in topics[1:]]
        options += [f"--concurrency={CONCURRENCY}", f"--lease={LEASE}"]
        workers = [spawn.cli("fault_worker:handle", topics[0], *options) for _ in range(PROCESSES)]

        def registered() -> bool:
            exited = [w.output() for w in workers if w.popen.poll() is not None]
            assert not exited, exited
            return bool(query(dsn, "SELECT count(*) FROM pushpop.workers()")[0][0] == PROCESSES)

        wait_for(registered, timeout=20, what="both worker processes registered")
        producers = [Producers(dsn, t, threads=1, timeout=10) for t in topics]
        yield Load(dsn, topics, journal, producers, workers)
    finally:
        for p in producers:
            p.stop()
        for w in spawn.procs:
            if w.popen.poll() is None:
                w.signal(signal.SIGTERM)
        spawn.close()


def settle(run: Load, fault_at: float, title: str, **figures: object) -> None:
    """Stops pushing, then checks at-least-once, bounded duplicates and the workers' state."""
    for p in run.producers:
        p.stop()
    acked, raised = run.acked, run.raised
    assert all(isinstance(exc, pushpop.Error) for p in run.producers for _, exc in p.raised)
    # Every acknowledged push is handled at least once; a push that raised may have been
    # stored all the same, and then it is handled too: nothing stored stays behind.
    wait_for(lambda: set(acked) <= set(run.handled()), timeout=30, what="every acked push handled")
    wait_for(
        lambda: query(run.dsn, "SELECT count(*) FROM pushpop.messages"
                               " WHERE state <> 'completed'")[0][0] == 0,
        timeout=30,
        what="every stored message completed",
    )  # fmt: skip
    stored = {str(r[0]) for r in query(run.dsn, "SELECT id FROM pushpop.messages")}
    assert set(acked) <= stored
    handled = run.handled()
    assert set(handled) == stored, "handled a message that is not stored, or missed one"
    twice = {id: n for id, n in handled.items() if n > 1}
    # The same processes, never restarted, all handled messages after the fault.
    assert all(w.popen.poll() is None for w in run.workers), [w.output() for w in run.workers]
    after = run.handled_since(fault_at)
    assert all(n > 0 for n in after.values()), after
    for w in run.workers:
        w.signal(signal.SIGTERM)
    for w in run.workers:
        assert w.wait(timeout=30) == 0, w.output()
    # Only a delivery in flight at the fault is handled again: one whose acknowledgement the
    # database did not take, which the worker logs (lease lost, or could not complete).
    unacknowledged = {m["id"] for w in run.workers for m in map(FAILED_ACK.search, w.lines) if m}
    assert set(twice) <= unacknowledged, (twice, unacknowledged)
    report(
        title, **figures, acked=len(acked), raised=len(raised),
        raised_but_stored=len(set(raised) & stored), handled=sum(handled.values()),
        handled_twice=len(twice), acks_refused=len(unacknowledged),
        handled_after_fault_per_process=list(after.values()), lost=0,
    )  # fmt: skip


def test_a_worker_node_restarted_under_load_loses_no_acked_push_and_workers_resume(
    citus_cluster: CitusCluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    with distributed_queue(citus_cluster, shard_count=8) as dsn:
        restarted = citus_cluster.workers[0].port
        topics = [t for t in TOPICS if node_of(dsn, t) == restarted][:2]
        topics += [t for t in TOPICS if node_of(dsn, t) != restarted][:2]
        assert len(topics) == 4
        with load(dsn, topics, tmp_path) as run:
            run.progress("before the restart")
            fault_at = time.time()
            citus_cluster.restart_worker(0)
            back = time.time()
            run.progress("after the restart")
            # The processes that saw the node go away take its topics' messages again.
            resumed = run.resumed(back, topics[:2], "of the restarted node after it came back")
            settle(
                run, fault_at, "citus worker node restart, pushpop worker processes",
                down_s=round(back - fault_at, 2), seconds=round(time.monotonic() - started, 1),
                restarted_node_handled_after_per_process=list(resumed.values()),
            )  # fmt: skip


def test_a_third_node_and_a_rebalance_under_load_lose_nothing_and_workers_go_on(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    # A cluster of its own: the session's keeps two workers for the other tests. Its nodes
    # commit synchronously, which an online move needs (citus.ONLINE_MOVES says why).
    with (
        citus_or_skip(settings=ONLINE_MOVES) as own,
        distributed_queue(own, shard_count=6) as dsn,
        load(dsn, TOPICS[:8], tmp_path) as run,
    ):
        run.progress("before the rebalance")
        fault_at = time.time()
        third = own.add_worker()
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Online: shards are copied and caught up by logical replication while pushes and
            # acknowledgements go on; writes wait only for the final catch-up of each move.
            # 'auto', the default, picks this for a table with a primary key; forced here so
            # that a fallback to block_writes cannot hide a loss.
            conn.execute("SELECT citus_rebalance_start(shard_transfer_mode => 'force_logical')")
            conn.execute("SELECT citus_rebalance_wait()")
            moved = sum(1 for port in shard_ports(conn, "pushpop.messages").values()
                        if port == third.port)  # fmt: skip
        assert moved > 0
        run.progress("after the rebalance")
        # Every process goes on taking messages, wherever their shards are now.
        run.resumed(time.time(), run.topics, "after the rebalance")
        settle(
            run, fault_at, "citus rebalance onto a third node, pushpop worker processes",
            shards_moved=moved, seconds=round(time.monotonic() - started, 1),
        )  # fmt: skip
