"""The asyncio client: the same calls as :class:`~pushpop.Client`, awaited.

Every method builds its statement with :mod:`pushpop.calls` and only the I/O differs. psycopg
runs on asyncio's default loop on Linux and macOS; on Windows it needs a SelectorEventLoop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool

from . import calls, checks, migrations
from .calls import Call
from .client import (
    DEFAULT_GRACE,
    DEFAULT_LEASE,
    checked_conninfo,
    has_input,
    unavailable,
    wants_connections,
)
from .errors import Error, InvalidType, from_psycopg
from .message import MessageBase, TopicStats, WorkerInfo
from .worker_common import RECONNECT_CAP, STALE_AFTER

T = TypeVar("T")


class AsyncMessage(MessageBase):
    """A message of an :class:`AsyncClient`: acknowledge it by awaiting one of the methods below."""

    async def push(
        self,
        delay: checks.Duration = 0,
        conn: psycopg.AsyncConnection[Any] | None = None,
        *,
        durable: bool = True,
    ) -> UUID:
        """Enqueues this message, available after ``delay``; inside ``conn``'s transaction if given.

        Returns the id, which is the id of an existing message if this id or dedup_key is taken.
        ``durable=False``: returns before the push reaches disk (README, "Durability").
        """
        suffix = calls.commit_suffix(durable, conn is not None)
        result: UUID = await self._client._run(calls.push(self, delay, suffix), conn)
        return result

    async def complete(self) -> None:
        """Marks the message done. Raises :class:`LeaseLost` if it is no longer ours."""
        await self._client._run(calls.complete(self))

    async def discard(self, reason: str | None = None) -> None:
        """Gives up on the message for good, keeping ``reason`` in its error."""
        await self._client._run(calls.discard(self, reason))

    async def defer(self, delay: checks.Duration = 0, reason: str | None = None) -> None:
        """Puts the message back in the queue, to be delivered again after ``delay``."""
        await self._client._run(calls.defer(self, delay, reason))

    async def extend(self, lease: checks.Duration = DEFAULT_LEASE) -> None:
        """Moves the lease deadline to ``lease`` from now, for work that takes longer."""
        await self._client._run(calls.extend(self, lease))


async def keep_reconnecting(pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
    """The async twin of :func:`pushpop.client.keep_reconnecting`."""
    if wants_connections(pool):
        await pool.check()


class AsyncClient:
    """A pushpop client over a psycopg async connection pool.

    The constructor connects nothing (an async pool must be opened inside a running event
    loop): use ``async with AsyncClient(...) as client:``, or ``await client.open()`` and
    ``await client.close()``. A closed client cannot be opened again.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self.conninfo = checked_conninfo(dsn)
        checks.integer(min_size, "min_size", low=0)
        checks.integer(max_size, "max_size", low=max(1, min_size))
        self._opened = False
        self._pool = psycopg_pool.AsyncConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            name="pushpop",
            open=False,
            check=self._check_pooled,
            reconnect_timeout=RECONNECT_CAP,
            reconnect_failed=keep_reconnecting,
        )

    async def _check_pooled(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's check as it hands a connection out (see ``Client._check_pooled``)."""
        if not has_input(conn):
            return
        try:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            await self._pool.check()
            raise

    async def open(self) -> None:
        """Opens the pool; its connections are made in the background. Opening twice is fine."""
        if self._opened and self._pool.closed:
            raise Error("this AsyncClient was closed and cannot be opened again: make a new one")
        await self._pool.open()
        self._opened = True

    async def close(self) -> None:
        """Closes the pool's connections."""
        await self._pool.close()

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        type: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._opened:
            raise Error(
                "this AsyncClient is not open: use `async with AsyncClient(...) as client:` "
                "or `await client.open()` first"
            )

    async def _run(self, call: Call[T], conn: psycopg.AsyncConnection[Any] | None = None) -> T:
        """Sends one call, on the caller's connection if given, else on a pooled one."""
        if conn is not None and not isinstance(conn, psycopg.AsyncConnection):
            raise InvalidType(
                f"conn must be a psycopg.AsyncConnection, got {type(conn).__name__}"
                " (a sync Connection goes with Client)"
            )
        self._check_open()
        try:
            if conn is not None:
                rows = await (await conn.execute(call.sql, call.params)).fetchall()
            else:
                pooled = await self._pool.getconn()  # as in Client._run
                try:
                    rows = await (await pooled.execute(call.sql, call.params)).fetchall()
                finally:
                    await self._pool.putconn(pooled)
        except psycopg_pool.PoolTimeout as exc:
            # The explanation makes one blocking connection attempt: keep it off the loop.
            raise await asyncio.to_thread(unavailable, self.conninfo, exc) from exc
        except psycopg.Error as exc:
            raise from_psycopg(exc) from exc
        return call.read(rows)

    def new_message(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | None = None,
        *,
        json: Any = calls._NO_PAYLOAD,
        priority: int = 0,
        dedup_key: str | None = None,
        max_attempts: int = 25,
        id: UUID | str | None = None,
    ) -> AsyncMessage:
        """Builds a message (id chosen now) without sending it; ``await msg.push()`` sends it."""
        fields = calls.new_message_fields(
            topic, payload, json, priority, dedup_key, max_attempts, id
        )
        return AsyncMessage(**fields, _client=self)

    async def push(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | None = None,
        *,
        json: Any = calls._NO_PAYLOAD,
        delay: checks.Duration = 0,
        conn: psycopg.AsyncConnection[Any] | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        max_attempts: int = 25,
        id: UUID | str | None = None,
        durable: bool = True,
    ) -> UUID:
        """Enqueues one message and returns its id (see :meth:`AsyncMessage.push`)."""
        msg = self.new_message(
            topic, payload, json=json, priority=priority, dedup_key=dedup_key,
            max_attempts=max_attempts, id=id,
        )  # fmt: skip
        return await msg.push(delay, conn, durable=durable)

    async def push_many(
        self,
        topic: str,
        payloads: Sequence[bytes | bytearray | memoryview],
        *,
        delay: checks.Duration = 0,
        priority: int = 0,
        conn: psycopg.AsyncConnection[Any] | None = None,
        durable: bool = True,
    ) -> list[UUID]:
        """Enqueues many messages in one statement; their ids, in the order of ``payloads``."""
        suffix = calls.commit_suffix(durable, conn is not None)
        return await self._run(calls.push_many(topic, payloads, delay, priority, suffix), conn)

    async def pop(
        self, topic: str, *, lease: checks.Duration = DEFAULT_LEASE
    ) -> AsyncMessage | None:
        """Leases the next ready message of ``topic`` for ``lease``, or returns None."""
        messages = await self.pop_many(topic, 1, lease=lease)
        return messages[0] if messages else None

    async def pop_many(
        self, topic: str, n: int, *, lease: checks.Duration = DEFAULT_LEASE
    ) -> list[AsyncMessage]:
        """Leases up to ``n`` ready messages of ``topic``, in delivery order."""
        rows = await self._run(calls.pop(topic, n, lease))
        return [AsyncMessage.from_row(self, row) for row in rows]

    async def complete_many(self, msgs: Sequence[AsyncMessage]) -> None:
        """Completes popped messages in one statement. Those still leased are completed even
        if some are not; then :class:`LeaseLost` names the ones that were not."""
        await self._run(calls.complete_many(msgs))

    async def find(self, id: UUID | str) -> AsyncMessage | None:
        """The message with this id in whatever state, or None if there is none (any more)."""
        rows = await self._run(calls.find(id))
        return AsyncMessage.from_row(self, rows[0]) if rows else None

    async def requeue_expired(self) -> int:
        """Requeues messages whose lease expired (discards those out of attempts); how many."""
        return await self._run(calls.requeue_expired())

    async def cleanup(self, grace: checks.Duration = DEFAULT_GRACE) -> int:
        """Deletes messages that finished more than ``grace`` ago, in short transactions."""
        total = 0
        while (deleted := await self._run(calls.cleanup_batch(grace))) == calls.CLEANUP_BATCH:
            total += deleted
        return total + deleted

    async def stats(self) -> list[TopicStats]:
        """Counts per topic: ready, scheduled, pending, completed, discarded."""
        return await self._run(calls.stats())

    async def purge(self, topic: str) -> int:
        """Deletes every message of ``topic`` that is not pending; returns how many."""
        return await self._run(calls.purge(topic))

    async def workers(self) -> list[WorkerInfo]:
        """The live workers: those that sent a heartbeat within the last minute."""
        return await self._run(calls.workers(STALE_AFTER))

    async def work(
        self,
        topics: str | Sequence[str],
        handler: Callable[[AsyncMessage], Awaitable[Any]],
        **options: Any,
    ) -> None:
        """Runs a :class:`pushpop.AsyncWorker` on ``topics`` until it is stopped or cancelled."""
        from .async_worker import AsyncWorker  # the worker builds on this module

        await AsyncWorker(self, topics, handler, **options).run()

    async def migrate(self) -> list[int]:
        """Applies pending SQL migrations; returns the versions applied (none when up to date).

        Runs the synchronous migrator in a worker thread on a connection of its own: migrations
        are rare, and one code path for them keeps psql, ``pushpop migrate`` and both clients alike.
        """
        self._check_open()
        applied = await asyncio.to_thread(migrations.migrate, self.conninfo)
        return [m.version for m in applied]
