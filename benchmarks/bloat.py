"""Storage growth: the queue table after a sustained run, against a fresh copy of its live rows.

Producers push only as fast as consumers complete, and maintenance runs as a worker's leader
does it (requeue_expired every 5 s; cleanup every second here, every minute by default): once
with the workers' default grace (a day: the whole run's history stays), once with a grace of a
minute (the live content stays about a minute's worth). What the table gains over a freshly
written copy of its rows is space dead rows filled before (auto)vacuum made it reusable.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from pushpop import Client
from pushpop.worker_common import WorkerSettings

from . import client_ops, data
from .env import Env, Settings
from .figures import TIMES, Figure, Metric, Values
from .runner import Op, throughput

CLEANUP_EVERY = 1.0
REQUEUE_EVERY = WorkerSettings.requeue_interval
GRACES = {"": (timedelta(days=1), "1 day"), "_short": (timedelta(minutes=1), "1 minute")}
"""Metric key suffix -> the cleanup grace of that phase, and how the table names it."""
FRESH = "public.bloat_fresh"
"""The compact copy, made and dropped after the run."""
_FRESH = sql.Identifier("public", "bloat_fresh")


def _setup(env: Env) -> None:
    data.reset(env)
    data.load(env, data.PUSHPOP, "ready", env.settings.shallow)
    data.settle(env)


class Maintenance:
    """Called every few milliseconds by the run; does what a worker's maintenance leader does:
    ``requeue_expired()`` every few seconds, and ``cleanup(grace)`` (here every second)."""

    def __init__(self, client: Client, grace: timedelta) -> None:
        self._client = client
        self._grace = grace
        self._next_cleanup = self._next_requeue = 0.0

    def __call__(self, _handled: int) -> None:
        now = time.monotonic()
        if now >= self._next_requeue:
            self._client.requeue_expired()
            self._next_requeue = now + REQUEUE_EVERY
        if now >= self._next_cleanup:
            self._client.cleanup(grace=self._grace)
            self._next_cleanup = now + CLEANUP_EVERY


def _balanced(client: Client, env: Env) -> list[Op]:
    """Consumers popping and completing flat out, producers pushing one message per completion."""
    completed = threading.Semaphore(0)
    pop, push = client_ops.pop_complete(client), client_ops.push(client, env)

    def consume() -> int:
        if n := pop():
            completed.release(n)
        return n

    def produce() -> int:
        return push() if completed.acquire(timeout=0.05) else 0

    threads = env.settings.threads
    return [consume] * threads + [produce] * threads


def _size(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", [table]).fetchone()
    assert row is not None
    return int(row[0])


def fresh_size(conn: psycopg.Connection[Any]) -> int:
    """Size of a compact copy of pushpop.messages: same rows, definition and storage options.

    LIKE ... INCLUDING ALL copies the columns, constraints and indexes but not the table's
    storage options (its fillfactor), which are set from pg_class; VACUUM FULL then writes
    the rows and builds each index afresh.
    """
    row = conn.execute(
        "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'pushpop.messages'::regclass"
    ).fetchone()
    assert row is not None
    options = sql.SQL(", ").join(sql.SQL(option) for option in row[0])
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_FRESH))
    create = sql.SQL("CREATE TABLE {} (LIKE pushpop.messages INCLUDING ALL)").format(_FRESH)
    if row[0]:
        create = sql.SQL("{} WITH ({})").format(create, options)
    conn.execute(create)
    try:
        conn.execute(
            sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM pushpop.messages").format(
                _FRESH
            )
        )
        conn.execute(sql.SQL("VACUUM FULL {}").format(_FRESH))
        return _size(conn, FRESH)
    finally:
        conn.execute(sql.SQL("DROP TABLE {}").format(_FRESH))


def autovacuums(conn: psycopg.Connection[Any]) -> int:
    """How many times autovacuum has vacuumed pushpop.messages so far."""
    row = conn.execute(
        "SELECT autovacuum_count FROM pg_stat_user_tables"
        " WHERE relid = 'pushpop.messages'::regclass"
    ).fetchone()
    return int(row[0]) if row else 0


def _phase(env: Env, grace: timedelta) -> tuple[int, int, int]:
    """One sustained run from a fresh table: its size after, a fresh copy's, autovacuum runs."""
    s = env.settings
    _setup(env)
    pool = 2 * s.threads + 1  # a connection per thread, and one for cleanup
    with env.connect() as conn:
        vacuumed = autovacuums(conn)
        with Client(env.conninfo, min_size=pool, max_size=pool) as client:
            throughput(_balanced(client, env), 0.0, s.bloat_seconds, Maintenance(client, grace))
        vacuumed = autovacuums(conn) - vacuumed
        return _size(conn, "pushpop.messages"), fresh_size(conn), vacuumed


def _pushpop(env: Env) -> Values:
    values: Values = {}
    for suffix, (grace, _) in GRACES.items():
        after, fresh, vacuumed = _phase(env, grace)
        values |= {
            f"bloat_ratio{suffix}": after / fresh,
            f"bloat_after_kb{suffix}": after / 1024,
            f"bloat_fresh_kb{suffix}": fresh / 1024,
            f"bloat_autovacuums{suffix}": vacuumed,
        }
    return values


def figures(s: Settings) -> list[Figure]:
    """pushpop.messages' size after a sustained push + pop + complete run, against a fresh copy."""
    after = f"table + indexes after {s.bloat_seconds:g} s"
    return [
        Figure(
            "bloat",
            tuple(
                metric
                for suffix, (_, grace) in GRACES.items()
                for metric in (
                    Metric(
                        f"bloat_ratio{suffix}",
                        f"{after}, grace {grace}, vs fresh copy",
                        TIMES,
                        higher_is_better=False,
                    ),
                    Metric(f"bloat_after_kb{suffix}", f"{after}, grace {grace}", "kB", False),
                    Metric(f"bloat_fresh_kb{suffix}", "fresh copy, same rows", "kB", False),
                    Metric(f"bloat_autovacuums{suffix}", "autovacuum runs meanwhile", "runs"),
                )
            ),
            _pushpop,
            None,
            rounds=1,
            note=f"one round; pushpop only: {s.threads} consumers (pop + complete) flat out and "
            f"{s.threads} producers pushing one message per completion, {s.shallow:,} kept "
            "ready, requeue_expired every 5 s and cleanup every second (grace 1 day, the "
            "workers' default, then 1 minute, each from a fresh table), no VACUUM but "
            "autovacuum as the server has it (its naptime is 1 min by default); the fresh copy "
            "holds the same rows with the same definition, written by VACUUM FULL; "
            f"target ≤ 2{TIMES}",
        ),
    ]
