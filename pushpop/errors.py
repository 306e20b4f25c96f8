"""Everything pushpop raises derives from :class:`Error`."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors


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


class DatabaseError(Error):
    """PostgreSQL refused or failed a call; the psycopg error is the ``__cause__``."""


class PermissionDenied(DatabaseError):
    """The database role may not make this call: it lacks the pushpop role that grants it."""


class Unavailable(DatabaseError):
    """No usable connection to PostgreSQL (down, unreachable, or the connection broke)."""


class MigrationError(Error):
    """The schema could not be brought up to date."""


def from_psycopg(exc: psycopg.Error) -> Error:
    """Translate a psycopg error into the pushpop error that says what it means."""
    if isinstance(exc, pg_errors.InvalidParameterValue):
        # Raised by the SQL functions' own argument checks: "pushpop: topic must be ...".
        return InvalidArgument(exc.diag.message_primary or str(exc))
    if isinstance(exc, pg_errors.ProgramLimitExceeded):
        message = exc.diag.message_primary or str(exc)
        if message.startswith("pushpop: payload"):  # push and push_many's size limit
            return PayloadTooLarge(message)
        return DatabaseError(f"database error: {_first_line(exc)}")
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return PermissionDenied(
            f"{_first_line(exc)} (the database role needs pushpop_producer, pushpop_consumer "
            "or pushpop_admin: see the README's Security and roles)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(f"database unavailable: {_first_line(exc)}")
    return DatabaseError(f"database error: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
