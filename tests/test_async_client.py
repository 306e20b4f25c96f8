"""What only the asyncio client has: explicit open/close, async connections, concurrent coroutines.

The queue's contract itself is checked once for both clients by the shared tests (through
``async_facade.SyncFacade``); each test here runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from async_facade import SyncFacade

import pushpop
from pushpop import AsyncClient, AsyncMessage, InvalidArgument, InvalidType, LeaseLost


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Polls ``check`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def other_backends(watcher: psycopg.AsyncConnection[Any]) -> int:
    """Sessions on the test database besides ``watcher`` itself."""
    cur = await watcher.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def test_async_with_opens_the_pool_and_closing_releases_its_connections(dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
            client = AsyncClient(dsn, min_size=2)
            assert await other_backends(watcher) == 0
            async with client as entered:
                assert entered is client
                await eventually(lambda: _equals(other_backends(watcher), 2))
                pushed = await client.push("t", b"x")
                popped = await client.pop("t")
                assert popped is not None
                assert popped.id == pushed
            await eventually(lambda: _equals(other_backends(watcher), 0))
            with pytest.raises(pushpop.Error):
                await client.stats()
            with pytest.raises(pushpop.Error, match="cannot be opened again"):
                await client.open()

    asyncio.run(scenario())


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def test_calls_before_open_raise_an_error_saying_how_to_open(dsn: str) -> None:
    client = AsyncClient(dsn)  # outside any event loop: the constructor connects nothing
    msg = client.new_message("t", b"x")  # building a message is local
    assert isinstance(msg, AsyncMessage)
    assert msg.state is None

    async def scenario() -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.pop("t"),
            lambda: client.push("t", b"y"),
            lambda: client.stats(),
            lambda: client.migrate(),
            lambda: msg.push(),
        ]
        for call in calls:
            with pytest.raises(pushpop.Error, match=r"not open: use `async with .*client\.open"):
                await call()
        await client.open()
        try:
            assert await client.stats() == []  # nothing was sent before open
            assert await msg.push() == msg.id
        finally:
            await client.close()

    asyncio.run(scenario())


def test_push_with_an_async_connection_commits_and_rolls_back_with_its_transaction(
    dsn: str,
) -> None:
    async def scenario() -> None:
        async with (
            AsyncClient(dsn) as client,
            await psycopg.AsyncConnection.connect(dsn) as conn,
        ):
            async with conn.transaction():
                kept = await client.push("t", b"kept", conn=conn)
                batch = await client.push_many("t", [b"a", b"b"], conn=conn)
                assert await client.find(kept) is None  # not visible before commit
                assert await client.pop("t") is None
            for id in [kept, *batch]:
                found = await client.find(id)
                assert found is not None
                assert found.state == "ready"

            dropped = client.new_message("t", b"dropped")
            async with conn.transaction():
                await dropped.push(conn=conn)
                raise psycopg.Rollback
            assert await client.find(dropped.id) is None
            [stats] = await client.stats()
            assert stats.ready == 3

    asyncio.run(scenario())


def test_each_client_rejects_the_other_kind_of_connection(dsn: str) -> None:
    async def scenario() -> None:
        async with (
            AsyncClient(dsn) as client,
            await psycopg.AsyncConnection.connect(dsn) as async_conn,
        ):
            with psycopg.connect(dsn) as sync_conn:
                sends: list[Callable[[], Awaitable[Any]]] = [
                    lambda: client.push("t", b"x", conn=sync_conn),  # type: ignore[arg-type]
                    lambda: client.push_many("t", [b"x"], conn=sync_conn),  # type: ignore[arg-type]
                    lambda: client.new_message("t", b"x").push(conn=sync_conn),  # type: ignore[arg-type]
                ]
                for send in sends:
                    with pytest.raises(InvalidType, match=r"AsyncConnection.*goes with Client"):
                        await send()
            with (
                pushpop.Client(dsn) as sync_client,
                pytest.raises(InvalidType, match="AsyncConnection goes with AsyncClient"),
            ):
                sync_client.push("t", b"x", conn=async_conn)  # type: ignore[arg-type]
            assert await client.stats() == []

    asyncio.run(scenario())


def test_acknowledging_after_the_lease_moved_on_raises_lease_lost(dsn: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(dsn) as client:
            await client.push("t", b"x")
            stale = await client.pop("t", lease=timedelta(microseconds=1))
            assert stale is not None

            async def requeued() -> bool:
                return await client.requeue_expired() == 1

            await eventually(requeued)
            fresh = await client.pop("t")
            assert fresh is not None
            assert (fresh.id, fresh.attempts) == (stale.id, 2)
            assert fresh.lease != stale.lease
            acks: list[Callable[[], Awaitable[None]]] = [
                stale.complete,
                stale.extend,
                stale.defer,
                lambda: stale.discard("late"),
            ]
            for ack in acks:
                with pytest.raises(LeaseLost):
                    await ack()
            await fresh.complete()
            with pytest.raises(LeaseLost):
                await fresh.complete()
            found = await client.find(fresh.id)
            assert found is not None
            assert (found.state, found.attempts) == ("completed", 2)

    asyncio.run(scenario())


def test_an_unreachable_server_raises_unavailable_naming_the_cause() -> None:
    async def scenario() -> None:
        async with AsyncClient("host=127.0.0.1 port=1 connect_timeout=2", timeout=0.5) as client:
            with pytest.raises(pushpop.Unavailable, match="cannot connect to the database"):
                await client.stats()

    asyncio.run(scenario())


def test_a_thousand_concurrent_pops_share_out_a_thousand_messages_exactly_once(dsn: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(dsn, max_size=10) as client:
            pushed = await client.push_many("t", [str(i).encode() for i in range(1000)])
            popped = await asyncio.gather(*(client.pop("t") for _ in range(1000)))
            messages = [m for m in popped if m is not None]
            assert len(messages) == 1000
            assert len({m.id for m in messages}) == 1000
            assert {m.id for m in messages} == set(pushed)
            await asyncio.gather(*(m.complete() for m in messages))
            [stats] = await client.stats()
            assert (stats.ready, stats.pending, stats.completed) == (0, 0, 1000)

    asyncio.run(scenario())


def test_sync_facade_drives_an_async_client_through_the_sync_api(dsn: str) -> None:
    with SyncFacade(AsyncClient(dsn)) as client:
        pushed = client.push("t", json={"n": 1}, priority=3)
        client.new_message("t", b"later").push(delay=3600)
        [msg] = client.pop_many("t", 5)
        assert (msg.id, msg.json(), msg.priority, msg.state) == (pushed, {"n": 1}, 3, "pending")
        msg.complete()
        with pytest.raises(LeaseLost):
            msg.complete()
        assert client.find(pushed).state == "completed"
        assert client.pop("t") is None
        assert client.workers() == []
        with pytest.raises(InvalidArgument):
            client.push("", b"x")
        client.close()
        with pytest.raises(pushpop.Error):
            client.stats()
    assert "pushpop-facade" not in {thread.name for thread in threading.enumerate()}
