"""Fills both sides' tables fast (INSERT ... SELECT, never a push at a time) and tops them up."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from .env import TOPIC, Env

PUSHPOP = ("pushpop", "messages")
BASELINE = ("baseline", "jobs")
Table = tuple[str, str]

# Ready messages look a minute old, so they go before anything pushed during a run;
# finished ones finished within the last hour, well inside cleanup's default grace.
_LOAD = """
INSERT INTO {table} (id, topic, state, state_time, payload)
SELECT gen_random_uuid(), t.topic, %(state)s,
       CASE WHEN %(state)s = 'ready' THEN now() - interval '1 minute'
            ELSE now() - random() * interval '1 hour' END,
       %(payload)s
FROM unnest(%(topics)s::text[]) AS t(topic), generate_series(1, %(n)s) AS g
"""
# A top-up goes behind everything already queued, as a producer's push would.
_REFILL = """
INSERT INTO {table} (id, topic, state, state_time, payload)
SELECT gen_random_uuid(), %(topic)s, 'ready', now(), %(payload)s FROM generate_series(1, %(n)s)
"""


def _sql(template: str, table: Table) -> sql.Composed:
    return sql.SQL(template).format(table=sql.Identifier(*table))


def reset(env: Env) -> None:
    """Empties both tables."""
    with env.connect() as conn:
        conn.execute("TRUNCATE pushpop.messages, baseline.jobs RESTART IDENTITY")


def load(
    env: Env, table: Table, state: str, per_topic: int, topics: Sequence[str] = (TOPIC,)
) -> None:
    """Inserts per_topic messages in the given state into each topic of one table."""
    with env.connect() as conn:
        params = {"state": state, "payload": env.payload, "topics": list(topics), "n": per_topic}
        conn.execute(_sql(_LOAD, table), params)


def load_both(env: Env, state: str, per_topic: int, topics: Sequence[str] = (TOPIC,)) -> None:
    """The same messages on both sides."""
    for table in (PUSHPOP, BASELINE):
        load(env, table, state, per_topic, topics)


def settle(env: Env) -> None:
    """Vacuums and analyzes both tables and checkpoints, so a load leaves no debt behind it."""
    with env.connect() as conn:
        conn.execute("VACUUM (ANALYZE) pushpop.messages, baseline.jobs")
        # Without the privilege, the next checkpoint may land inside a measurement.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


class Refill:
    """Queues as many new ready messages as consumers took, so a topic keeps its depth."""

    def __init__(self, env: Env, table: Table) -> None:
        self._conn: psycopg.Connection[Any] = env.connect()
        self._sql = _sql(_REFILL, table)
        self._payload = env.payload
        self._added = 0

    def __call__(self, consumed: int) -> None:
        missing = consumed - self._added
        if missing > 0:
            self._conn.execute(self._sql, {"topic": TOPIC, "payload": self._payload, "n": missing})
            self._added += missing

    def close(self) -> None:
        """Closes its connection."""
        self._conn.close()
