"""What the fault tests share: clusters, producer threads, worker journals and worker logs."""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import pytest
from cluster import Cluster, ClusterError, find_bindir, run_as, throwaway
from processes import Journal, Proc

import pushpop
from pushpop import migrations

# Leases of the fault tests' workers, and how often the elected one requeues lapsed ones: a
# delivery whose worker or reply was lost comes back within LEASE + REQUEUE seconds.
LEASE = 3.0
REQUEUE = 0.5
# Between two reconnection attempts, at most (the workers' documented cap).
BACKOFF_CAP = 5.0
# While callers wait, the pool tries to connect about every 2 s (psycopg_pool's first delays
# with its jitter, restarted every BACKOFF_CAP seconds), never backing off further.
POOL_RETRY_GAP = 3.0
# After the server is back, a worker idle through the outage resumes once its control
# connection retries (at most BACKOFF_CAP later) and wakes it.
RESUME_WITHIN = BACKOFF_CAP + 1
# An idle worker picks up a push this fast, once its LISTEN connection is back.
PICKUP_WITHIN = 1.0


def server_binaries() -> Path:
    """The PostgreSQL binaries for throwaway clusters; fails the test (never skips) without."""
    try:
        bindir = find_bindir()
        run_as()
    except ClusterError as exc:
        pytest.fail(f"fault tests cannot run: {exc}", pytrace=False)
    return bindir


@contextlib.contextmanager
def migrated_cluster(bindir: Path, name: str = "primary") -> Iterator[Cluster]:
    """A started throwaway cluster with pushpop migrated into its ``postgres`` database."""
    with throwaway(bindir, name) as cluster:
        migrations.migrate(cluster.dsn())
        yield cluster


def worker_options(**more: Any) -> dict[str, Any]:
    """Fault workers: short leases and requeues, slow polling (so only LISTEN wakes fast)."""
    return {"concurrency": 4, "lease": LEASE, "requeue_interval": REQUEUE,
            "poll_interval": 30, "heartbeat_interval": 1, **more}  # fmt: skip


def report(title: str, **figures: Any) -> None:
    """Prints a test's figures (shown with ``pytest -s``, and with a failure's output)."""
    print(f"\n[{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def query(dsn: str, sql: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Runs one statement on a connection of its own (so a test's checks share no pool)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def states(dsn: str, ids: Sequence[str]) -> Counter[str]:
    """How many of ``ids`` are in each state; ``missing`` counts those not stored at all."""
    rows = query(dsn, "SELECT state FROM pushpop.messages WHERE id = ANY(%s::uuid[])", [list(ids)])
    found = Counter(str(row[0]) for row in rows)
    found["missing"] = len(set(ids)) - len(rows)
    return found


class Producers:
    """Threads pushing one message at a time with one sync Client, until ``stop()``.

    Every push that returned is in ``acked``; every one that raised is in ``raised`` with its
    exception. Each push carries an id chosen beforehand, so a raised one can be looked up and
    retried.
    """

    def __init__(
        self, dsn: str, topic: str, threads: int = 4, pause: float = 0.02, timeout: float = 30
    ) -> None:
        self.topic, self.pause = topic, pause
        self.client = pushpop.Client(dsn, max_size=threads, timeout=timeout)
        self.acked: list[str] = []
        self.raised: list[tuple[str, BaseException]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._push, name=f"test-producer-{i}") for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _push(self) -> None:
        while not self._stop.is_set():
            id = str(uuid.uuid4())
            try:
                self.client.push(self.topic, b"fault test", id=id)
            except Exception as exc:  # recorded and judged by the test
                self.raised.append((id, exc))
            else:
                self.acked.append(id)
            self._stop.wait(self.pause)

    def stop(self) -> None:
        """Stops pushing, waits for the threads and closes the client. Safe to call twice."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.client.close()

    def __enter__(self) -> Producers:
        return self

    def __exit__(
        self,
        type: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Done:
    """One ``done ID TIME PID`` line of a fault worker's journal (procs/fault_worker.py)."""

    id: str
    at: float
    pid: int


def done_entries(journal: Journal) -> list[Done]:
    """Every handler execution noted so far, in the order written."""
    found = []
    for line in journal.path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "done":
            found.append(Done(parts[1], float(parts[2]), int(parts[3])))
    return found


def first_done_after(journal: Journal, pid: int, since: float) -> float | None:
    """When process ``pid`` first finished a message after ``since``, if it did."""
    times = [d.at for d in done_entries(journal) if d.pid == pid and d.at > since]
    return min(times) if times else None


_LOG_LINE = re.compile(r"^(\d+\.\d+) (\w+) ([\w.]+): (.*)$")


def log_lines(proc: Proc, logger: str, starts: str) -> list[tuple[float, str]]:
    """(time, message) of a fault worker's log lines from ``logger`` starting with ``starts``."""
    found = []
    for line in list(proc.lines):
        match = _LOG_LINE.match(line)
        if match and match[3] == logger and match[4].startswith(starts):
            found.append((float(match[1]), match[4]))
    return found


def next_tries(proc: Proc) -> list[float]:
    """The pauses the worker's control connection announced before each reconnection try."""
    lines = log_lines(proc, "pushpop.worker", "control connection lost; next try in")
    return [float(re.findall(r"next try in ([\d.]+) s", text)[0]) for _, text in lines]


def gaps(times: Sequence[float]) -> list[float]:
    """Seconds between consecutive times."""
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]
