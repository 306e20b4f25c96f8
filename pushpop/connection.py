"""Reaching the database: the connection string, what a failed connection means, the pool's logs.

Both clients, the workers' control connection and the command line use these, so a
connection string is read, checked and kept out of messages the same way everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import calls, migrations
from .errors import DatabaseError, InvalidArgument, InvalidType, Unavailable

log = logging.getLogger("pushpop")

POOL_NAME = "pushpop"
"""What the clients name their pools; psycopg_pool names its threads after it."""


def resolve_dsn(dsn: str | None) -> str:
    """``dsn`` if given, else ``DATABASE_URL``, else "": libpq's defaults (PGHOST, ...)."""
    if dsn is not None:
        if not isinstance(dsn, str):
            raise InvalidType(f"dsn must be a str or None, got {type(dsn).__name__}")
        return dsn
    return os.environ.get("DATABASE_URL", "")


def checked_conninfo(dsn: str | None, **defaults: Any) -> str:
    """:func:`resolve_dsn`, refusing a malformed string at once without quoting any piece of it
    (libpq's complaint, "missing = after ...", may hold part of a password); ``defaults`` are
    added where the string does not set them."""
    conninfo = resolve_dsn(dsn)
    try:
        given = conninfo_to_dict(conninfo)
        missing = {key: value for key, value in defaults.items() if key not in given}
        return make_conninfo(conninfo, **missing) if missing else conninfo
    except psycopg.ProgrammingError as exc:
        raise InvalidArgument(f"invalid connection string: {_problem(exc)}") from None


def _problem(exc: Exception) -> str:
    """libpq's complaint about a connection string, minus any quoted piece of the string."""
    reason = " ".join(str(exc).split())
    if reason.startswith(("invalid connection option", "invalid URI query parameter")):
        return reason  # these quote an option name, never a value
    return re.sub(r'"[^"]*"', '"..."', reason)


def redact(text: str, conninfo: str) -> str:
    """``text`` with the connection string's password masked, should a message ever echo it."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return text
    return text.replace(str(password), "***") if password else text


def _reason(exc: psycopg.Error, conninfo: str) -> str:
    return redact(" ".join(str(exc).split()), conninfo)


def try_once(conninfo: str, timeout: float) -> None:
    """Connects once, before a pool opens: raises :class:`DatabaseError` at once for a failure
    that retrying cannot mend, and lets any other pass (the server may yet come up).

    libpq gives a failed connection no SQLSTATE, so what cannot be mended is read from what it
    does say: the server wanted a password (none was given, or it was refused), or it lets
    this role into ``template1`` but not into the database named (missing, or closed to it).
    """
    seconds = max(1, math.ceil(min(timeout, 10.0)))
    try:
        with psycopg.connect(conninfo, connect_timeout=seconds, autocommit=True) as conn:
            compare_schema(conn)
    except psycopg.OperationalError as exc:
        if _password_refused(exc) or _only_this_database_refuses(conninfo, seconds):
            raise DatabaseError(
                f"cannot connect to the database: {_reason(exc, conninfo)}"
            ) from exc


def compare_schema(conn: psycopg.Connection[Any]) -> None:
    """Warns when the database's pushpop schema is not the one this package installs: a newer
    one (upgrade the package) or an older one (run ``pushpop migrate``)."""
    try:
        if conn.execute(calls.MAY_ASK_SCHEMA_VERSION).fetchone() != (True,):
            return  # not installed (every call will say so), or not a pushpop role
        row = conn.execute(calls.SCHEMA_VERSION).fetchone()
    except psycopg.Error:
        return  # only a courtesy: the calls themselves report what is wrong
    found, known = (row[0] if row else None) or 0, len(migrations.available())
    if found > known:
        log.warning(
            "the database has pushpop schema version %d, newer than this pushpop knows (%d): "
            "upgrade the pushpop package", found, known,
        )  # fmt: skip
    elif found < known:
        log.warning(
            "the database has pushpop schema version %d, older than this pushpop's (%d): "
            "run `pushpop migrate`", found, known,
        )  # fmt: skip


def _password_refused(exc: psycopg.OperationalError) -> bool:
    pgconn = exc.pgconn
    return pgconn is not None and bool(pgconn.needs_password or pgconn.used_password)


def _only_this_database_refuses(conninfo: str, seconds: int) -> bool:
    if conninfo_to_dict(conninfo).get("dbname") == "template1":
        return False
    try:
        psycopg.connect(
            make_conninfo(conninfo, dbname="template1"), connect_timeout=seconds
        ).close()
    except psycopg.Error:
        return False
    return True


def unavailable(conninfo: str, exc: Exception) -> Unavailable:
    """Explains a pool timeout by trying one direct connection, whose error names the cause."""
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.Error as direct:
        return Unavailable(f"cannot connect to the database: {_reason(direct, conninfo)}")
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
    """Whether callers wait for a connection or the pool is below its minimum size: then a
    reconnection attempt that gave up is started afresh (the clients' ``_keep_reconnecting``)."""
    stats = pool.get_stats()
    return stats.get("requests_waiting", 0) > 0 or stats.get("pool_size", 0) < pool.min_size


class _PoolLogs(logging.Filter):
    """Moves the records of pushpop's pools from ``psycopg.pool`` to ``pushpop.pool``, at DEBUG.

    A library stays quiet unless the application configures logging; the pool would print each
    failed connection attempt, and pushpop's own errors and worker logs tell the same story.
    """

    def __init__(self) -> None:
        super().__init__()
        self.target = logging.getLogger("pushpop.pool")

    def filter(self, record: logging.LogRecord) -> bool:
        if not _from_our_pool(record):
            return True
        if self.target.isEnabledFor(logging.DEBUG):
            self.target.debug("%s", record.getMessage())
        return False


def _from_our_pool(record: logging.LogRecord) -> bool:
    """Whether a pool's log record is about a pool of pushpop's: named in the record, or
    logged from one of the threads psycopg_pool names after the pool."""
    args = record.args
    if isinstance(args, tuple) and args and args[0] == POOL_NAME:
        return True
    return (record.threadName or "").startswith((f"{POOL_NAME}-worker-", f"{POOL_NAME}-scheduler"))


_POOL_LOGS = _PoolLogs()


def quiet_pool_logs() -> None:
    """Routes the logs of pushpop's pools to ``pushpop.pool`` (see :class:`_PoolLogs`); once."""
    logging.getLogger("psycopg.pool").addFilter(_POOL_LOGS)
