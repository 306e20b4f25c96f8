"""What the sync and async workers share: settings, in-flight bookkeeping, pacing, signals, logs."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import checks
from .calls import POP_LEASE_DEFAULT
from .errors import Error, InvalidArgument, InvalidType, Unavailable
from .message import MessageBase
from .retry import COMPLETE, Retry, failed_acknowledgement

log = logging.getLogger("pushpop.worker")

# Between reconnection attempts to a database that went away: doubling, at most this.
RECONNECT_CAP = 5.0
# After asking for a wake-up (pushpop.wait_for_push) the popper waits this long, or until woken,
# before its last pop: a push that checked for waiting consumers just before the request
# commits meanwhile and is popped then, instead of a poll interval later.
SETTLE = 0.1
# A registry entry without a heartbeat for this long belongs to a dead worker.
STALE_AFTER = timedelta(minutes=1)


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's checked configuration (see :class:`pushpop.Worker` for each knob)."""

    topics: tuple[str, ...]
    concurrency: int = 4
    lease: timedelta = POP_LEASE_DEFAULT
    poll_interval: float = 1.0
    shutdown_timeout: float = 30.0
    retry: Retry = field(default_factory=Retry)
    maintenance: bool = True
    requeue_interval: float = 5.0
    cleanup_interval: float = 60.0
    cleanup_grace: timedelta = timedelta(days=1)
    heartbeat_interval: float = 10.0
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def build(cls, topics: str | Sequence[str], **options: Any) -> WorkerSettings:
        """Checks every option, so a bad one fails before the worker touches the database."""
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            raise InvalidArgument("topics must name at least one topic")
        topics_ = tuple(dict.fromkeys(checks.topic(t, "topic") for t in names))
        opts = dict(options)

        def seconds(name: str, *, positive: bool = True) -> None:
            if name in opts:
                opts[name] = checks.duration(opts[name], name, positive=positive).total_seconds()

        def interval(name: str, *, positive: bool = True) -> None:
            if name in opts:
                opts[name] = checks.duration(opts[name], name, positive=positive)

        if "concurrency" in opts:
            checks.integer(opts["concurrency"], "concurrency", low=1, high=10_000)
        interval("lease")
        interval("cleanup_grace", positive=False)
        for name in ("poll_interval", "requeue_interval", "cleanup_interval", "heartbeat_interval"):
            seconds(name)
        seconds("shutdown_timeout", positive=False)
        if "retry" in opts and not isinstance(opts["retry"], Retry):
            raise InvalidType(f"retry must be a pushpop.Retry, got {type(opts['retry'])}")
        unknown = set(opts) - {f for f in cls.__dataclass_fields__ if f != "topics"}
        if unknown:
            raise InvalidType(f"unknown worker option(s): {', '.join(sorted(unknown))}")
        return cls(topics=topics_, **opts)

    @property
    def lease_seconds(self) -> float:
        """The lease as seconds."""
        return self.lease.total_seconds()

    @property
    def renew_every(self) -> float:
        """Leases of running handlers are extended this often: three times per lease."""
        return self.lease_seconds / 3


def log_outcome(msg: MessageBase, started: float, ended: float, outcome: str) -> None:
    """One INFO line per handled message: id, topic, attempt, duration and outcome."""
    duration_ms = round((ended - started) * 1000, 1)
    log.info(
        "message %s topic=%s attempt=%d took %.1f ms: %s",
        msg.id, msg.topic, msg.attempts, duration_ms, outcome,
        extra={
            "message_id": str(msg.id), "topic": msg.topic, "attempt": msg.attempts,
            "duration_ms": duration_ms, "outcome": outcome,
        },
    )  # fmt: skip


# Completions are sent together: whatever finished while the previous batch was on its way,
# at most this many per statement (pushpop.complete_many).
COMPLETE_BATCH = 500


def completion_batch(
    first: tuple[Job, str], take: Callable[[], tuple[Job, str] | None]
) -> tuple[list[tuple[Job, str]], bool]:
    """``first`` and the completions ``take`` has ready (a queue's get_nowait), at most
    COMPLETE_BATCH; True as well if the stop mark (None) came, so the sender stops after."""
    batch = [first]
    while len(batch) < COMPLETE_BATCH:
        try:
            item = take()
        except (queue.Empty, asyncio.QueueEmpty):
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def log_completions(batch: Sequence[tuple[Job, str]], error: Error | None) -> None:
    """Logs each job of one complete_many: completed, or why not. On LeaseLost the batch's
    other messages were completed (their state says so); any other error completed none."""
    ended = time.monotonic()
    for job, label in batch:
        if error is not None and job.msg.state != "completed":
            label = failed_acknowledgement(COMPLETE, error)
        log_outcome(job.msg, job.started, ended, label)


@dataclass(eq=False)
class Job:
    """A popped message whose handler runs (``task`` is the asyncio task, for the async worker)."""

    msg: Any
    started: float
    renew_at: float
    released: bool = False
    task: Any = None


