# generated from pushpop/async_client.py by tools/async_to_sync.py: do not edit
"""The client: a psycopg connection pool, and one SQL function call per method.

Each method builds its statement with :mod:`pushpop.calls` and sends it; only the I/O is here.
The asyncio client, :mod:`pushpop.async_client`, is the one written by hand;
``tools/async_to_sync.py`` writes the sync :mod:`pushpop.client` from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool

from . import calls, checks, constants, migrations, tracing
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
from .errors import ClientClosed, InvalidType, from_psycopg
from .message import MessageBase, ScheduleInfo, SubscriptionInfo, TopicStats, WorkerInfo
from .retry import Retry
from .worker import Worker

T = TypeVar("T")


class Message(MessageBase["Client"]):
    """A message of its :class:`Client`: acknowledge it with one of the methods below."""

    def push(
        self,
        delay: checks.Duration = 0,
        conn: psycopg.Connection[Any] | None = None,
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
        with tracing.pushing(self.topic, self.headers, self.id) as headers:
            self.headers = headers or {}
            return self._client._run(calls.push(self, delay, suffix, expires_in), conn)

    def complete(self) -> None:
        """Marks the message done. Raises :class:`LeaseLost` if it is no longer ours."""
        self._client._run(calls.complete(self))

    def discard(self, reason: str | None = None) -> None:
        """Gives up on the message for good, keeping ``reason`` in its error."""
        self._client._run(calls.discard(self, reason))

    def defer(self, delay: checks.Duration = 0, reason: str | None = None) -> None:
        """Puts the message back in the queue, to be delivered again after ``delay``."""
        self._client._run(calls.defer(self, delay, reason))

    def extend(self, lease: checks.Duration = constants.LEASE) -> None:
        """Moves the lease deadline to ``lease`` from now, for work that takes longer."""
        self._client._run(calls.extend(self, lease))


def _keep_reconnecting(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Called when one of the pool's reconnection attempts gives up (after RECONNECT_CAP
    seconds): starts a fresh one while it is needed, so tries stay a few seconds apart
    however long the database is away, instead of backing off for minutes."""
    if wants_connections(pool):
        pool.check()


