"""The client: a psycopg connection pool, and one SQL function call per method.

Each method builds its statement with :mod:`pushpop.calls` and sends it; only the I/O is here.
The asyncio client, :mod:`pushpop.async_client`, is the one written by hand;
``tools/async_to_sync.py`` writes the sync :mod:`pushpop.client` from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool

from . import calls, checks, constants, migrations, tracing
from .async_worker import AsyncWorker
from .calls import Call
from .connection import (
    POOL_NAME,
    checked_conninfo,
    has_input,
    quiet_pool_logs,
    try_once,
    unavailable,
    wants_connections,
)
from .errors import ClientClosed, Error, InvalidType, from_psycopg
from .message import MessageBase, ScheduleInfo, SubscriptionInfo, TopicStats, WorkerInfo
from .retry import Retry

# True here; tools/async_to_sync.py writes the sync twin with the other side of each `if ASYNC`,
# and the next line has mypy check this module as the asyncio side only.
# mypy: always-true=ASYNC
ASYNC: Final = True

T = TypeVar("T")


class AsyncMessage(MessageBase["AsyncClient"]):
    """A message of its :class:`AsyncClient`: acknowledge it with one of the methods below."""

    async def push(
        self,
        delay: checks.Duration = 0,
        conn: psycopg.AsyncConnection[Any] | None = None,
        *,
        durable: bool = True,
        expires_in: checks.Duration | None = None,
    ) -> UUID:
        """Enqueues this message, available after ``delay``; inside ``conn``'s transaction if given.

        Returns the id, which is the id of an existing message if this id or dedup_key is taken.
        ``durable=False``: returns before the push reaches disk (README, "Durability").
        ``expires_in``: never delivered once that long has passed since the push.
        """
        suffix = calls.commit_suffix(durable, conn is not None)
        # A PRODUCER span when OpenTelemetry traces, its context sent in the headers.
        with tracing.pushing(self.topic, self.headers, self.id) as headers:
            self.headers = headers or {}
            return await self._client._run(calls.push(self, delay, suffix, expires_in), conn)

    async def complete(self) -> None:
        """Marks the message done. Raises :class:`LeaseLost` if it is no longer ours."""
        await self._client._run(calls.complete(self))

    async def discard(self, reason: str | None = None) -> None:
        """Gives up on the message for good, keeping ``reason`` in its error."""
        await self._client._run(calls.discard(self, reason))

    async def defer(self, delay: checks.Duration = 0, reason: str | None = None) -> None:
        """Puts the message back in the queue, to be delivered again after ``delay``."""
        await self._client._run(calls.defer(self, delay, reason))

    async def extend(self, lease: checks.Duration = constants.LEASE) -> None:
        """Moves the lease deadline to ``lease`` from now, for work that takes longer."""
        await self._client._run(calls.extend(self, lease))


async def _keep_reconnecting(pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
    """Called when one of the pool's reconnection attempts gives up (after RECONNECT_CAP
    seconds): starts a fresh one while it is needed, so tries stay a few seconds apart
    however long the database is away, instead of backing off for minutes."""
    if wants_connections(pool):
        await pool.check()


class AsyncClient:
    """A pushpop client over a psycopg connection pool.

    Use it as ``async with AsyncClient(...) as client:``, or ``await client.open()`` it (a
    :class:`Client` opens in its constructor) and ``await client.close()`` it at the end; a
    closed client cannot be opened again. Opening fails at once where retrying cannot help
    (a refused password, a database that does not exist); a server that is down is waited for.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        min_size: int = constants.MIN_SIZE,
        max_size: int = constants.MAX_SIZE,
        timeout: float = constants.POOL_TIMEOUT,
    ) -> None:
        self.conninfo = checked_conninfo(dsn)
        checks.integer(min_size, "min_size", low=0)
        checks.integer(max_size, "max_size", low=max(1, min_size))
        self._timeout = timeout
        self._opened = False
        quiet_pool_logs()
        self._pool = psycopg_pool.AsyncConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            name=POOL_NAME,
            open=False,
            check=self._check_pooled,
            reconnect_timeout=constants.RECONNECT_CAP,
            reconnect_failed=_keep_reconnecting,
        )
        if not ASYNC:
            self.open()  # an AsyncClient opens inside its event loop instead

    async def _check_pooled(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's check as it hands a connection out: raises if the connection is dead.

        A round trip is spent only on a connection with something to read (see
        :func:`~pushpop.connection.has_input`), so healthy use pays one system call instead of
        one round trip and never gets a dead connection. A dead one means its idle siblings
        likely died with it (a restart): they are all checked at once, rather than one slower
        call at a time.
        """
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
            raise ClientClosed(
                f"this {type(self).__name__} was closed and cannot be opened again: make a new one"
            )
        if not self._opened:
            # A blocking connection attempt: kept off the event loop.
            await asyncio.to_thread(try_once, self.conninfo, self._timeout)
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
        if ASYNC and not self._opened:  # a Client opens in its constructor
            raise Error(
                "this AsyncClient is not open: use `async with AsyncClient(...) as client:`"
                " or `await client.open()` first"
            )
        if self._pool.closed:
            raise ClientClosed(f"this {type(self).__name__} is closed: make a new one")

    async def _run(self, call: Call[T], conn: psycopg.AsyncConnection[Any] | None = None) -> T:
        """Sends one call, on the caller's connection if given, else on a pooled one."""
        expected = psycopg.AsyncConnection
        if conn is not None and not isinstance(conn, expected):
            other = (
                "a sync Connection goes with Client"
                if ASYNC
                else "an AsyncConnection goes with AsyncClient"
            )
            raise InvalidType(
                f"conn must be a psycopg.{expected.__name__}, got {type(conn).__name__} ({other})"
            )
        self._check_open()
        try:
            if conn is not None:
                rows = await (await conn.execute(call.sql, call.params)).fetchall()
            else:
                # Not pool.connection(): its commit on exit costs a tenth of a call's client CPU
                # and does nothing in autocommit; putconn replaces a connection left unusable.
                pooled = await self._pool.getconn()
                try:
                    rows = await (await pooled.execute(call.sql, call.params)).fetchall()
                finally:
                    await self._pool.putconn(pooled)
        except psycopg_pool.PoolClosed as exc:
            raise ClientClosed(f"this {type(self).__name__} is closed: make a new one") from exc
        except psycopg_pool.PoolTimeout as exc:
            # The explanation makes one blocking connection attempt: kept off the event loop.
            raise await asyncio.to_thread(unavailable, self.conninfo, exc) from exc
        except psycopg.Error as exc:
            raise from_psycopg(exc, call.role) from exc
        return call.read(rows)

    def new_message(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | None = None,
        *,
        json: Any = calls._NO_PAYLOAD,
        priority: int = constants.PRIORITY,
        dedup_key: str | None = None,
        max_attempts: int = constants.MAX_ATTEMPTS,
        id: UUID | str | None = None,
        headers: dict[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> AsyncMessage:
        """Builds a message (its id chosen now) without sending it: ``await msg.push()`` does.
        Messages of a topic with one ``ordering_key`` are delivered one at a time, in push order."""
        fields = calls.new_message_fields(
            topic, payload, json, priority, dedup_key, max_attempts, id, headers, ordering_key
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
        priority: int = constants.PRIORITY,
        dedup_key: str | None = None,
        max_attempts: int = constants.MAX_ATTEMPTS,
        id: UUID | str | None = None,
        durable: bool = True,
        expires_in: checks.Duration | None = None,
        headers: dict[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> UUID:
        """Enqueues one message and returns its id (see :meth:`AsyncMessage.push`)."""
        msg = self.new_message(
            topic, payload, json=json, priority=priority, dedup_key=dedup_key,
            max_attempts=max_attempts, id=id, headers=headers, ordering_key=ordering_key,
        )  # fmt: skip
        return await msg.push(delay, conn, durable=durable, expires_in=expires_in)

    async def push_many(
        self,
        topic: str,
        payloads: Sequence[bytes | bytearray | memoryview],
        *,
        delay: checks.Duration = 0,
        priority: int = constants.PRIORITY,
        conn: psycopg.AsyncConnection[Any] | None = None,
        durable: bool = True,
        expires_in: checks.Duration | None = None,
        headers: dict[str, str] | None = None,
        ordering_key: str | None = None,
        ordering_keys: Sequence[str | None] | None = None,
    ) -> list[UUID]:
        """Enqueues many messages in one statement; their ids, in the order of ``payloads``.
        ``expires_in`` and ``headers`` apply to each. ``ordering_key`` orders the whole batch
        under one key; ``ordering_keys`` gives each payload its own (or None)."""
        suffix = calls.commit_suffix(durable, conn is not None)
        count = len(payloads) if isinstance(payloads, Sequence) else 0
        keys = calls.batch_ordering_keys(ordering_key, ordering_keys, count)
        with tracing.pushing(topic, headers, count=count) as headers:
            call = calls.push_many(
                topic, payloads, delay, priority, suffix, expires_in, headers, keys
            )
            return await self._run(call, conn)

    async def pop(
        self, topic: str, *, lease: checks.Duration = constants.LEASE
    ) -> AsyncMessage | None:
        """Leases the next ready message of ``topic`` for ``lease``, or returns None."""
        messages = await self.pop_many(topic, 1, lease=lease)
        return messages[0] if messages else None

    async def pop_many(
        self,
        topic: str,
        n: int,
        *,
        lease: checks.Duration = constants.LEASE,
        durable: bool = True,
    ) -> list[AsyncMessage]:
        """Leases up to ``n`` ready messages of ``topic``, in delivery order. ``durable=False``:
        returns before the pop reaches disk (the worker's pops: see ``calls.pop``)."""
        rows = await self._run(calls.pop(topic, n, lease, durable))
        return [AsyncMessage.from_row(self, row) for row in rows]

    async def complete_many(self, msgs: Sequence[AsyncMessage]) -> None:
        """Completes popped messages in one statement. Those still leased are completed even
        if some are not; then :class:`LeaseLost` names the ones that were not."""
        await self._run(calls.complete_many(msgs))

    async def find(self, id: UUID | str) -> AsyncMessage | None:
        """The message with this id in whatever state, or None if there is none (any more).
        For the id of a push that fanned out: its copy in the first subscriber topic by name
        (``pushpop.find`` in SQL lists every copy)."""
        rows = await self._run(calls.find(id))
        return AsyncMessage.from_row(self, rows[0]) if rows else None

    async def requeue_expired(self) -> int:
        """Requeues messages whose lease expired (discards those out of attempts); how many."""
        return await self._run(calls.requeue_expired())

    async def cleanup(self, grace: checks.Duration = constants.CLEANUP_GRACE) -> int:
        """Deletes messages that finished more than ``grace`` ago, in short transactions."""
        total = 0
        while (deleted := await self._run(calls.cleanup_batch(grace))) == constants.CLEANUP_BATCH:
            total += deleted
        return total + deleted

    async def stats(self) -> list[TopicStats]:
        """Counts per topic: ready, scheduled, pending, completed, discarded."""
        return await self._run(calls.stats())

    async def purge(self, topic: str) -> int:
        """Deletes every message of ``topic`` that is not pending; returns how many."""
        return await self._run(calls.purge(topic))

    async def pause(self, topic: str) -> bool:
        """Pauses ``topic``: pops get nothing from it until :meth:`resume`; pushes go on.
        True if it was running."""
        return await self._run(calls.pause(topic))

    async def resume(self, topic: str) -> bool:
        """Resumes a paused ``topic`` and wakes its workers; True if it was paused."""
        return await self._run(calls.resume(topic))

    async def browse(
        self,
        topic: str,
        *,
        state: str | None = None,
        after: UUID | str | None = None,
        limit: int = calls.BROWSE_LIMIT,
    ) -> list[AsyncMessage]:
        """One page of ``topic``'s messages, taking none: ready ones in pop order, the others
        oldest first. ``after``: the last id of the previous page."""
        rows = await self._run(calls.browse(topic, state, after, limit))
        return [AsyncMessage.from_row(self, row) for row in rows]

    async def retry(self, id: UUID | str) -> bool:
        """Returns a discarded message to the queue with fresh attempts; False if ``id`` is
        not a discarded message."""
        return await self._run(calls.retry(id))

    async def retry_discarded(self, topic: str, *, max_rows: int | None = None) -> int:
        """Retries ``topic``'s discarded messages, oldest first (all, or ``max_rows``); how many."""
        return await self._run(calls.retry_discarded(topic, max_rows))

    async def cancel(self, id: UUID | str) -> bool:
        """Discards a ready or scheduled message (error ``cancelled``); False for one that is
        pending, finished or unknown."""
        return await self._run(calls.cancel(id))

    async def schedule(
        self,
        name: str,
        topic: str,
        payload: bytes | bytearray | memoryview | None = None,
        *,
        json: Any = calls._NO_PAYLOAD,
        cron: str | None = None,
        every: checks.Duration | None = None,
        timezone: str = "UTC",
        priority: int = constants.PRIORITY,
    ) -> None:
        """Creates or replaces the schedule ``name``: one message to ``topic`` per tick of
        ``cron`` (5 fields, in ``timezone``) or of ``every`` (seconds or a timedelta)."""
        body = calls.payload_of(payload, json)
        await self._run(calls.schedule(name, topic, body, cron, every, timezone, priority))

    async def unschedule(self, name: str) -> bool:
        """Deletes the schedule ``name``; True if there was one."""
        return await self._run(calls.unschedule(name))

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule, with its next tick and the last one pushed."""
        return await self._run(calls.schedules())

    async def run_schedules(self) -> int:
        """Pushes one message per due schedule (workers do it); how many."""
        return await self._run(calls.run_schedules())

    async def subscribe(self, topic: str, subscriber: str) -> bool:
        """From now on, every push to ``topic`` (or to the topics a pattern such as
        ``orders.*`` or ``orders.>`` matches) puts a copy into the topic ``subscriber``
        instead of into ``topic``. True if the subscription is new."""
        return await self._run(calls.subscribe(topic, subscriber))

    async def unsubscribe(self, topic: str, subscriber: str) -> bool:
        """Removes the subscription of ``subscriber`` to ``topic``; True if there was one."""
        return await self._run(calls.unsubscribe(topic, subscriber))

    async def subscriptions(self, topic: str | None = None) -> list[SubscriptionInfo]:
        """Every subscription, or those made with exactly this topic or pattern."""
        return await self._run(calls.subscriptions(topic))

    async def workers(self) -> list[WorkerInfo]:
        """The live workers: those that sent a heartbeat within the last minute."""
        return await self._run(calls.workers(constants.STALE_AFTER))

    async def work(
        self,
        topics: str | Sequence[str],
        handler: Callable[[AsyncMessage], Awaitable[Any]],
        *,
        concurrency: int = constants.CONCURRENCY,
        lease: checks.Duration = constants.LEASE,
        poll_interval: checks.Duration = constants.POLL_INTERVAL,
        shutdown_timeout: checks.Duration = constants.SHUTDOWN_TIMEOUT,
        retry: Retry | None = None,
        maintenance: bool = True,
        requeue_interval: checks.Duration = constants.REQUEUE_INTERVAL,
        cleanup_interval: checks.Duration = constants.CLEANUP_INTERVAL,
        cleanup_grace: checks.Duration = constants.CLEANUP_GRACE,
        heartbeat_interval: checks.Duration = constants.HEARTBEAT_INTERVAL,
        metrics_port: int | None = None,
    ) -> None:
        """Runs a worker (:class:`AsyncWorker`) on ``topics`` until it is stopped; the options
        are the worker's."""
        worker = AsyncWorker(
            self, topics, handler, concurrency=concurrency, lease=lease,
            poll_interval=poll_interval, shutdown_timeout=shutdown_timeout, retry=retry,
            maintenance=maintenance, requeue_interval=requeue_interval,
            cleanup_interval=cleanup_interval, cleanup_grace=cleanup_grace,
            heartbeat_interval=heartbeat_interval, metrics_port=metrics_port,
        )  # fmt: skip
        await worker.run()

    async def migrate(
        self, *, distributed: bool = False, shard_count: int = migrations.SHARD_COUNT
    ) -> list[str]:
        """Brings pushpop's schema up to date; returns the SQL files applied, relative to
        ``sql/`` (none when up to date). With ``distributed``, then shards the queue over a
        Citus cluster in the same transaction (a no-op when it is already; MigrationError
        without Citus, and nothing applied).

        Runs the migrator on a connection of its own (off the event loop, where there is one):
        one code path keeps psql, ``pushpop migrate`` and both clients alike.
        """
        self._check_open()
        return await asyncio.to_thread(
            migrations.migrate, self.conninfo, distributed=distributed, shard_count=shard_count
        )
