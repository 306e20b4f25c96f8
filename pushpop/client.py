"""The synchronous client: a connection pool and one SQL function call per method."""

from __future__ import annotations

import os
import re
import select
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from . import calls, checks, migrations
from .calls import Call
from .errors import InvalidArgument, InvalidType, Unavailable, from_psycopg
from .message import MessageBase, TopicStats, WorkerInfo
from .worker_common import RECONNECT_CAP, STALE_AFTER

T = TypeVar("T")
DEFAULT_LEASE = calls.POP_LEASE_DEFAULT
DEFAULT_GRACE = timedelta(days=1)


def resolve_dsn(dsn: str | None) -> str:
    """``dsn`` if given, else ``DATABASE_URL``, else "": libpq's defaults (PGHOST, ...)."""
    if dsn is not None:
        if not isinstance(dsn, str):
            raise InvalidType(f"dsn must be a str or None, got {type(dsn).__name__}")
        return dsn
    return os.environ.get("DATABASE_URL", "")


def checked_conninfo(dsn: str | None) -> str:
    """:func:`resolve_dsn`, refusing a malformed string at once, without quoting any piece of
    it: libpq's complaint ("missing = after ...") may hold part of a password."""
    conninfo = resolve_dsn(dsn)
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        problem = re.sub(r'"[^"]*"', '"..."', " ".join(str(exc).split()))
        raise InvalidArgument(f"invalid connection string: {problem}") from None
    return conninfo


def redact(text: str, conninfo: str) -> str:
    """``text`` with the connection string's password masked, should a message ever echo it."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return text
    return text.replace(str(password), "***") if password else text


def unavailable(conninfo: str, exc: Exception) -> Unavailable:
    """Explains a pool timeout by trying one direct connection, whose error names the cause."""
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.Error as direct:
        reason = redact(" ".join(str(direct).split()), conninfo)
        return Unavailable(f"cannot connect to the database: {reason}")
    return Unavailable(f"no database connection became free in time ({exc})")


def has_input(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection has something to read, or is closed.

    A healthy idle connection has nothing to read. One whose server went away (restart,
    ``pg_terminate_backend``, failover) has the server's goodbye or end-of-file waiting.
    """
    if conn.closed:
        return True
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


def wants_connections(
    pool: psycopg_pool.ConnectionPool[Any] | psycopg_pool.AsyncConnectionPool[Any],
) -> bool:
    """Whether callers wait for a connection or the pool is below its minimum size."""
    stats = pool.get_stats()
    return stats.get("requests_waiting", 0) > 0 or stats.get("pool_size", 0) < pool.min_size


