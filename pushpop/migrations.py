"""Installs or upgrades pushpop's schema from the SQL files under ``sql/``, in one transaction.

In order: ``prelude.sql`` (schema, bookkeeping, the migration lock); ``upgrade/prerelease.sql``
for a database of the pre-release layout; each numbered file of ``migrations/`` the database
has not recorded (each records itself); then every file of ``functions/``, whenever their
checksum differs from the one recorded. ``sql/install.sql`` does the same from psql. Asked
to, it then shards the queue over a Citus cluster (``pushpop.distribute()``) in that same
transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pg_errors

from .errors import MigrationError, from_psycopg

_NUMBERED = re.compile(r"^(\d{4})_(\w+)\.sql$")

# What the runner asks the database, after the prelude has made the bookkeeping tables.
_IS_PRERELEASE: LiteralString = (
    "SELECT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 1 AND name = 'core')"
)
_APPLIED: LiteralString = "SELECT version FROM pushpop.schema_migrations"
_FUNCTIONS_CHECKSUM: LiteralString = "SELECT checksum FROM pushpop.schema_functions"
_FORGET_FUNCTIONS: LiteralString = "DELETE FROM pushpop.schema_functions"
_RECORD_FUNCTIONS: LiteralString = "INSERT INTO pushpop.schema_functions (checksum) VALUES (%s)"
# True when it sharded the queue now, false when it was sharded already; raises without Citus.
_DISTRIBUTE: LiteralString = "SELECT pushpop.distribute(shard_count => %s)"
# How many shards a queue distributed by the migrator gets, as distribute()'s own default.
SHARD_COUNT = 32
# A concurrent first install: both migrators created the schema; the later one fails on the
# catalog's unique index, and finds the schema made when it tries again.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    """What a migration did: the SQL files applied, and whether it distributed the queue."""

    applied: list[str]
    # True: distributed by this migration; False: it was already; None: not asked to.
    distributed: bool | None = None


@dataclass(frozen=True)
class Migration:
    """One numbered file of ``sql/migrations/``: a stateful change, applied once."""

    version: int
    name: str
    path: Path


def sql_dir() -> Path:
    """The SQL files: inside the installed package, or the repository's ``sql/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"pushpop's SQL files are missing: looked in {here / 'sql'}")


def available() -> list[Migration]:
    """Every numbered migration, in version order."""
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _NUMBERED.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files are not numbered 1..n without gaps: {versions}")
    return found


def function_files() -> list[Path]:
    """The files that hold every function's current text, in the order they are applied."""
    return sorted((sql_dir() / "functions").glob("*.sql"))


def functions_checksum(files: list[Path]) -> str:
    """One SHA-256 over the function files' names and text: any change applies them all."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def relative(path: Path) -> str:
    """A SQL file's name as the runner reports it, e.g. ``migrations/0001_baseline.sql``."""
    return path.relative_to(sql_dir()).as_posix()


def migrate(
    conninfo: str, *, distributed: bool = False, shard_count: int = SHARD_COUNT
) -> list[str]:
    """Brings the database's schema up to date; returns the files applied (none if current).

    Everything happens in one transaction, so a failure leaves nothing half done. Concurrent
    migrators take turns (the prelude's lock) and the later ones find nothing left to do. With
    ``distributed``, see :func:`migrate_distributed`.
    """
    if distributed:
        return migrate_distributed(conninfo, shard_count).applied
    return _attempt(conninfo, None).applied


def migrate_distributed(conninfo: str, shard_count: int = SHARD_COUNT) -> Outcome:
    """Migrates as :func:`migrate` does, then shards the queue over the Citus cluster in
    ``shard_count`` shards (``pushpop.distribute()``), in the same transaction.

    A no-op for a queue distributed already (``Outcome.distributed`` is False then). Without
    Citus it raises MigrationError with the database's reason, and nothing of the migration is
    applied either.
    """
    return _attempt(conninfo, shard_count)


def _attempt(conninfo: str, shard_count: int | None) -> Outcome:
    """Runs the migration, trying again after a concurrent first install."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with psycopg.connect(conninfo) as conn:
                return _migrate(conn, shard_count)
        except pg_errors.UniqueViolation:
            if attempt == _ATTEMPTS:
                raise
        except psycopg.Error as exc:
            if _connection_lost(exc):
                raise from_psycopg(exc) from exc  # Unavailable
            raise MigrationError(f"migration failed: {_explain(exc)}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _migrate(conn: psycopg.Connection[Any], shard_count: int | None) -> Outcome:
    applied: list[str] = []
    distributed: bool | None = None
    with conn.transaction():
        _run(conn, sql_dir() / "prelude.sql")
        if _one(conn, _IS_PRERELEASE):
            applied.append(_run(conn, sql_dir() / "upgrade" / "prerelease.sql"))
        done = {row[0] for row in conn.execute(_APPLIED)}
        known = available()
        newer = sorted(done - {m.version for m in known})
        if newer:
            raise MigrationError(
                f"the database has pushpop migration {newer[-1]}, newer than this pushpop knows "
                f"(up to {len(known)}): upgrade the pushpop package instead of migrating down"
            )
        for migration in known:
            if migration.version not in done:
                applied.append(_run(conn, migration.path))
                recorded = conn.execute(_APPLIED + " WHERE version = %s", [migration.version])
                if recorded.rowcount != 1:
                    raise MigrationError(f"{relative(migration.path)} did not record itself")
        files = function_files()
        checksum = functions_checksum(files)
        if _one(conn, _FUNCTIONS_CHECKSUM) != checksum:
            applied += [_run(conn, path) for path in files]
            conn.execute(_FORGET_FUNCTIONS)
            conn.execute(_RECORD_FUNCTIONS, [checksum])
        if shard_count is not None:
            distributed = bool(_one(conn, _DISTRIBUTE, [shard_count]))
    return Outcome(applied, distributed)


def _one(
    conn: psycopg.Connection[Any], query: LiteralString, params: list[Any] | None = None
) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _run(conn: psycopg.Connection[Any], path: Path) -> str:
    """Runs one SQL file inside the migration's transaction; returns its relative name."""
    try:
        conn.execute(path.read_bytes())
    except pg_errors.UniqueViolation:
        raise  # a concurrent first install: migrate() tries again
    except psycopg.Error as exc:
        raise MigrationError(f"{relative(path)} failed: {_explain(exc)}") from exc
    return relative(path)


def _connection_lost(exc: psycopg.Error) -> bool:
    """Whether the database could not be reached or went away, rather than refusing a statement.

    psycopg counts refusals such as a lock timeout (55P03) or distribute()'s missing Citus
    (55000) as operational errors too; those are the migration's failures, said as such.
    """
    if not isinstance(exc, psycopg.OperationalError):
        return False
    return exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))


def _explain(exc: psycopg.Error) -> str:
    """The database's complaint, and what to do about it where it says only what failed."""
    problem = _first_line(exc)
    if problem.startswith("pushpop: "):  # pushpop's own refusals say what to do
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        return problem.removeprefix("pushpop: ") + hint
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return (
            f"{problem}: migrate as the role that owns schema pushpop (on a first install, a role "
            "with CREATE on the database, and CREATEROLE until the pushpop roles exist); "
            "pushpop_producer, pushpop_consumer and pushpop_admin cannot migrate"
        )
    if isinstance(exc, pg_errors.LockNotAvailable):
        return (
            f"{problem}: another migration, or a transaction holding pushpop's tables, did not "
            "finish within 30 s; try again"
        )
    return problem


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
