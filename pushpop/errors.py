"""Everything pushpop raises derives from :class:`Error`."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from .constants import ADMIN, CONSUMER, MAINTAINER, PRODUCER


class Error(Exception):
    """Base class of every error pushpop raises."""


class InvalidArgument(Error, ValueError):
    """An argument has the right type but a value pushpop cannot accept."""


class InvalidType(Error, TypeError):
    """An argument has a type pushpop cannot accept."""


class LeaseLost(Error):
    """The message is no longer ours: it finished, or its lease expired and it was redelivered."""


class PayloadTooLarge(InvalidArgument):
    """A payload is larger than the database accepts (``pushpop.max_payload_bytes()``)."""


class ClientClosed(Error):
    """The client was closed: a mistake in the program, which no retry mends."""


class DatabaseError(Error):
    """PostgreSQL refused or failed a call; the psycopg error is the ``__cause__``."""


class PermissionDenied(DatabaseError):
    """The database role may not make this call: it lacks the pushpop role that grants it."""


class NotInstalled(DatabaseError):
    """The database has no pushpop schema (or an older one): ``pushpop migrate`` installs it."""


class Unavailable(DatabaseError):
    """No usable connection to PostgreSQL (down, unreachable, or the connection broke)."""


class MigrationError(Error):
    """The schema could not be brought up to date."""


NOT_INSTALLED = "pushpop is not installed in this database: run `pushpop migrate`"
# The SQL functions' own messages begin so ("pushpop: topic must be ..."); the Python errors
# say it by their type.
_SQL_PREFIX = "pushpop: "


def from_psycopg(exc: psycopg.Error, role: str | None = None) -> Error:
    """Translate a psycopg error into the pushpop error that says what it means; ``role`` is
    the pushpop role that grants the call that failed, when known."""
    if isinstance(exc, pg_errors.InvalidParameterValue):
        # Raised by the SQL functions' own argument checks: "pushpop: topic must be ...".
        return InvalidArgument(_sql_message(exc))
    if isinstance(exc, pg_errors.ProgramLimitExceeded):
        message = _sql_message(exc)
        if message.startswith("payload"):  # push and push_many's size limit
            return PayloadTooLarge(message)
        return DatabaseError(f"database error: {_first_line(exc)}")
    if isinstance(exc, (pg_errors.InvalidSchemaName, pg_errors.UndefinedFunction)):
        return NotInstalled(f"{NOT_INSTALLED} ({_first_line(exc)})")
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        if _is_pushpops_own(exc):  # a refusal of pushpop's SQL, such as a topic not granted
            hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
            return PermissionDenied(_sql_message(exc) + hint)
        return PermissionDenied(
            f"{_first_line(exc)} (the database role needs {_granting(role)}: see docs/security.md)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(f"database unavailable: {_first_line(exc)}")
    return DatabaseError(f"database error: {_first_line(exc)}")


def _granting(role: str | None) -> str:
    """The roles that grant a call: its own role, or pushpop_admin, which grants them all."""
    if role is None:
        return f"{PRODUCER}, {CONSUMER}, {MAINTAINER} or {ADMIN}"
    return role if role == ADMIN else f"{role}, or {ADMIN}"


def _is_pushpops_own(exc: psycopg.Error) -> bool:
    """Whether pushpop's SQL raised the error itself (its messages begin with its name)."""
    return (exc.diag.message_primary or "").startswith(_SQL_PREFIX)


def _sql_message(exc: psycopg.Error) -> str:
    message = exc.diag.message_primary or _first_line(exc)
    return message.removeprefix(_SQL_PREFIX)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
