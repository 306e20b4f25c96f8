"""PgQ, the Skytools queue extension: events are inserted one by one, consumed in batches.

A consumer reads whole batches, the events between two ticks, so PgQ has no single-message
pop; the benchmark calls ``pgq.ticker()`` itself, as PgQ's docs describe for a setup
without the pgqd daemon.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from .common import Config, Peer, connect, connections, scratch_database, timed_threads

QUEUE = "peers"
CONSUMER = "peers_consumer"
INSERT = "SELECT pgq.insert_event(%s, 'msg', %s)"
INSERT_MANY = "SELECT pgq.insert_event(%s, 'msg', p) FROM unnest(%s::text[]) AS p"


class Pgq(Peer):
    """``pgq.insert_event`` producers; one consumer reading batches."""

    name = "pgq"
    label = "PgQ"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""
        self._version = "?"

    def version(self) -> str:
        """The extension's version in the scratch database."""
        return f"pgq {self._version} (Debian postgresql-15-pgq3)"

    def notes(self) -> str:
        """The calls and the queue's settings."""
        c = self.config
        return (
            f"`CREATE EXTENSION pgq`; a queue with `ticker_max_count = {c.batch}` and one "
            f"registered consumer. push: `SELECT pgq.insert_event(queue, 'msg', payload)` from "
            f"{c.threads} threads; batch: the same over `unnest` of {c.batch} payloads, one "
            f"statement. Batch consume: the messages are inserted {c.batch} to a transaction, "
            "each followed by `pgq.ticker()`, so every batch (the events between two ticks) "
            "holds a batch's worth; then one consumer loops `pgq.next_batch`, "
            "`pgq.get_batch_events`, `pgq.finish_batch` in one transaction per batch. A PgQ "
            "queue gives every registered consumer every event, so one consumer reads it "
            "(splitting a queue's work among consumers is the separate pgq_coop add-on). No "
            "single-message pop. Pickup is not measured: a consumer sees an event only after "
            "the next tick, so its pickup is set by how often the ticker runs and by the "
            "queue's tick settings (a lone event waits for `ticker_max_lag`, 3 s by default), "
            "not by the event's arrival."
        )

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with the extension."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with scratch_database(self.config.server, "pgq") as conninfo, connect(conninfo) as c:
                available = c.execute(
                    "SELECT default_version FROM pg_available_extensions WHERE name = 'pgq'"
                ).fetchone()
                if available is None:
                    raise RuntimeError("the pgq extension is not installed (postgresql-15-pgq3)")
                c.execute("CREATE EXTENSION pgq")
                self._version = str(available[0])
                self.conninfo = conninfo
                yield

        return run()

    def reset(self) -> None:
        """Drops the queue and creates it again, with its consumer, empty."""
        with connect(self.conninfo) as conn:
            exists = conn.execute("SELECT 1 FROM pgq.queue WHERE queue_name = %s", [QUEUE])
            if exists.fetchone():
                conn.execute("SELECT pgq.drop_queue(%s, true)", [QUEUE])
            conn.execute("SELECT pgq.create_queue(%s)", [QUEUE])
            conn.execute(
                "SELECT pgq.set_queue_config(%s, 'ticker_max_count', %s)",
                [QUEUE, str(self.config.batch)],
            )
            conn.execute("SELECT pgq.register_consumer(%s, %s)", [QUEUE, CONSUMER])
            conn.execute("SELECT pgq.ticker()")

    def _events(self) -> int:
        with connect(self.conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM pgq.event_template").fetchone()
        return int(row[0]) if row else 0

    def _produce(self, op: Callable[[psycopg.Connection[Any]], object], calls: int) -> float:
        self.reset()
        with connections(self.conninfo, self.config.threads) as conns:

            def body(conn: psycopg.Connection[Any]) -> Callable[[], None]:
                def work() -> None:
                    for _ in range(calls):
                        op(conn)

                return work

            seconds = timed_threads([body(conn) for conn in conns])
        if self._events() != self.config.total:
            raise RuntimeError("the producers did not insert every event")
        return self.config.total / seconds

    def push(self) -> float:
        """``pgq.insert_event`` of one event per call."""
        payload = self.config.text_payload
        return self._produce(lambda c: c.execute(INSERT, [QUEUE, payload]), self.config.per_thread)

    def push_batch(self) -> float:
        """``pgq.insert_event`` over a batch of payloads, one statement."""
        payloads = [self.config.text_payload] * self.config.batch
        calls = self.config.per_thread // self.config.batch
        return self._produce(lambda c: c.execute(INSERT_MANY, [QUEUE, payloads]), calls)

    def pop_batch(self) -> float:
        """One consumer reading and finishing every batch."""
        c = self.config
        self.reset()
        payloads = [c.text_payload] * c.batch
        with connect(self.conninfo) as conn:
            for _ in range(c.total // c.batch):
                conn.execute(INSERT_MANY, [QUEUE, payloads])
                conn.execute("SELECT pgq.ticker()")
        seen = [0]

        def consume(conn: psycopg.Connection[Any]) -> Callable[[], None]:
            def work() -> None:
                while seen[0] < c.total:
                    with conn.transaction():
                        row = conn.execute(
                            "SELECT pgq.next_batch(%s, %s)", [QUEUE, CONSUMER]
                        ).fetchone()
                        batch = row[0] if row else None
                        if batch is None:
                            raise RuntimeError(f"no batch after {seen[0]} of {c.total} events")
                        events = conn.execute(
                            "SELECT ev_id, ev_data FROM pgq.get_batch_events(%s)", [batch]
                        ).fetchall()
                        conn.execute("SELECT pgq.finish_batch(%s)", [batch])
                    seen[0] += len(events)

            return work

        with connections(self.conninfo, 1) as conns:
            seconds = timed_threads([consume(conns[0])])
        return c.total / seconds
