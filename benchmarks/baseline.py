"""The yardstick: the same work as pushpop, written by hand as plain psycopg statements.

A plain table with pushpop's columns and a comparable partial index for pop; every
statement is one round trip, autocommit, exactly what a careful hand-rolled queue would send.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
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
CREATE TABLE baseline.bare (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lease   integer,
    payload bytea NOT NULL
);
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


# -- the ceiling: pgbench (a C client) on the bare table -----------------------------------

CEILING_SCRIPT = """
\\set lease random(1, 2000000000)
BEGIN;
WITH taken AS (
    UPDATE baseline.bare SET lease = :lease WHERE id = ANY(ARRAY(
        SELECT id FROM baseline.bare WHERE lease IS NULL ORDER BY id LIMIT {n}
        FOR UPDATE SKIP LOCKED))
    RETURNING id
) SELECT coalesce(array_agg(id), '{{}}') AS ids FROM taken \\gset
DELETE FROM baseline.bare WHERE id = ANY(:ids::bigint[]);
COMMIT;
"""
"""Pop (UPDATE ... SKIP LOCKED) and acknowledge (DELETE) up to n rows in one transaction."""
CEILING_LOAD = (
    "INSERT INTO baseline.bare (payload) SELECT %(payload)s FROM generate_series(1, %(n)s)"
)
CEILING_FIRST_LOAD = 200_000
"""Rows loaded per second of the first pgbench run of a kind: more than it can take."""
_ceilings: dict[tuple[int, int], float] = {}
"""The fastest rate of each kind of run (clients, batch) so far: later runs load twice that,
so loading writes no more than it must (its WAL brings checkpoints into the other figures)."""
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


def has_pgbench() -> bool:
    """Whether pgbench is on the PATH (an embedded server may come without it)."""
    return shutil.which("pgbench") is not None


def _pgbench() -> str:
    path = shutil.which("pgbench")
    if path is None:
        raise RuntimeError("the ceiling needs pgbench on the PATH")
    return path


def ceiling(env: Env, clients: int, batch: int) -> float:
    """Rows a second that ``clients`` pgbench connections pop and delete, ``batch`` rows a
    transaction, on a table with nothing but an id: what the server does with no client work.
    A run that empties the table measured too little: it runs again with more rows."""
    kind = (clients, batch)
    while (rate := _ceiling_run(env, clients, batch, 2 * _ceilings.get(kind, 0))) is None:
        pass
    return rate


def pgbench(env: Env, script: str, clients: int, seconds: int) -> tuple[float, int]:
    """Runs ``script`` on ``clients`` pgbench connections for ``seconds`` (prepared statements,
    a payload of the run's size in ``:payload``): its transactions a second (connecting
    excluded) and how many it ran."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script, encoding="utf-8")
        out = subprocess.run(
            [_pgbench(), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
             "-T", str(seconds), "-D", f"payload={env.payload.hex()}", "-f", str(path),
             env.conninfo],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    tps, done = _TPS.search(out), _DONE.search(out)
    if tps is None or done is None:
        raise RuntimeError(f"pgbench printed no rate:\n{out}")
    return float(tps[1]), int(done[1])


def _ceiling_run(env: Env, clients: int, batch: int, per_second: float) -> float | None:
    seconds = max(1, math.ceil(env.settings.duration))
    with env.connect() as conn:
        conn.execute("TRUNCATE baseline.bare")
        n = int((per_second or CEILING_FIRST_LOAD) * seconds)
        conn.execute(CEILING_LOAD, {"payload": env.payload, "n": n})
        conn.execute("VACUUM (ANALYZE) baseline.bare")
    tps, done = pgbench(env, CEILING_SCRIPT.format(n=batch), clients, seconds)
    with env.connect() as conn:
        left = _count(conn)
    # The rows it took over the time its transactions took (connecting excluded).
    rate = (n - left) * tps / done
    kind = (clients, batch)
    _ceilings[kind] = max(rate, _ceilings.get(kind, 0.0))
    return rate if left else None


# What the server does for one push, without a client's work: pgbench calling pushpop.push,
# against a bare INSERT into the table with nothing but an id.
PUSH_SCRIPTS = {
    "pushpop": f"SELECT pushpop.push('{TOPIC}', decode(:payload, 'hex'));\n",
    "bare": "INSERT INTO baseline.bare (payload) VALUES (decode(:payload, 'hex'));\n",
}


def server_push(env: Env, which: str) -> float:
    """Pushes a second from ``env.settings.threads`` pgbench clients: pushpop.push or the bare
    INSERT (``which``), each its own transaction."""
    seconds = max(1, math.ceil(env.settings.duration))
    tps, _ = pgbench(env, PUSH_SCRIPTS[which], env.settings.threads, seconds)
    return tps


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM baseline.bare").fetchone()
    return int(row[0]) if row else 0
