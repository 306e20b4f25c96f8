"""What both workers share and that does no I/O: settings, jobs in flight, pacing, outages, logs."""

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
from typing import Any, Generic, TypeVar

from . import checks, constants
from .errors import Error, InvalidArgument, InvalidType, Unavailable
from .message import MessageBase
from .retry import COMPLETE, Retry, failed_acknowledgement

log = logging.getLogger("pushpop.worker")

M = TypeVar("M", bound=MessageBase[Any])
"""The messages a worker handles: its client's (``Message`` or ``AsyncMessage``)."""

Delivery = tuple[uuid.UUID, uuid.UUID | None]
"""One delivery of a message: its id and the lease that pop gave it."""

RELEASED = "released: the worker stopped before its handler finished"
POP_AHEAD = 250
"""Messages a worker may hold beyond one per handler, popped ahead for fast handlers..."""
POP_AHEAD_BYTES = 16 * 1024 * 1024
"""... and the payload bytes they may hold, going by the payloads handled so far."""


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's checked configuration (see :class:`pushpop.Worker` for each knob)."""

    topics: tuple[str, ...]
    concurrency: int = constants.CONCURRENCY
    lease: timedelta = constants.LEASE
    poll_interval: float = constants.POLL_INTERVAL
    shutdown_timeout: float = constants.SHUTDOWN_TIMEOUT
    retry: Retry = field(default_factory=Retry)
    maintenance: bool = True
    requeue_interval: float = constants.REQUEUE_INTERVAL
    cleanup_interval: float = constants.CLEANUP_INTERVAL
    cleanup_grace: timedelta = constants.CLEANUP_GRACE
    heartbeat_interval: float = constants.HEARTBEAT_INTERVAL
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def build(
        cls,
        topics: str | Sequence[str],
        *,
        concurrency: int,
        lease: checks.Duration,
        poll_interval: checks.Duration,
        shutdown_timeout: checks.Duration,
        retry: Retry | None,
        maintenance: bool,
        requeue_interval: checks.Duration,
        cleanup_interval: checks.Duration,
        cleanup_grace: checks.Duration,
        heartbeat_interval: checks.Duration,
    ) -> WorkerSettings:
        """Checks every option, so a bad one fails before the worker touches the database."""
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            raise InvalidArgument("topics must name at least one topic")
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidType(f"retry must be a pushpop.Retry, got {type(retry)}")

        def seconds(value: checks.Duration, name: str, *, positive: bool = True) -> float:
            return checks.duration(value, name, positive=positive).total_seconds()

        return cls(
            topics=tuple(dict.fromkeys(checks.topic(t, "topic") for t in names)),
            concurrency=checks.integer(concurrency, "concurrency", low=1, high=10_000),
            lease=checks.duration(lease, "lease", positive=True),
            poll_interval=seconds(poll_interval, "poll_interval"),
            shutdown_timeout=seconds(shutdown_timeout, "shutdown_timeout", positive=False),
            retry=Retry() if retry is None else retry,
            maintenance=checks.flag(maintenance, "maintenance"),
            requeue_interval=seconds(requeue_interval, "requeue_interval"),
            cleanup_interval=seconds(cleanup_interval, "cleanup_interval"),
            cleanup_grace=checks.duration(cleanup_grace, "cleanup_grace"),
            heartbeat_interval=seconds(heartbeat_interval, "heartbeat_interval"),
        )

    @property
    def renew_every(self) -> float:
        """Leases of running handlers are extended this often: three times per lease."""
        return self.lease.total_seconds() / 3


def message_fields(msg: MessageBase[Any], trace_id: str | None = None) -> dict[str, Any]:
    """The structured fields of every log line about one delivery of ``msg`` (``logs.FIELDS``):
    its id, topic and attempt, and the trace id when OpenTelemetry traces its handler."""
    fields: dict[str, Any] = {
        "message_id": str(msg.id), "topic": msg.topic, "attempt": msg.attempts
    }  # fmt: skip
    if trace_id is not None:
        fields["trace_id"] = trace_id
    return fields