class Flight:
    """The jobs in flight: free handler slots, leases due for renewal, release at shutdown.

    Thread-safe; the sync worker also waits on ``changed`` for jobs to finish.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.changed = threading.Condition()
        self.jobs: dict[Any, Job] = {}
        self.backlog = False
        self.waiting = False  # asked for a wake-up since last sleeping, finding work or notified

    def free(self) -> int:
        """How many more messages the handlers can take now."""
        with self.changed:
            return self.settings.concurrency - len(self.jobs)

    def add(self, msg: Any) -> Job:
        """Records a popped message as in flight."""
        now = time.monotonic()
        job = Job(msg, now, now + self.settings.renew_every)
        with self.changed:
            self.jobs[msg.id] = job
        return job

    def done(self, job: Job) -> bool:
        """Forgets a finished job; True if the popper must wake: that freed the only slot, or
        the queue holds more messages (see ``popped``)."""
        with self.changed:
            was_full = len(self.jobs) >= self.settings.concurrency
            self.jobs.pop(job.msg.id, None)
            self.changed.notify_all()
            return was_full or self.backlog

    def popped(self, backlog: bool) -> bool:
        """Records whether the last pops filled every slot they asked for (so the queue may hold
        more: each finished job then wakes the popper); True if slots are free already, in which
        case the popper pops again at once."""
        with self.changed:
            self.backlog = backlog
            return backlog and len(self.jobs) < self.settings.concurrency

    def must_ask_for_wake_up(self, backlog: bool, popped: int) -> bool:
        """After a round of pops: True if the popper is about to sleep with slots free and the
        queue empty, and has no wake-up asked for (``pushpop.wait_for_push``); it then asks,
        and pops once more. Popping anything may have used up an earlier request."""
        with self.changed:
            if popped:
                self.waiting = False
            if self.waiting or backlog or self.free() <= 0:
                return False
            self.waiting = True
            return True

    def slept(self) -> None:
        """The popper slept: whatever woke it, it asks for a wake-up again before it next sleeps."""
        with self.changed:
            self.waiting = False

    def notified(self) -> None:
        """The control thread got a wake-up (or listens again after an outage). A NOTIFY uses
        up the request it answers, so the popper asks again before it next sleeps, even if it
        missed the wake-up itself (it was popping, or had not yet seen its request go through)."""
        self.slept()

    def is_released(self, job: Job) -> bool:
        """Whether shutdown gave this job's message back already."""
        with self.changed:
            return job.released

    def due_for_renewal(self) -> list[Job]:
        """Jobs whose lease should be extended now."""
        now = time.monotonic()
        with self.changed:
            return [j for j in self.jobs.values() if j.renew_at <= now and not j.released]

    def renewed(self, job: Job) -> None:
        """Notes a successful lease extension."""
        job.renew_at = time.monotonic() + self.settings.renew_every

    def lost(self, job: Job) -> None:
        """A lease extension was refused: log it if the handler still runs, and stop trying."""
        with self.changed:
            running = job.msg.id in self.jobs and job.msg.state == "pending"
        if running:
            log.warning("message %s: lease lost while its handler runs", job.msg.id)
        job.renew_at = float("inf")

    def release_all(self) -> list[Job]:
        """Marks every job still in flight as released and returns them, at shutdown."""
        with self.changed:
            left = [job for job in self.jobs.values() if not job.released]
            for job in left:
                job.released = True
        return left


class Pacer:
    """How long the popper sleeps: poll_interval, or less when a deferred message falls due."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.due_soon = float("inf")

    def deferred(self, delay: float) -> None:
        """This worker deferred a message for ``delay`` seconds: pop again when it is due."""
        self.due_soon = min(self.due_soon, time.monotonic() + delay)

    def next_wait(self) -> float:
        """Seconds until the next poll."""
        now = time.monotonic()
        if self.due_soon <= now:
            self.due_soon = float("inf")
        return max(0.0, min(self.poll_interval, self.due_soon - now))


class Outage:
    """Whether this worker sees the database as gone: one log line when it goes, one when back.

    The control connection, the popper and the lease keeper all report here, with the time
    their call began, so an outage is logged once however many of them run into it, and a call
    that began before the latest change (a reply already on its way, a wait that began while
    the database was away) changes nothing. ``back`` is set when the database comes back, so a
    reconnection waiting out its backoff can try at once. Thread-safe.
    """

    def __init__(self, worker_id: uuid.UUID) -> None:
        self.worker_id = worker_id
        self.down = False
        self.back = threading.Event()
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def failed(self, reason: str, began: float | None = None) -> None:
        """A call begun at ``began`` (default: now) found no database. ``reason`` must hold no
        password."""
        with self._lock:
            if self.down or (began is not None and began <= self._since):
                return
            self.down, self._since = True, time.monotonic()
        log.warning("database unavailable (%s); reconnecting", " ".join(reason.split()))

    def recovered(self, began: float) -> None:
        """A call begun at ``began`` succeeded."""
        if not self.down:  # the usual case, without taking the lock
            return
        with self._lock:
            if not self.down or began <= self._since:
                return
            self.down, self._since = False, time.monotonic()
        self.back.set()
        log.warning("database is back; worker %s resumes", self.worker_id)


def pop_failed(outage: Outage, exc: Error, failures: int, began: float) -> float:
    """Reports the ``failures``-th pop failure in a row (that pop began at ``began``); returns
    the seconds to wait before the next try: doubling from 0.2 s, at most RECONNECT_CAP."""
    if isinstance(exc, Unavailable):
        outage.failed(str(exc), began)
    elif failures == 1:
        log.warning("cannot pop messages (%s); retrying", exc)
    return min(0.1 * 2.0 ** min(failures, 16), RECONNECT_CAP)  # no overflow, however long


class SignalPolicy:
    """First SIGTERM/SIGINT drains gracefully; a second one exits at once."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.count = 0

    def received(self, signum: int) -> None:
        """Counts a signal; exits the process on the second one."""
        self.count += 1
        name = signal.Signals(signum).name
        if self.count > 1:
            log.warning("second %s: exiting now; leases in flight will expire", name)
            os._exit(128 + signum)
        log.info("%s: finishing in-flight messages (up to %.0fs); signal again to exit now",
                 name, self.settings.shutdown_timeout)  # fmt: skip


RELEASED = "released: the worker stopped before its handler finished"
