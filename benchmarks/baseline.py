"""The yardstick: the same work as pushpop, written by hand as plain psycopg statements.

A plain table with pushpop's columns and a comparable partial index for pop; every
statement is one round trip, autocommit, exactly what a careful hand-rolled queue would send.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg

from .env import TOPIC, Env
from .runner import Op

LEASE = timedelta(minutes=5)

SCHEMA = """
CREATE SCHEMA baseline;
CREATE TABLE baseline.jobs (
    id           uuid PRIMARY KEY,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    state_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    priority     integer NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    lease        uuid,
    state        text NOT NULL,
    topic        text NOT NULL,
    dedup_key    text,
    error        text,
    payload      bytea NOT NULL
);
CREATE INDEX jobs_ready ON baseline.jobs (topic, priority DESC, state_time, seq)
    WHERE state = 'ready';
"""

_INSERT = (
    "INSERT INTO baseline.jobs (id, topic, state, state_time, payload)"
    " VALUES (%(id)s, %(topic)s, 'ready', now(), %(payload)s) RETURNING id"
)
PUSH_PLAIN = _INSERT
NOT_DURABLE = ", set_config('synchronous_commit', 'off', true)"
PUSH = (
    "WITH added AS (" + _INSERT + ") SELECT a.id, pg_notify('baseline', %(topic)s) FROM added AS a"
)
PUSH_MANY = """
WITH added AS (
    INSERT INTO baseline.jobs (id, topic, state, state_time, payload)
    SELECT gen_random_uuid(), %(topic)s, 'ready', now(), p.payload
    FROM unnest(%(payloads)s::bytea[]) AS p(payload)
    RETURNING id
)
SELECT s.ids, pg_notify('baseline', %(topic)s)
FROM (SELECT array_agg(a.id) AS ids FROM added AS a) AS s
"""
_COLUMNS = (
    "j.id, j.topic, j.state, j.state_time, j.payload, j.priority, j.attempts,"
    " j.max_attempts, j.lease, j.created_at, j.error, j.dedup_key"
)
_PICK = (
    "SELECT r.id FROM baseline.jobs AS r WHERE r.state = 'ready' AND r.topic = %(topic)s"
    " ORDER BY r.priority DESC, r.state_time, r.seq LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)
_TAKE = (
    "UPDATE baseline.jobs AS j"
    " SET state = 'pending', state_time = now() + %(lease)s, attempts = j.attempts + 1,"
    " lease = gen_random_uuid()"
)
POP = _TAKE + " WHERE j.id = (" + _PICK + ") RETURNING " + _COLUMNS
POP_MANY = _TAKE + " WHERE j.id = ANY(ARRAY(" + _PICK + ")) RETURNING " + _COLUMNS
COMPLETE = (
    "UPDATE baseline.jobs SET state = 'completed', state_time = now(), lease = NULL"
    " WHERE id = %(id)s AND lease = %(lease)s AND state = 'pending'"
)
COMPLETE_MANY = (
    "UPDATE baseline.jobs AS j SET state = 'completed', state_time = now(), lease = NULL"
    " FROM unnest(%(ids)s::uuid[], %(leases)s::uuid[]) AS d(id, lease)"
    " WHERE j.id = d.id AND j.lease = d.lease AND j.state = 'pending'"
)
STATS = """
SELECT topic,
       count(*) FILTER (WHERE state = 'ready'),
       count(*) FILTER (WHERE state = 'pending'),
       count(*) FILTER (WHERE state = 'completed'),
       min(state_time) FILTER (WHERE state = 'ready')
FROM baseline.jobs GROUP BY topic ORDER BY topic
"""


def create(conn: psycopg.Connection[Any]) -> None:
    """Creates the baseline's schema and table."""
    conn.execute(SCHEMA)


def push(conn: psycopg.Connection[Any], env: Env, notify: bool = True, durable: bool = True) -> Op:
    """INSERT one message (and NOTIFY in the same statement, as pushpop does); not durable:
    its transaction commits with synchronous_commit off, as pushpop's durable=False push."""
    query = (PUSH if notify else PUSH_PLAIN) + ("" if durable else NOT_DURABLE)
    payload = env.payload

    def op() -> int:
        conn.execute(query, {"id": uuid.uuid4(), "topic": TOPIC, "payload": payload}).fetchall()
        return 1

    return op


def push_many(conn: psycopg.Connection[Any], env: Env) -> Op:
    """One multi-row INSERT of a batch, with one NOTIFY."""
    payloads = [env.payload] * env.settings.batch

    def op() -> int:
        conn.execute(PUSH_MANY, {"topic": TOPIC, "payloads": payloads}).fetchall()
        return len(payloads)

    return op


def _completed(cur: psycopg.Cursor[Any], expected: int) -> None:
    if cur.rowcount != expected:
        raise RuntimeError(f"baseline completed {cur.rowcount} of {expected} messages")


def pop_complete(conn: psycopg.Connection[Any], env: Env) -> Op:
    """UPDATE ... SKIP LOCKED to take one message, then a fenced UPDATE to complete it."""
    params = {"topic": TOPIC, "lease": LEASE, "n": 1}

    def op() -> int:
        row = conn.execute(POP, params).fetchone()
        if row is None:
            return 0
        _completed(conn.execute(COMPLETE, {"id": row[0], "lease": row[8]}), 1)
        return 1

    return op


def pop_many_complete(conn: psycopg.Connection[Any], env: Env) -> Op:
    """Take a batch with one UPDATE, complete it with one more."""
    params = {"topic": TOPIC, "lease": LEASE, "n": env.settings.batch}

    def op() -> int:
        rows = conn.execute(POP_MANY, params).fetchall()
        if rows:
            ids = [row[0] for row in rows]
            leases = [row[8] for row in rows]
            _completed(conn.execute(COMPLETE_MANY, {"ids": ids, "leases": leases}), len(rows))
        return len(rows)

    return op


def stats(conn: psycopg.Connection[Any]) -> None:
    """Per-topic counts by state, the hand-written way."""
    conn.execute(STATS).fetchall()
