"""Worker processes under real signals: drained on SIGTERM/SIGINT, nothing lost on SIGKILL."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Journal, Spawner
from waiting import wait_for

import pushpop
from pushpop.worker_common import RELEASED

pytestmark = pytest.mark.slow


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.txt")


@pytest.fixture
def spawn(dsn: str, journal: Journal) -> Iterator[Spawner]:
    spawner = Spawner(dsn, journal)
    yield spawner
    spawner.close()


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn) as c:
        yield c


def push_jobs(client: pushpop.Client, n: int, sleep: float) -> list[str]:
    return [str(client.push("jobs", json={"sleep": sleep})) for _ in range(n)]


def states(client: pushpop.Client, ids: list[str]) -> Counter[str]:
    return Counter(m.state for i in ids if (m := client.find(i)) and m.state)


def test_sigterm_lets_handlers_finish_completes_them_and_exits_0(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal
) -> None:
    ids = push_jobs(sync_client, 10, sleep=0.5)
    proc = spawn.script("worker_script.py", "jobs", concurrency=2, shutdown_timeout=20)
    wait_for(lambda: len(journal.entries("start")) >= 2, what="two handlers running")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.output()
    outcome = states(sync_client, ids)
    assert outcome["pending"] == 0
    assert outcome["completed"] + outcome["ready"] == 10
    started = set(journal.entries("start"))
    assert started == set(journal.entries("done")), "a started handler was cut short"
    assert all(sync_client.find(i).state == "completed" for i in started)  # type: ignore[union-attr]


def test_sigint_under_the_cli_drains_and_exits_0(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal
) -> None:
    ids = push_jobs(sync_client, 6, sleep=0.3)
    proc = spawn.cli("handlers:record", "jobs", "--concurrency", "2", "--shutdown-timeout", "20s")
    wait_for(lambda: len(journal.entries("start")) >= 2, what="two handlers running")
    proc.signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, proc.output()
    outcome = states(sync_client, ids)
    assert outcome["pending"] == 0
    assert outcome["completed"] + outcome["ready"] == 6
    assert "Traceback" not in proc.output()


def test_sigterm_releases_a_message_whose_handler_outlives_the_shutdown_timeout(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal
) -> None:
    (id,) = push_jobs(sync_client, 1, sleep=60)
    proc = spawn.script("worker_script.py", "jobs", shutdown_timeout=0.5)
    wait_for(lambda: journal.entries("start"), what="the handler to start")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, proc.output()
    assert time.monotonic() - started < 5
    msg = sync_client.find(id)
    assert msg is not None
    assert (msg.state, msg.error) == ("ready", RELEASED)


def test_a_second_signal_exits_at_once_and_the_lease_expires_later(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal
) -> None:
    (id,) = push_jobs(sync_client, 1, sleep=60)
    proc = spawn.script("worker_script.py", "jobs", shutdown_timeout=60, lease=1)
    wait_for(lambda: journal.entries("start"), what="the handler to start")
    proc.signal(signal.SIGTERM)
    wait_for(lambda: proc.said("signal again to exit now"), what="the drain to begin")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 128 + signal.SIGTERM
    assert sync_client.find(id).state == "pending"  # type: ignore[union-attr]
    wait_for(lambda: sync_client.requeue_expired(), what="the lease to expire")
    assert sync_client.find(id).state == "ready"  # type: ignore[union-attr]


def test_sigkill_mid_handler_loses_nothing_and_repeats_only_what_was_in_flight(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal
) -> None:
    ids = push_jobs(sync_client, 30, sleep=0.1)
    victim = spawn.script("worker_script.py", "jobs", concurrency=3, lease=1)
    wait_for(lambda: len(journal.entries("done")) >= 6, what="some work done")
    victim.signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    in_flight_at_kill = states(sync_client, ids)["pending"]
    assert in_flight_at_kill <= 3

    survivor = spawn.script("worker_script.py", "jobs", concurrency=3, requeue_interval=0.2)
    wait_for(
        lambda: states(sync_client, ids)["completed"] == 30, timeout=30, what="all 30 completed"
    )
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(timeout=20) == 0, survivor.output()

    done = journal.entries("done")
    assert set(done) == set(ids), "a message was never handled"
    repeated = [i for i, count in done.items() if count > 1]
    assert len(repeated) <= in_flight_at_kill, (repeated, in_flight_at_kill)