class Client:
    """A pushpop client over a psycopg connection pool.

    Use it as ``with Client(...) as client:``, or ``client.open()`` it (a
    :class:`Client` opens in its constructor) and ``client.close()`` it at the end; a
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
        self._pool = psycopg_pool.ConnectionPool(
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
        self.open()

    def _check_pooled(self, conn: psycopg.Connection[Any]) -> None:
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
            psycopg_pool.ConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._pool.check()
            raise

    def open(self) -> None:
        """Opens the pool; its connections are made in the background. Opening twice is fine."""
        if self._opened and self._pool.closed:
            raise ClientClosed(
                f"this {type(self).__name__} was closed and cannot be opened again: make a new one"
            )
        if not self._opened:
            try_once(self.conninfo, self._timeout)
        self._pool.open()
        self._opened = True

    def close(self) -> None:
        """Closes the pool's connections."""
        self._pool.close()

    def __enter__(self) -> Client:
        self.open()
        return self

    def __exit__(
        self,
        type: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._pool.closed:
            raise ClientClosed(f"this {type(self).__name__} is closed: make a new one")

    def _run(self, call: Call[T], conn: psycopg.Connection[Any] | None = None) -> T:
        """Sends one call, on the caller's connection if given, else on a pooled one."""
        expected = psycopg.Connection
        if conn is not None and (not isinstance(conn, expected)):
            other = "an AsyncConnection goes with AsyncClient"
            raise InvalidType(
                f"conn must be a psycopg.{expected.__name__}, got {type(conn).__name__} ({other})"
            )
        self._check_open()
        try:
            if conn is not None:
                rows = conn.execute(call.sql, call.params).fetchall()
            else:
                pooled = self._pool.getconn()
                try:
                    rows = pooled.execute(call.sql, call.params).fetchall()
                finally:
                    self._pool.putconn(pooled)
        except psycopg_pool.PoolClosed as exc:
            raise ClientClosed(f"this {type(self).__name__} is closed: make a new one") from exc
        except psycopg_pool.PoolTimeout as exc:
            raise unavailable(self.conninfo, exc) from exc
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
    ) -> Message:
        """Builds a message (its id chosen now) without sending it: ``msg.push()`` does.
        Messages of a topic with one ``ordering_key`` are delivered one at a time, in push order."""
        fields = calls.new_message_fields(
            topic, payload, json, priority, dedup_key, max_attempts, id, headers, ordering_key
        )
        return Message(**fields, _client=self)

    def push(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | None = None,
        *,
        json: Any = calls._NO_PAYLOAD,
        delay: checks.Duration = 0,
        conn: psycopg.Connection[Any] | None = None,
        priority: int = constants.PRIORITY,
        dedup_key: str | None = None,
        max_attempts: int = constants.MAX_ATTEMPTS,
        id: UUID | str | None = None,
        durable: bool = True,
        expires_in: checks.Duration | None = None,
        headers: dict[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> UUID:
        """Enqueues one message and returns its id (see :meth:`Message.push`)."""
        msg = self.new_message(
            topic,
            payload,
            json=json,
            priority=priority,
            dedup_key=dedup_key,
            max_attempts=max_attempts,
            id=id,
            headers=headers,
            ordering_key=ordering_key,
        )
        return msg.push(delay, conn, durable=durable, expires_in=expires_in)

    def push_many(
        self,
        topic: str,
        payloads: Sequence[bytes | bytearray | memoryview],
        *,
        delay: checks.Duration = 0,
        priority: int = constants.PRIORITY,
        conn: psycopg.Connection[Any] | None = None,
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
            return self._run(call, conn)

    def pop(self, topic: str, *, lease: checks.Duration = constants.LEASE) -> Message | None:
        """Leases the next ready message of ``topic`` for ``lease``, or returns None."""
        messages = self.pop_many(topic, 1, lease=lease)
        return messages[0] if messages else None

    def pop_many(
        self, topic: str, n: int, *, lease: checks.Duration = constants.LEASE, durable: bool = True
    ) -> list[Message]:
        """Leases up to ``n`` ready messages of ``topic``, in delivery order. ``durable=False``:
        returns before the pop reaches disk (the worker's pops: see ``calls.pop``)."""
        rows = self._run(calls.pop(topic, n, lease, durable))
        return [Message.from_row(self, row) for row in rows]

    def complete_many(self, msgs: Sequence[Message]) -> None:
        """Completes popped messages in one statement. Those still leased are completed even
        if some are not; then :class:`LeaseLost` names the ones that were not."""
        self._run(calls.complete_many(msgs))

    def find(self, id: UUID | str) -> Message | None:
        """The message with this id in whatever state, or None if there is none (any more).
        For the id of a push that fanned out: its copy in the first subscriber topic by name
        (``pushpop.find`` in SQL lists every copy)."""
        rows = self._run(calls.find(id))
        return Message.from_row(self, rows[0]) if rows else None

    def requeue_expired(self) -> int:
        """Requeues messages whose lease expired (discards those out of attempts); how many."""
        return self._run(calls.requeue_expired())

    def cleanup(self, grace: checks.Duration = constants.CLEANUP_GRACE) -> int:
        """Deletes messages that finished more than ``grace`` ago, in short transactions."""
        total = 0
        while (deleted := self._run(calls.cleanup_batch(grace))) == constants.CLEANUP_BATCH:
            total += deleted
        return total + deleted

    def stats(self) -> list[TopicStats]:
        """Counts per topic: ready, scheduled, pending, completed, discarded."""
        return self._run(calls.stats())

    def purge(self, topic: str) -> int:
        """Deletes every message of ``topic`` that is not pending; returns how many."""
        return self._run(calls.purge(topic))

    def pause(self, topic: str) -> bool:
        """Pauses ``topic``: pops get nothing from it until :meth:`resume`; pushes go on.
        True if it was running."""
        return self._run(calls.pause(topic))

    def resume(self, topic: str) -> bool:
        """Resumes a paused ``topic`` and wakes its workers; True if it was paused."""
        return self._run(calls.resume(topic))

    def browse(
        self,
        topic: str,
        *,
        state: str | None = None,
        after: UUID | str | None = None,
        limit: int = calls.BROWSE_LIMIT,
    ) -> list[Message]:
        """One page of ``topic``'s messages, taking none: ready ones in pop order, the others
        oldest first. ``after``: the last id of the previous page."""
        rows = self._run(calls.browse(topic, state, after, limit))
        return [Message.from_row(self, row) for row in rows]

    def retry(self, id: UUID | str) -> bool:
        """Returns a discarded message to the queue with fresh attempts; False if ``id`` is
        not a discarded message."""
        return self._run(calls.retry(id))

    def retry_discarded(self, topic: str, *, max_rows: int | None = None) -> int:
        """Retries ``topic``'s discarded messages, oldest first (all, or ``max_rows``); how many."""
        return self._run(calls.retry_discarded(topic, max_rows))

    def cancel(self, id: UUID | str) -> bool:
        """Discards a ready or scheduled message (error ``cancelled``); False for one that is
        pending, finished or unknown."""
        return self._run(calls.cancel(id))

    def schedule(
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
        self._run(calls.schedule(name, topic, body, cron, every, timezone, priority))

    def unschedule(self, name: str) -> bool:
        """Deletes the schedule ``name``; True if there was one."""
        return self._run(calls.unschedule(name))

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule, with its next tick and the last one pushed."""
        return self._run(calls.schedules())

    def run_schedules(self) -> int:
        """Pushes one message per due schedule (workers do it); how many."""
        return self._run(calls.run_schedules())

    def subscribe(self, topic: str, subscriber: str) -> bool:
        """From now on, every push to ``topic`` (or to the topics a pattern such as
        ``orders.*`` or ``orders.>`` matches) puts a copy into the topic ``subscriber``
        instead of into ``topic``. True if the subscription is new."""
        return self._run(calls.subscribe(topic, subscriber))

    def unsubscribe(self, topic: str, subscriber: str) -> bool:
        """Removes the subscription of ``subscriber`` to ``topic``; True if there was one."""
        return self._run(calls.unsubscribe(topic, subscriber))

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionInfo]:
        """Every subscription, or those made with exactly this topic or pattern."""
        return self._run(calls.subscriptions(topic))

    def workers(self) -> list[WorkerInfo]:
        """The live workers: those that sent a heartbeat within the last minute."""
        return self._run(calls.workers(constants.STALE_AFTER))

    def work(
        self,
        topics: str | Sequence[str],
        handler: Callable[[Message], Any],
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
        """Runs a worker (:class:`Worker`) on ``topics`` until it is stopped; the options
        are the worker's."""
        worker = Worker(
            self,
            topics,
            handler,
            concurrency=concurrency,
            lease=lease,
            poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout,
            retry=retry,
            maintenance=maintenance,
            requeue_interval=requeue_interval,
            cleanup_interval=cleanup_interval,
            cleanup_grace=cleanup_grace,
            heartbeat_interval=heartbeat_interval,
            metrics_port=metrics_port,
        )
        worker.run()

    def migrate(
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
        return migrations.migrate(self.conninfo, distributed=distributed, shard_count=shard_count)