def log_outcome(
    msg: MessageBase[Any],
    started: float,
    ended: float,
    outcome: str,
    error: BaseException | None = None,
    trace_id: str | None = None,
) -> None:
    """One line per handled message: id, topic, attempt, duration and outcome. INFO, or WARNING
    with the traceback when the handler raised ``error``. Nothing is built when that level
    is off: this runs for every message."""
    level = logging.INFO if error is None else logging.WARNING
    if not log.isEnabledFor(level):
        return
    duration_ms = round((ended - started) * 1000, 1)
    log.log(
        level,
        "message %s topic=%s attempt=%d took %.1f ms: %s",
        msg.id, msg.topic, msg.attempts, duration_ms, outcome,
        exc_info=error,
        extra={**message_fields(msg, trace_id), "duration_ms": duration_ms, "outcome": outcome},
    )  # fmt: skip


@dataclass(eq=False)
class Job(Generic[M]):
    """A popped message whose handler runs."""

    msg: M
    started: float
    renew_at: float
    released: bool = False
    trace_id: str | None = None  # of the handler's span, when OpenTelemetry traces it
    took: float | None = None  # seconds its handler ran, once it returned

    @property
    def delivery(self) -> Delivery:
        """What tells this job from another delivery of the same message."""
        return (self.msg.id, self.msg.lease)


Completion = tuple[Job[M], str]
"""A job whose handler returned, and the log words for its completion."""


def completion_batch(
    first: Completion[M], take: Callable[[], Completion[M] | None]
) -> tuple[list[Completion[M]], bool]:
    """``first`` and the completions ``take`` has ready (a queue's get_nowait), at most
    COMPLETE_BATCH; True as well if the stop mark (None) came, so the sender stops after."""
    batch = [first]
    while len(batch) < constants.COMPLETE_BATCH:
        try:
            item = take()
        except (queue.Empty, asyncio.QueueEmpty):
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def log_completions(batch: Sequence[Completion[M]], error: Error | None) -> None:
    """Logs each job of one complete_many: completed, or why not. On LeaseLost the batch's
    other messages were completed (their state says so); any other error completed none."""
    ended = time.monotonic()
    for job, label in batch:
        if error is not None and job.msg.state != "completed":
            label = failed_acknowledgement(COMPLETE, error)
        log_outcome(job.msg, job.started, ended, label, trace_id=job.trace_id)


