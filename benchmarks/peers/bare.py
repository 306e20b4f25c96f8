"""The bare SQL a queue needs at least, on a minimal table, sent from Python with psycopg.

It is the ceiling a Python client of PostgreSQL can reach: no library, each statement one
round trip and its own committed transaction. pgbench sends the same statements from C.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from ..latency import Pickups
from .common import Config, Peer, connect, connections, sample_pickups, scratch_database
from .common import timed_threads as timed

SCHEMA = """
CREATE TABLE peer_queue (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    taken_at timestamptz,
    payload  text NOT NULL
)
"""
PUSH = "INSERT INTO peer_queue (payload) VALUES (%s)"
PUSH_MANY = "INSERT INTO peer_queue (payload) SELECT unnest(%s::text[])"
PUSH_NOTIFY = (
    "WITH added AS (INSERT INTO peer_queue (payload) VALUES (%s) RETURNING id)"
    " SELECT pg_notify('peer_queue', '') FROM added"
)
_PICK = (
    "SELECT id FROM peer_queue WHERE taken_at IS NULL ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED"
)
POP = (
    "UPDATE peer_queue SET taken_at = now() WHERE id = (" + _PICK.format(n=1) + ")"
    " RETURNING id, payload"
)
POP_MANY = (
    "UPDATE peer_queue SET taken_at = now() WHERE id = ANY(ARRAY(" + _PICK.format(n="%s") + "))"
    " RETURNING id, payload"
)
ACK = "DELETE FROM peer_queue WHERE id = %s"
ACK_MANY = "DELETE FROM peer_queue WHERE id = ANY(%s)"
FILL = "INSERT INTO peer_queue (payload) SELECT %s FROM generate_series(1, %s)"


@contextlib.contextmanager
def table_database(config: Config, suffix: str) -> Iterator[str]:
    """A scratch database holding the minimal queue table."""
    with scratch_database(config.server, suffix) as conninfo:
        with connect(conninfo) as conn:
            conn.execute(SCHEMA)
        yield conninfo


def reset(conninfo: str, fill: int = 0, payload: str = "") -> None:
    """Empties the table, then puts ``fill`` ready rows in it."""
    with connect(conninfo) as conn:
        conn.execute("TRUNCATE peer_queue")
        if fill:
            conn.execute(FILL, [payload, fill])


def left(conninfo: str) -> int:
    """Rows in the table: none after a consuming measurement took every message."""
    with connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM peer_queue").fetchone()
    return int(row[0]) if row else 0


class Psycopg(Peer):
    """The bare statements from Python threads, one connection each."""

    name = "psycopg"
    label = "Python + psycopg, bare SQL"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""

    def version(self) -> str:
        """psycopg's version and whether its C build is in use."""
        return f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})"

    def notes(self) -> str:
        """The statements."""
        c = self.config
        return (
            f"{c.threads} threads, one autocommit connection each. push: `{PUSH}`; "
            f"batch: `{PUSH_MANY}` with {c.batch} payloads. pop: `UPDATE peer_queue SET "
            "taken_at = now() WHERE id = (SELECT id ... WHERE taken_at IS NULL ORDER BY id "
            "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, payload`, then `DELETE ... WHERE "
            f"id = %s` as the ack; batch: the same with `LIMIT {c.batch}` and `id = ANY(...)`. "
            "Pickup: the consumer LISTENs and pops when notified; the producer's INSERT "
            "calls `pg_notify` in the same statement."
        )

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with the table."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with table_database(self.config, "psycopg") as conninfo:
                self.conninfo = conninfo
                yield

        return run()

    def _produce(self, op: Callable[[psycopg.Connection[Any]], object], calls: int) -> float:
        reset(self.conninfo)
        with connections(self.conninfo, self.config.threads) as conns:

            def body(conn: psycopg.Connection[Any]) -> Callable[[], None]:
                def work() -> None:
                    for _ in range(calls):
                        op(conn)

                return work

            seconds = timed([body(conn) for conn in conns])
        if left(self.conninfo) != self.config.total:
            raise RuntimeError("the producers did not insert every message")
        return self.config.total / seconds

    def _consume(self, op: Callable[[psycopg.Connection[Any]], int]) -> float:
        reset(self.conninfo, self.config.total, self.config.text_payload)
        with connections(self.conninfo, self.config.threads) as conns:

            def body(conn: psycopg.Connection[Any]) -> Callable[[], None]:
                def drain() -> None:
                    while op(conn):
                        pass

                return drain

            seconds = timed([body(conn) for conn in conns])
        if left(self.conninfo):
            raise RuntimeError("the consumers left messages behind")
        return self.config.total / seconds

    def push(self) -> float:
        """INSERT of one row per call."""
        payload = self.config.text_payload
        return self._produce(lambda c: c.execute(PUSH, [payload]), self.config.per_thread)

    def push_batch(self) -> float:
        """INSERT ... SELECT unnest(payloads) of a batch per call."""
        payloads = [self.config.text_payload] * self.config.batch
        calls = self.config.per_thread // self.config.batch
        return self._produce(lambda c: c.execute(PUSH_MANY, [payloads]), calls)

    def pop(self) -> float:
        """UPDATE ... SKIP LOCKED of one row, then its DELETE."""

        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(POP).fetchone()
            if row is None:
                return 0
            conn.execute(ACK, [row[0]])
            return 1

        return self._consume(op)

    def pop_batch(self) -> float:
        """The same, a batch of rows at a time."""
        n = self.config.batch

        def op(conn: psycopg.Connection[Any]) -> int:
            ids = [row[0] for row in conn.execute(POP_MANY, [n]).fetchall()]
            if ids:
                conn.execute(ACK_MANY, [ids])
            return len(ids)

        return self._consume(op)

    def latency(self) -> list[float]:
        """A LISTENing thread that pops when notified; INSERT + pg_notify pushes."""
        reset(self.conninfo)
        pickups, listening, stop = Pickups(), threading.Event(), threading.Event()

        def consume() -> None:
            with connect(self.conninfo) as conn:
                conn.execute("LISTEN peer_queue")
                listening.set()
                while not stop.is_set():
                    if not list(conn.notifies(timeout=0.25, stop_after=1)):
                        continue
                    while (row := conn.execute(POP).fetchone()) is not None:
                        pickups()
                        conn.execute(ACK, [row[0]])

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            if not listening.wait(10):
                raise RuntimeError("the consumer did not LISTEN in time")
            payload = self.config.text_payload
            with connect(self.conninfo) as conn:
                return sample_pickups(
                    lambda: conn.execute(PUSH_NOTIFY, [payload]), pickups, self.config.samples
                )
        finally:
            stop.set()
            thread.join()
