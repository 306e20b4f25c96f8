"""A worker's control thread: wake-ups, registration and fleet-wide maintenance.

It keeps one connection of its own (application_name ``pushpop-worker-control``) that
LISTENs on channel ``pushpop``, heartbeats in ``pushpop.workers``, and asks for the lead
(``pushpop.lead_maintenance``, a lease it renews) that lets exactly one worker across all hosts
run run_schedules, requeue_expired, cleanup and prune_workers; a worker that stops gives the
lead up. If the database goes away it reconnects with capped backoff (cut short as soon as
another of the worker's calls gets through), re-LISTENs and asks its worker to poll once.
Sync and async workers both use it: it needs no event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from . import calls
from .calls import Call
from .connection import redact
from .constants import CLEANUP_BATCH, LEAD_LEASE, RECONNECT_CAP, SCHEDULE_INTERVAL, STALE_AFTER
from .errors import Error, NotInstalled, PermissionDenied, from_psycopg
from .worker_common import Outage, WorkerSettings, log

CONTROL_APP = "pushpop-worker-control"


def _execute(conn: psycopg.Connection[Any], call: Call[Any]) -> Any:
    try:
        rows = conn.execute(call.sql, call.params).fetchall()
    except psycopg.OperationalError:
        raise  # the connection is gone: reconnect
    except psycopg.Error as exc:
        raise from_psycopg(exc, call.role) from exc
    return call.read(rows)


class Control:
    """Runs in a thread of its own until ``stop()``; calls ``wake()`` when there may be work.

    On a database without pushpop's schema it ends at once, keeping the error in ``failure``
    for its worker to raise.
    """

    def __init__(self, settings: WorkerSettings, conninfo: str, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self.wake = wake
        self.is_leader = False
        self.maintains = settings.maintenance  # until its role turns out not to be allowed
        self.failure: NotInstalled | None = None
        self.outage = Outage(settings.id)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pushpop-control", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Unregisters the worker, gives up leadership and ends the thread."""
        self._done.set()
        self.outage.back.set()  # ends a reconnection pause
        self._thread.join(timeout)

    def _run(self) -> None:
        s = self.settings
        pause, hurried = 0.1, False
        while not self._done.is_set():
            self.outage.back.clear()  # set from now on: the database came back during this try
            began = time.monotonic()
            try:
                with psycopg.connect(
                    self.conninfo, autocommit=True, connect_timeout=5, application_name=CONTROL_APP
                ) as conn:
                    conn.execute(calls.LISTEN)
                    self._heartbeat(conn)
                    self.outage.recovered(began)
                    pause, hurried = 0.1, False
                    self.wake()  # poll once for whatever was pushed while we were away
                    self._loop(conn)
                    if self.is_leader:
                        _execute(conn, calls.resign_maintenance(s.id))  # another takes over now
                        self.is_leader = False
                    _execute(conn, calls.worker_stopped(s.id))
            except NotInstalled as exc:
                self.is_leader = False
                self.failure = exc
                self.wake()
                return
            except (psycopg.Error, Error) as exc:
                self.is_leader = False
                self.outage.failed(redact(str(exc), self.conninfo))
                log.debug("control connection lost; next try in %.1f s", pause)
                hurried = self._pause(pause, hurried)
                pause = min(pause * 2, RECONNECT_CAP)

    def _pause(self, seconds: float, hurried: bool) -> bool:
        """Waits before the next connection try; True if cut short because the worker's other
        calls get through again (LISTEN then comes back at once, not after the backoff). A try
        made early that failed too waits its pause out, so the backoff still holds."""
        if hurried:
            self._done.wait(seconds)
            return False
        return self.outage.back.wait(seconds) and not self._done.is_set()

    def _heartbeat(self, conn: psycopg.Connection[Any]) -> None:
        s = self.settings
        _execute(conn, calls.worker_heartbeat(s.id, s.host, s.pid, s.topics, s.concurrency))

    def _loop(self, conn: psycopg.Connection[Any]) -> None:
        s = self.settings
        topics = set(s.topics)
        self.is_leader = False
        # The lead is renewed three times per lease; the other workers ask for it as often, so
        # one of them takes over within about a lease of the leader's death.
        renew_lead = LEAD_LEASE.total_seconds() / 3
        now = time.monotonic()
        next_beat, next_requeue, next_cleanup = now + s.heartbeat_interval, now, now
        next_lead = next_schedules = now
        while not self._done.is_set():
            for note in conn.notifies(timeout=SCHEDULE_INTERVAL):
                if note.payload in topics:
                    self.wake()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat(conn)
                next_beat = now + s.heartbeat_interval
            if not self.maintains:
                continue
            if now >= next_lead:
                try:
                    leading = _execute(conn, calls.lead_maintenance(s.id, LEAD_LEASE))
                except PermissionDenied:
                    log.warning(
                        "worker %s may not run maintenance (its role lacks pushpop_maintainer): "
                        "leaving it to other workers", s.id,
                    )  # fmt: skip
                    self.maintains = False
                    continue
                if leading and not self.is_leader:
                    log.info("worker %s runs maintenance for all workers", s.id)
                    next_requeue = next_cleanup = now
                self.is_leader, next_lead = leading, now + renew_lead
            if not self.is_leader:
                continue
            if now >= next_schedules:
                if pushed := _execute(conn, calls.run_schedules()):
                    log.info("pushed %d scheduled message(s)", pushed)
                next_schedules = now + SCHEDULE_INTERVAL
            if now >= next_requeue:
                if moved := _execute(conn, calls.requeue_expired()):
                    log.info("requeued %d message(s) whose lease expired", moved)
                next_requeue = now + s.requeue_interval
            if now >= next_cleanup:
                self._cleanup(conn)
                next_cleanup = now + s.cleanup_interval

    def _cleanup(self, conn: psycopg.Connection[Any]) -> None:
        deleted = 0
        while not self._done.is_set():
            batch = _execute(conn, calls.cleanup_batch(self.settings.cleanup_grace))
            deleted += batch
            if batch < CLEANUP_BATCH:
                break
        pruned = _execute(conn, calls.prune_workers(STALE_AFTER))
        if deleted or pruned:
            log.info("cleanup deleted %d finished message(s), forgot %d dead worker(s)",
                     deleted, pruned)  # fmt: skip