class Flight(Generic[M]):
    """The jobs in flight, by delivery: free handler slots, leases due for renewal, release.

    Besides one job per handler, the popper may hold ``ahead`` more, popped but not yet
    started, while the queue is deep and the handlers fast: as many as the handlers get
    through while a message goes from pop to completion (two round trips), so they need not
    wait for a pop (at most POP_AHEAD, and POP_AHEAD_BYTES of payloads). Slow handlers get
    through none that fast, so a worker that runs them holds no more messages than it has
    handlers.

    Thread-safe: the asyncio worker's control thread reports wake-ups here too.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.jobs: dict[Delivery, Job[M]] = {}
        self.backlog = False
        self.waiting = False  # asked for a wake-up since last sleeping, finding work or notified
        self.ahead = 0
        self.queued = 0  # jobs popped whose handler has not started yet
        self.handler_time: float | None = None  # seconds a handler takes, a moving average
        self.payload_size = 0.0  # bytes of a payload, a moving average

    def _capacity(self) -> int:
        return self.settings.concurrency + self.ahead

    def _free(self) -> int:
        return self._capacity() - len(self.jobs)

    def _wants_pop(self) -> bool:
        """Whether a pop now is worth its round trip: a slot is free and no message is popped
        ahead, or half the slots are free, or the handlers have nothing left to start."""
        free = self._free()
        if free <= 0:
            return False
        return not self.ahead or free * 2 >= self._capacity() or self.queued == 0

    def free(self) -> int:
        """How many more messages the worker can take now."""
        with self._lock:
            return self._free()

    def add(self, msg: M) -> Job[M]:
        """Records a popped message as in flight, waiting for its handler."""
        now = time.monotonic()
        job = Job(msg, now, now + self.settings.renew_every)
        with self._lock:
            self.jobs[job.delivery] = job
            self.queued += 1
        return job

    def start(self, job: Job[M]) -> None:
        """The job's handler starts now."""
        job.started = time.monotonic()
        with self._lock:
            self.queued -= 1

    def done(self, job: Job[M]) -> bool:
        """Forgets a finished job (and no other delivery of its message); True if the popper
        must wake: that freed the only slot, or the queue holds more messages (see ``popped``)
        and a pop is worth it now."""
        with self._lock:
            was_full = self._free() <= 0
            if self.jobs.get(job.delivery) is job:
                del self.jobs[job.delivery]
            if job.took is not None:
                size = len(job.msg.payload)
                if self.handler_time is None:
                    self.handler_time, self.payload_size = job.took, size
                self.handler_time += (job.took - self.handler_time) / 8
                self.payload_size += (size - self.payload_size) / 8
            return (was_full or self.backlog) and self._wants_pop()

    def popped(self, backlog: bool, seconds: float) -> bool:
        """Records whether the last pops filled every slot they asked for (so the queue may hold
        more: finished jobs then wake the popper), and how long they took; True if a pop is
        worth it already, in which case the popper pops again at once."""
        with self._lock:
            self.backlog = backlog
            self.ahead = 0
            if backlog and self.handler_time is not None:
                through = self.settings.concurrency * 2 * seconds / max(self.handler_time, 1e-6)
                fits = POP_AHEAD_BYTES / max(self.payload_size, 1.0)
                self.ahead = int(min(through, fits, POP_AHEAD))
            return backlog and self._wants_pop()

    def must_ask_for_wake_up(self, backlog: bool, popped: int) -> bool:
        """After a round of pops: True if the popper is about to sleep with slots free and the
        queue empty, and has no wake-up asked for (``pushpop.wait_for_push``); it then asks,
        and pops once more. Popping anything may have used up an earlier request."""
        with self._lock:
            if popped:
                self.waiting = False
            if self.waiting or backlog or self._free() <= 0:
                return False
            self.waiting = True
            return True

    def slept(self) -> None:
        """The popper slept: whatever woke it, it asks for a wake-up again before it next sleeps."""
        with self._lock:
            self.waiting = False

    def notified(self) -> None:
        """The control thread got a wake-up (or listens again after an outage). A NOTIFY uses
        up the request it answers, so the popper asks again before it next sleeps, even if it
        missed the wake-up itself (it was popping, or had not yet seen its request go through)."""
        self.slept()

    def is_released(self, job: Job[M]) -> bool:
        """Whether shutdown gave this job's message back already."""
        with self._lock:
            return job.released

    def due_for_renewal(self) -> list[Job[M]]:
        """Jobs whose lease should be extended now."""
        now = time.monotonic()
        with self._lock:
            return [j for j in self.jobs.values() if j.renew_at <= now and not j.released]

    def renewed(self, job: Job[M]) -> None:
        """Notes a successful lease extension."""
        job.renew_at = time.monotonic() + self.settings.renew_every

    def lost(self, job: Job[M]) -> None:
        """A lease extension was refused: log it if the handler still runs, and stop trying."""
        with self._lock:
            running = self.jobs.get(job.delivery) is job and job.msg.state == "pending"
        if running:
            log.warning(
                "message %s: lease lost while its handler runs", job.msg.id,
                extra=message_fields(job.msg, job.trace_id),
            )  # fmt: skip
        job.renew_at = float("inf")

    def release_all(self) -> list[Job[M]]:
        """Marks every job still in flight as released and returns them, at shutdown."""
        with self._lock:
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
    return min(0.1 * 2.0 ** min(failures, 16), constants.RECONNECT_CAP)  # no overflow, however long


class SignalPolicy:
    """First SIGTERM/SIGINT drains gracefully; a second one exits at once."""

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.count = 0

    def received(self, signum: int) -> None:
        """Counts a signal; exits the process on the second one."""
        self.count += 1
        name = signal.Signals(signum).name
        if self.count > 1:
            log.warning("second %s: exiting now; leases in flight will expire", name)
            os._exit(128 + signum)
        log.info("%s: finishing in-flight messages (up to %.0fs); signal again to exit now",
                 name, self.shutdown_timeout)  # fmt: skip
