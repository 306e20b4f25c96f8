"""The run's settings and its scratch database, created on the chosen server and dropped after."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pushpop import migrations

TOPIC = "bench"


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run (the command-line flags)."""

    rounds: int = 5
    duration: float = 2.0
    """Seconds each throughput measurement lasts, after the warm-up."""
    warmup: float = 0.5
    depth: int = 1_000_000
    """Messages in the big tables of the scaling figures."""
    threads: int = 4
    batch: int = 100
    shallow: int = 1_000
    """Ready messages kept in the topic by the ordinary pop figures."""
    other_topics: int = 100
    payload_size: int = 100
    samples: int = 200
    """Pushes timed per round by the latency figure."""
    bloat_seconds: float = 60.0
    """How long the bloat figure's workload runs (its one round)."""
    quick: bool = False


@dataclass(frozen=True)
class Env:
    """What a measurement needs: the scratch database and the settings."""

    conninfo: str
    settings: Settings

    @property
    def payload(self) -> bytes:
        """The payload every benchmark message carries."""
        return b"x" * self.settings.payload_size

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the scratch database."""
        return psycopg.connect(self.conninfo, autocommit=True)

    @contextlib.contextmanager
    def connections(self, n: int) -> Iterator[list[psycopg.Connection[Any]]]:
        """n connections, one per thread, closed at exit."""
        conns: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(n):
                conns.append(self.connect())
            yield conns
        finally:
            for conn in conns:
                conn.close()


@contextlib.contextmanager
def scratch_database(server: str, suffix: str = "") -> Iterator[str]:
    """Creates a database of its own on the server, migrated; yields its conninfo; drops it."""
    name = f"pushpop_bench_{os.getpid()}{suffix}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        conninfo = make_conninfo(server, dbname=name)
        migrations.migrate(conninfo)
        yield conninfo
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_facts(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The server settings that shape the figures, for the report."""
    names = [
        "server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_sync_method",
        "autovacuum", "max_connections", "jit",
    ]  # fmt: skip
    rows = conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
        [names],
    ).fetchall()
    return {str(name): str(value) for name, value in rows}
