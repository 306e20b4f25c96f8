"""The asyncio worker: outcomes, wake-ups, cancellation and signals."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import Journal, Spawner
from waiting import wait_for
from wakeups import has_asked_for_a_wake_up, spend_the_wake_up_request

import pushpop
from pushpop.worker_common import RELEASED


async def until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Awaits until ``await condition()`` is truthy; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def state_of(client: pushpop.AsyncClient, id: Any) -> str | None:
    msg = await client.find(id)
    return msg.state if msg else None


def test_an_async_worker_completes_retries_and_discards(dsn: str) -> None:
    async def scenario() -> None:
        async with pushpop.AsyncClient(dsn) as client:
            good = [await client.push("jobs", b"ok") for _ in range(10)]
            bad = await client.push("jobs", b"bad", max_attempts=3)

            async def handler(msg: pushpop.AsyncMessage) -> None:
                await asyncio.sleep(0.01)
                if msg.payload == b"bad":
                    raise RuntimeError(f"bad attempt {msg.attempts}")

            retry = pushpop.Retry(base=0.05, cap=1, jitter=0)
            worker = pushpop.AsyncWorker(client, "jobs", handler, concurrency=4, retry=retry)
            task = asyncio.create_task(worker.run())

            async def all_done() -> bool:
                states = [await state_of(client, i) for i in good]
                return states == ["completed"] * 10 and await state_of(client, bad) == "discarded"

            await until(all_done, what="every message finished")
            worker.stop()
            await task
            msg = await client.find(bad)
            assert msg is not None
            assert msg.attempts == 3
            assert msg.error is not None
            assert msg.error.startswith("RuntimeError: bad attempt 3")

    asyncio.run(scenario())


def test_an_idle_async_worker_picks_up_a_push_within_milliseconds(dsn: str) -> None:
    async def scenario() -> list[float]:
        async with pushpop.AsyncClient(dsn) as client:
            picked: dict[Any, float] = {}

            async def handler(msg: pushpop.AsyncMessage) -> None:
                picked[msg.id] = time.monotonic()

            worker = pushpop.AsyncWorker(client, "jobs", handler, poll_interval=10)
            task = asyncio.create_task(worker.run())

            async def registered() -> bool:
                return bool(await client.workers())

            await until(registered, what="registration")
            latencies = []
            for i in range(20):
                pushed = time.monotonic()
                id = await client.push("jobs", str(i).encode())

                async def arrived(id: Any = id) -> bool:
                    return id in picked

                await until(arrived, what="pickup")
                latencies.append(picked[id] - pushed)
            worker.stop()
            await task
            return latencies

    latencies = asyncio.run(scenario())
    assert statistics.median(latencies) < 0.5, latencies  # far below the 10 s poll interval


def test_a_wake_up_request_spent_while_the_async_worker_settles_is_made_again(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The short wait after asking for a wake-up, stretched so the test acts within it.
    monkeypatch.setattr(pushpop.async_worker, "SETTLE", 30.0)

    async def scenario() -> None:
        async with pushpop.AsyncClient(dsn) as client:
            picked = asyncio.Event()

            async def handler(msg: pushpop.AsyncMessage) -> None:
                picked.set()

            worker = pushpop.AsyncWorker(client, "jobs", handler, poll_interval=30)
            task = asyncio.create_task(worker.run())

            async def requested() -> bool:
                return has_asked_for_a_wake_up(conn, worker.id)

            await until(requested, what="a wake-up request")
            spend_the_wake_up_request(conn, "jobs")
            await until(requested, what="a new request")
            await client.push("jobs", b"next")
            try:
                await asyncio.wait_for(picked.wait(), 5)
            finally:
                worker.stop()
                await task

    asyncio.run(scenario())


def test_a_wake_up_that_arrives_before_the_async_request_call_returns_is_not_lost(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with pushpop.AsyncClient(dsn) as client:
            picked = asyncio.Event()

            async def handler(msg: pushpop.AsyncMessage) -> None:
                picked.set()

            worker = pushpop.AsyncWorker(client, "jobs", handler, poll_interval=30)
            spent = asyncio.Event()
            send = client._run

            async def woken() -> bool:
                return worker._wake.is_set()

            async def send_then_spend(call: Any, on: Any = None) -> Any:
                # Hooked where the reply to the first wait_for_push reaches the worker: the
                # request is spent and its wake-up delivered before the worker goes on.
                result = await send(call, on)
                if "wait_for_push" in call.sql and not spent.is_set():
                    spend_the_wake_up_request(conn, "jobs")
                    await until(woken, what="the wake-up to reach the worker")
                    spent.set()
                return result

            monkeypatch.setattr(client, "_run", send_then_spend)
            task = asyncio.create_task(worker.run())

            async def requested() -> bool:
                return has_asked_for_a_wake_up(conn, worker.id)

            try:
                await asyncio.wait_for(spent.wait(), 10)
                await until(requested, what="a new request")
                await client.push("jobs", b"next")
                await asyncio.wait_for(picked.wait(), 5)
            finally:
                worker.stop()
                await task

    asyncio.run(scenario())


def test_cancelling_the_worker_task_mid_handler_releases_the_message(dsn: str) -> None:
    async def scenario() -> None:
        async with pushpop.AsyncClient(dsn) as client:
            id = await client.push("jobs", b"long")
            started = asyncio.Event()

            async def handler(msg: pushpop.AsyncMessage) -> None:
                started.set()
                await asyncio.sleep(60)

            worker = pushpop.AsyncWorker(client, "jobs", handler, shutdown_timeout=30)
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            msg = await client.find(id)
            assert msg is not None
            assert (msg.state, msg.error) == ("ready", RELEASED)
            assert await client.workers() == []

    asyncio.run(scenario())


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


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["script", "cli"])
def test_sigterm_drains_an_asyncio_worker_process_and_exits_0(
    sync_client: pushpop.Client, spawn: Spawner, journal: Journal, launch: str
) -> None:
    ids = [sync_client.push("jobs", json={"sleep": 0.5}) for _ in range(8)]
    if launch == "script":
        proc = spawn.script("async_worker_script.py", "jobs", concurrency=3, shutdown_timeout=20)
    else:  # the CLI sees an async def handler and runs the async worker
        proc = spawn.cli("handlers:async_record", "jobs", "--concurrency", "3")
    wait_for(lambda: len(journal.entries("start")) >= 3, what="three handlers running")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.output()
    states = [m.state for i in ids if (m := sync_client.find(i))]
    assert "pending" not in states
    started = set(journal.entries("start"))
    assert started == set(journal.entries("done")), "a started handler was cut short"
    assert states.count("completed") >= len(started)


def test_an_async_worker_popping_ahead_runs_no_more_handlers_than_concurrency(dsn: str) -> None:
    async def scenario() -> tuple[int, int]:
        async with pushpop.AsyncClient(dsn) as client:
            await client.push_many("jobs", [b"x"] * 1000)
            running, most, handled = 0, 0, 0

            async def handler(msg: pushpop.AsyncMessage) -> None:
                nonlocal running, most, handled
                running += 1
                most = max(most, running)
                await asyncio.sleep(0)  # let any other task that may run, run
                running -= 1
                handled += 1

            worker = pushpop.AsyncWorker(client, "jobs", handler, concurrency=2)
            task = asyncio.create_task(worker.run())

            async def all_completed() -> bool:
                return (await client.stats())[0].completed == 1000

            await until(all_completed, what="1000 completions")
            worker.stop()
            await task
            return handled, most

    handled, most = asyncio.run(scenario())
    assert handled == 1000
    assert most <= 2
