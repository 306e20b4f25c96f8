"""Soak: a backlog drained by worker processes, one of them SIGKILLed every few seconds.

The same backlog is drained once without kills, for the throughput to compare with. Messages
lost must be none; a message runs twice only when a kill caught it between its handler and its
``complete``, so duplicates stay within kills x concurrency.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster import Cluster, throwaway
from faults import LEASE, REQUEUE, done_entries, query, report, server_binaries
from processes import Journal, Proc, Spawner
from psycopg import sql

import pushpop
from pushpop import migrations
from pushpop.worker_common import POP_AHEAD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MESSAGES = int(os.environ.get("PUSHPOP_SOAK_MESSAGES", "50000"))
WORKERS = 4
CONCURRENCY = 16
KILL_EVERY = 1.5  # seconds between two SIGKILLs
PUSH_BATCH = 5000


@dataclass
class Drained:
    """How one drain went."""

    messages: int
    seconds: float
    kills: int
    executions: Counter[str]
    completed: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def duplicates(self) -> int:
        return sum(self.executions.values()) - len(self.executions)


@pytest.fixture(scope="module")
def soak_cluster() -> Iterator[Cluster]:
    with throwaway(server_binaries(), "soak") as cluster:
        yield cluster


def drain(cluster: Cluster, name: str, journal: Journal, kill_every: float | None) -> Drained:
    """Pushes MESSAGES into a fresh database, then times WORKERS processes draining them."""
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = cluster.dsn(name)
    migrations.migrate(dsn)
    ids: list[str] = []
    with pushpop.Client(dsn) as client:
        for start in range(0, MESSAGES, PUSH_BATCH):
            batch = min(PUSH_BATCH, MESSAGES - start)
            ids += [str(id) for id in client.push_many("soak", [b"{}"] * batch)]

    spawn = Spawner(dsn, journal)
    spawn.env["PUSHPOP_TEST_LOG_LEVEL"] = "WARNING"  # no line per message

    def start_worker() -> Proc:
        return spawn.script(
            "fault_worker.py", "soak", concurrency=CONCURRENCY, lease=LEASE,
            requeue_interval=REQUEUE, poll_interval=1,
        )  # fmt: skip

    kills = 0
    try:
        started = time.monotonic()
        workers = [start_worker() for _ in range(WORKERS)]
        next_kill = started + (kill_every or float("inf"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            while completed(conn) < MESSAGES:
                if time.monotonic() >= next_kill:
                    victim = kills % WORKERS
                    workers[victim].signal(signal.SIGKILL)
                    workers[victim].wait(timeout=10)
                    workers[victim] = start_worker()
                    kills += 1
                    next_kill += kill_every or float("inf")
                time.sleep(0.1)  # polls the count above
        seconds = time.monotonic() - started
    finally:
        spawn.close()  # kills the workers: graceful shutdown is not what this measures
    executions = Counter(d.id for d in done_entries(journal))
    done = query(dsn, "SELECT count(*) FROM pushpop.messages WHERE state = 'completed'")[0][0]
    assert set(executions) == set(ids), "a message never ran"
    return Drained(MESSAGES, seconds, kills, executions, int(done))


def completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pushpop.messages WHERE state = 'completed'").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def calm(soak_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Drained:
    """The backlog drained without faults: the throughput the soak is compared with."""
    journal = Journal(tmp_path_factory.mktemp("calm") / "journal.txt")
    return drain(soak_cluster, "soak_calm", journal, kill_every=None)


def test_a_backlog_drained_without_faults_runs_every_message_exactly_once(calm: Drained) -> None:
    assert calm.completed == calm.messages
    assert calm.duplicates == 0
    report("soak without kills", messages=calm.messages, workers=WORKERS,
           concurrency=CONCURRENCY, seconds=round(calm.seconds, 1),
           per_second=round(calm.rate))  # fmt: skip


def test_sigkilling_a_worker_every_few_seconds_loses_nothing_and_repeats_only_in_flight_work(
    soak_cluster: Cluster, calm: Drained, tmp_path: Path
) -> None:
    run = drain(soak_cluster, "soak_kills", Journal(tmp_path / "journal.txt"), KILL_EVERY)
    assert run.kills >= 1
    assert run.completed == run.messages  # none lost
    # Only what a kill caught in flight: at most the messages a worker holds, one per handler
    # and those popped ahead for fast handlers.
    assert run.duplicates <= run.kills * (CONCURRENCY + POP_AHEAD)
    report(
        "soak with SIGKILLs", messages=run.messages, workers=WORKERS, concurrency=CONCURRENCY,
        kill_every_s=KILL_EVERY, kills=run.kills, lost=0, duplicates=run.duplicates,
        seconds=round(run.seconds, 1), per_second=round(run.rate),
        throughput_vs_calm=f"{run.rate / calm.rate:.0%}",
    )  # fmt: skip
