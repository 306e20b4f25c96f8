"""Many threads pushing, popping and completing at once: every message delivered exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from uuid import UUID

import pytest

import pushpop

THREADS = 10
PER_THREAD = 1_000


@pytest.fixture
def shared_client(dsn: str) -> Iterator[pushpop.Client]:
    """One sync client shared by every thread, with a connection per thread."""
    with pushpop.Client(dsn, max_size=THREADS) as shared:
        yield shared


def run_threads(target: Callable[[int], None], count: int) -> None:
    """Runs ``target(i)`` in ``count`` threads started together; re-raises the first failure."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            target(i)
        except BaseException as exc:  # re-raised in the test's thread below
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(i,), name=f"queue-user-{i}") for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not [t.name for t in threads if t.is_alive()], "threads did not finish"
    if failures:
        raise failures[0]


def test_concurrent_producers_and_consumers_complete_every_message_once(
    shared_client: pushpop.Client,
) -> None:
    pushed: list[list[UUID]] = [[] for _ in range(THREADS)]
    completed: list[list[UUID]] = [[] for _ in range(THREADS)]
    deadline = time.monotonic() + 60

    def work(i: int) -> None:
        for n in range(PER_THREAD):
            pushed[i].append(shared_client.push("load", f"{i}:{n}".encode()))
        while len(completed[i]) < PER_THREAD:
            assert time.monotonic() < deadline, f"thread {i} completed only {len(completed[i])}"
            batch = shared_client.pop_many("load", min(50, PER_THREAD - len(completed[i])))
            for message in batch:
                message.complete()
                completed[i].append(message.id)

    run_threads(work, THREADS)
    all_pushed = [id for ids in pushed for id in ids]
    all_completed = [id for ids in completed for id in ids]
    assert len(set(all_pushed)) == THREADS * PER_THREAD
    assert len(all_completed) == len(set(all_completed)) == THREADS * PER_THREAD
    assert set(all_completed) == set(all_pushed)
    (stats,) = shared_client.stats()
    assert (stats.ready, stats.scheduled, stats.pending) == (0, 0, 0)
    assert stats.completed == THREADS * PER_THREAD


def test_concurrent_pops_never_return_the_same_message(shared_client: pushpop.Client) -> None:
    ids = shared_client.push_many("race", [b"x"] * 2_000)
    taken: list[list[UUID]] = [[] for _ in range(8)]

    def drain(i: int) -> None:
        while batch := shared_client.pop_many("race", 1 + i % 3):
            taken[i].extend(message.id for message in batch)

    run_threads(drain, 8)
    all_taken = [id for ids in taken for id in ids]
    assert len(all_taken) == len(set(all_taken)) == len(ids)
    assert set(all_taken) == set(ids)
    assert sum(1 for ids in taken if ids) > 1  # the pops really did interleave