def keep_reconnecting(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Called when one of the pool's reconnection attempts gives up (after RECONNECT_CAP
    seconds): starts a fresh one while it is needed, so tries stay a few seconds apart
    however long the database is away, instead of backing off for minutes."""
    if wants_connections(pool):
        pool.check()


class Message(MessageBase):
    """A message of a :class:`Client`: acknowledge it with one of the methods below."""

    def push(
        self,
        delay: checks.Duration = 0,
        conn: psycopg.Connection[Any] | None = None,
        *,
        durable: bool = True,
    ) -> UUID:
        """Enqueues this message, available after ``delay``; inside ``conn``'s transaction if given.

        Returns the id, which is the id of an existing message if this id or dedup_key is taken.
        ``durable=False``: returns before the push reaches disk (README, "Durability").
        """
        suffix = calls.commit_suffix(durable, conn is not None)
        result: UUID = self._client._run(calls.push(self, delay, suffix), conn)
        return result

    def complete(self) -> None:
        """Marks the message done. Raises :class:`LeaseLost` if it is no longer ours."""
        self._client._run(calls.complete(self))

    def discard(self, reason: str | None = None) -> None:
        """Gives up on the message for good, keeping ``reason`` in its error."""
        self._client._run(calls.discard(self, reason))

    def defer(self, delay: checks.Duration = 0, reason: str | None = None) -> None:
        """Puts the message back in the queue, to be delivered again after ``delay``."""
        self._client._run(calls.defer(self, delay, reason))

    def extend(self, lease: checks.Duration = DEFAULT_LEASE) -> None:
        """Moves the lease deadline to ``lease`` from now, for work that takes longer."""
        self._client._run(calls.extend(self, lease))


class Client:
    """A pushpop client over a psycopg connection pool. Use it as a context manager, or close()."""

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
        self._pool = psycopg_pool.ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            name="pushpop",
            open=True,
            check=self._check_pooled,
            reconnect_timeout=RECONNECT_CAP,
            reconnect_failed=keep_reconnecting,
        )

    def _check_pooled(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check as it hands a connection out: raises if the connection is dead.

        A round trip is spent only on a connection with something to read (see
        :func:`has_input`), so healthy use pays one system call instead of one round trip and
        never gets a dead connection. A dead one means its idle siblings likely died with it
        (a restart): they are all checked at once, rather than one slower call at a time.
        """
        if not has_input(conn):
            return
        try:
            psycopg_pool.ConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._pool.check()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        type: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the pool's connections."""
        self._pool.close()

    def _run(self, call: Call[T], conn: psycopg.Connection[Any] | None = None) -> T:
        """Sends one call, on the caller's connection if given, else on a pooled one."""
        if conn is not None and not isinstance(conn, psycopg.Connection):
            raise InvalidType(
                f"conn must be a psycopg.Connection, got {type(conn).__name__}"
                " (an AsyncConnection goes with AsyncClient)"
            )
        try:
            if conn is not None:
                rows = conn.execute(call.sql, call.params).fetchall()
            else:
                # Not pool.connection(): its commit on exit costs a tenth of a call's client CPU
                # and does nothing in autocommit; putconn replaces a connection left unusable.
                pooled = self._pool.getconn()
                try:
                    rows = pooled.execute(call.sql, call.params).fetchall()
                finally:
                    self._pool.putconn(pooled)
        except psycopg_pool.PoolTimeout as exc:
            raise unavailable(self.conninfo, exc) from exc
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
    ) -> Message:
        """Builds a message (its id chosen now) without sending it; ``msg.push()`` sends it."""
        fields = calls.new_message_fields(
            topic, payload, json, priority, dedup_key, max_attempts, id
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
        priority: int = 0,
        dedup_key: str | None = None,
        max_attempts: int = 25,
        id: UUID | str | None = None,
        durable: bool = True,
    ) -> UUID:
        """Enqueues one message and returns its id (see :meth:`Message.push`)."""
        msg = self.new_message(
            topic, payload, json=json, priority=priority, dedup_key=dedup_key,
            max_attempts=max_attempts, id=id,
        )  # fmt: skip
        return msg.push(delay, conn, durable=durable)

    def push_many(
        self,
        topic: str,
        payloads: Sequence[bytes | bytearray | memoryview],
        *,
        delay: checks.Duration = 0,
        priority: int = 0,
        conn: psycopg.Connection[Any] | None = None,
        durable: bool = True,
    ) -> list[UUID]:
        """Enqueues many messages in one statement; their ids, in the order of ``payloads``."""
        suffix = calls.commit_suffix(durable, conn is not None)
        return self._run(calls.push_many(topic, payloads, delay, priority, suffix), conn)

    def pop(self, topic: str, *, lease: checks.Duration = DEFAULT_LEASE) -> Message | None:
        """Leases the next ready message of ``topic`` for ``lease``, or returns None."""
        messages = self.pop_many(topic, 1, lease=lease)
        return messages[0] if messages else None

    def pop_many(
        self, topic: str, n: int, *, lease: checks.Duration = DEFAULT_LEASE
    ) -> list[Message]:
        """Leases up to ``n`` ready messages of ``topic``, in delivery order."""
        rows = self._run(calls.pop(topic, n, lease))
        return [Message.from_row(self, row) for row in rows]

    def complete_many(self, msgs: Sequence[Message]) -> None:
        """Completes popped messages in one statement. Those still leased are completed even
        if some are not; then :class:`LeaseLost` names the ones that were not."""
        self._run(calls.complete_many(msgs))

    def find(self, id: UUID | str) -> Message | None:
        """The message with this id in whatever state, or None if there is none (any more)."""
        rows = self._run(calls.find(id))
        return Message.from_row(self, rows[0]) if rows else None

    def requeue_expired(self) -> int:
        """Requeues messages whose lease expired (discards those out of attempts); how many."""
        return self._run(calls.requeue_expired())

    def cleanup(self, grace: checks.Duration = DEFAULT_GRACE) -> int:
        """Deletes messages that finished more than ``grace`` ago, in short transactions."""
        total = 0
        while (deleted := self._run(calls.cleanup_batch(grace))) == calls.CLEANUP_BATCH:
            total += deleted
        return total + deleted

    def stats(self) -> list[TopicStats]:
        """Counts per topic: ready, scheduled, pending, completed, discarded."""
        return self._run(calls.stats())

    def purge(self, topic: str) -> int:
        """Deletes every message of ``topic`` that is not pending; returns how many."""
        return self._run(calls.purge(topic))

    def workers(self) -> list[WorkerInfo]:
        """The live workers: those that sent a heartbeat within the last minute."""
        return self._run(calls.workers(STALE_AFTER))

    def work(
        self, topics: str | Sequence[str], handler: Callable[[Message], Any], **options: Any
    ) -> None:
        """Runs a :class:`pushpop.Worker` on ``topics`` until it is stopped (see its options)."""
        from .worker import Worker  # the worker builds on this module

        Worker(self, topics, handler, **options).run()

    def migrate(self) -> list[int]:
        """Applies pending SQL migrations; returns the versions applied (none when up to date)."""
        return [m.version for m in migrations.migrate(self.conninfo)]
