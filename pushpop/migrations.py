"""Applies the numbered SQL files in ``sql/`` that a database has not seen yet.

Each file is a complete transaction that records itself in ``pushpop.schema_migrations``,
so files applied with psql and files applied here are the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import calls
from .errors import MigrationError, from_psycopg

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path

    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")


def sql_dir() -> Path:
    """The folder of migration files: inside the installed package, or the repository's ``sql/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"pushpop's SQL files are missing: looked in {here / 'sql'}")


def available() -> list[Migration]:
    """Every migration file, in version order."""
    found = []
    for path in sorted(sql_dir().glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files are not numbered 1..n without gaps: {versions}")
    return found


def applied(conn: psycopg.Connection[Any]) -> set[int]:
    """Versions recorded in the database (empty before the first migration)."""
    exists = conn.execute(calls.MIGRATIONS_TABLE_EXISTS).fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute(calls.APPLIED_MIGRATIONS)}


def migrate(conninfo: str) -> list[Migration]:
    """Applies every pending migration, in order, and returns those it applied.

    Holds an advisory lock for the whole run, so concurrent migrators take turns and the
    later ones find nothing left to do.
    """
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(calls.MIGRATION_LOCK)
            try:
                done = applied(conn)
                pending = [m for m in available() if m.version not in done]
                for migration in pending:
                    _apply(conn, migration)
                return pending
            finally:
                if not conn.closed:
                    conn.execute(calls.MIGRATION_UNLOCK)
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    try:
        # The file carries its own BEGIN/COMMIT, exactly as psql runs it.
        conn.execute(migration.sql().encode())
    except psycopg.Error as exc:
        conn.rollback()  # leave the aborted transaction the file began
        raise MigrationError(
            f"migration {migration.path.name} failed: {str(exc).strip().splitlines()[0]}"
        ) from exc
    if migration.version not in applied(conn):
        raise MigrationError(f"migration {migration.path.name} did not record itself")
