"""The worker: runs a handler on every message of some topics, and never loses one.

Written once, for asyncio; ``tools/async_to_sync.py`` writes the threaded :mod:`pushpop.worker`
from it. What truly differs between the two (handlers as tasks or threads, cancellation,
signals) lives in :mod:`pushpop.tasks` and :mod:`pushpop.threads`.

Who does what:
- the popper (the caller of ``run()``) pops messages whenever a handler slot is free, and
  more ahead for handlers faster than a pop (see Flight); its pops' commits do not wait for
  the disk (``durable=False``);
- the crew runs ``concurrency`` handlers at most, and acts on each outcome;
- a completer sends the completions of handlers that returned, together (complete_many);
- a lease keeper extends the leases of messages whose handler is still running;
- the control thread (:mod:`pushpop.control`) LISTENs for pushes, heartbeats in
  ``pushpop.workers`` and, if it leads, runs the queue's maintenance.
No handler holds a pooled connection while it runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar
from uuid import UUID

from . import calls, constants, metrics, retry, tracing
from .calls import Call
from .checks import Duration
from .constants import SETTLE
from .control import Control
from .errors import Error, InvalidType, LeaseLost, NotInstalled, Unavailable
from .retry import Retry
from .tasks import (
    Crew,
    Event,
    Handle,
    Queue,
    attempt,
    cancelling,
    gather,
    handling_signals,
    spawn,
)
from .worker_common import (
    RELEASED,
    Completion,
    Flight,
    Job,
    M,
    Pacer,
    SignalPolicy,
    WorkerSettings,
    completion_batch,
    log,
    log_completions,
    log_outcome,
    message_fields,
    pop_failed,
)

# True here; tools/async_to_sync.py writes the sync twin with the other side of each `if ASYNC`,
# and the next line has mypy check this module as the asyncio side only.
# mypy: always-true=ASYNC
ASYNC: Final = True

T = TypeVar("T")

# A message the handler acknowledged itself, by its state then: the acknowledgement it made.
SETTLED_BY_HANDLER = {"completed": "complete", "ready": "defer", "discarded": "discard"}

AsyncHandler = Callable[[M], Awaitable[Any]]


class AsyncSource(Protocol[M]):
    """What a worker needs of its client (:class:`~pushpop.AsyncClient`): where the database
    is, popping, completing, and sending any other call."""

    conninfo: str

    async def pop_many(
        self, topic: str, n: int, *, lease: Duration = ..., durable: bool = ...
    ) -> list[M]: ...

    async def complete_many(self, msgs: Sequence[M]) -> None: ...

    async def _run(self, call: Call[T]) -> T: ...


class AsyncWorker(Generic[M]):
    """Runs ``await handler(msg)`` for messages of ``topics`` until stopped.

    A handler that returns completes its message (unless it acknowledged it itself); one that
    raises has it retried with backoff (``retry``), or discarded after ``max_attempts``.
    SIGTERM/SIGINT (when run in the main thread) or ``stop()`` drain in-flight handlers for up to
    ``shutdown_timeout`` seconds and release the rest; a second signal exits at once. In
    asyncio, cancelling the task that awaits ``run()`` releases the messages in flight at once.
    """

    def __init__(
        self,
        client: AsyncSource[M],
        topics: str | Sequence[str],
        handler: AsyncHandler[M],
        *,
        concurrency: int = constants.CONCURRENCY,
        lease: Duration = constants.LEASE,
        poll_interval: Duration = constants.POLL_INTERVAL,
        shutdown_timeout: Duration = constants.SHUTDOWN_TIMEOUT,
        retry: Retry | None = None,
        maintenance: bool = True,
        requeue_interval: Duration = constants.REQUEUE_INTERVAL,
        cleanup_interval: Duration = constants.CLEANUP_INTERVAL,
        cleanup_grace: Duration = constants.CLEANUP_GRACE,
        heartbeat_interval: Duration = constants.HEARTBEAT_INTERVAL,
        metrics_port: int | None = None,
    ) -> None:
        if not callable(handler):
            kind = "an async callable" if ASYNC else "callable"
            raise InvalidType(f"handler must be {kind}, got {type(handler).__name__}")
        self.client = client
        self.handler = handler
        self.settings = WorkerSettings.build(
            topics, concurrency=concurrency, lease=lease, poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout, retry=retry, maintenance=maintenance,
            requeue_interval=requeue_interval, cleanup_interval=cleanup_interval,
            cleanup_grace=cleanup_grace, heartbeat_interval=heartbeat_interval,
        )  # fmt: skip
        # Prometheus metrics on metrics_port (docs/observability.md); none without it.
        self.metrics = metrics.for_worker(self.settings.topics, metrics_port)
        self._flight: Flight[M] = Flight(self.settings)
        self._pacer = Pacer(self.settings.poll_interval)
        self._crew: Crew[M] = Crew(self._handle, self.settings.concurrency)
        self._stopping = Event()
        self._wake = Event()
        self._done = Event()
        self._completions: Queue[Completion[M] | None] = Queue()
        self._control = Control(self.settings, client.conninfo, self._notified)
        self._ran = False

    @property
    def is_leader(self) -> bool:
        """Whether this worker runs the maintenance for the whole fleet right now."""
        return self._control.is_leader

    @property
    def id(self) -> UUID:
        """This worker's id in ``pushpop.workers()``."""
        return self.settings.id

    def stop(self) -> None:
        """Stops taking messages; ``run()`` then drains and returns. Safe from any thread."""
        self._stopping.set()
        self._wake.set()

    def _notified(self) -> None:
        """The control thread's wake-up (see Flight.notified)."""
        self.metrics.woke()
        self._flight.notified()
        self._wake.set()

    async def run(self) -> None:
        """Works until ``stop()`` or a signal, then drains in-flight handlers and returns.

        Raises :class:`~pushpop.NotInstalled` instead of waiting for a database that has no
        pushpop schema (a database that is away is waited for).
        """
        if self._ran:
            raise Error(f"a {type(self).__name__} runs once; create a new one")
        self._ran = True
        with handling_signals(self.stop, SignalPolicy(self.settings.shutdown_timeout)):
            await self._work()

    async def _work(self) -> None:
        s = self.settings
        log.info("worker %s started: topics=%s concurrency=%d", s.id, ",".join(s.topics),
                 s.concurrency)  # fmt: skip
        self.metrics.start()
        if self.metrics.port is not None:
            log.info("worker %s serves metrics on port %d at /metrics", s.id, self.metrics.port)
        self._control.start()
        self._crew.start()
        keeper = spawn(self._keep_leases, "pushpop-lease-keeper")
        completer = spawn(self._send_completions, "pushpop-completer")
        try:
            await self._dispatch()
        finally:
            # Cancelled (asyncio only): no waiting for the handlers, their messages go back now.
            timeout = 0.0 if cancelling() else s.shutdown_timeout
            await asyncio.shield(self._shut_down(timeout, completer, keeper))

    # -- the popper -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        topics = deque(self.settings.topics)
        failures = 0
        while not self._stopping.is_set():
            if self._control.failure is not None:
                raise self._control.failure
            self._wake.clear()  # before popping: a push or a free slot from now on wakes us
            began = time.monotonic()
            try:
                backlog, popped = await self._fetch(topics)
                self.metrics.reached_database()
                failures = 0
                self._control.outage.recovered(began)
                if self._flight.must_ask_for_wake_up(backlog, popped):
                    # Wake-ups from here on count: one may arrive before the call returns.
                    self._wake.clear()
                    await self.client._run(
                        calls.wait_for_push(self.settings.id, self.settings.topics)
                    )
                    await self._wake.wait(SETTLE)
                    continue  # pop once more: what was pushed just before did not notify
            except NotInstalled:
                raise
            except Error as exc:
                failures += 1
                await self._stopping.wait(pop_failed(self._control.outage, exc, failures, began))
                continue
            if self._flight.popped(backlog, time.monotonic() - began):
                continue
            await self._wake.wait(self._pacer.next_wait())
            self._flight.slept()

    async def _fetch(self, topics: deque[str]) -> tuple[bool, int]:
        """Pops into the free handler slots, taking the topics in turn. Returns whether a topic
        may hold more (its pop filled every free slot), and how many messages it popped."""
        backlog, popped = False, 0
        for _ in range(len(topics)):
            if (free := self._flight.free()) <= 0:
                return True, popped
            topics.rotate(-1)
            # Not durable: a pop's flush is most of an idle worker's pickup time, and all of its
            # slow pickups; the completion that follows waits for the disk, for both.
            messages = await self.client.pop_many(
                topics[-1], free, lease=self.settings.lease, durable=False
            )
            self.metrics.popped(topics[-1], len(messages))
            for msg in messages:
                self._crew.take(self._flight.add(msg))
            backlog = backlog or len(messages) == free
            popped += len(messages)
        return backlog, popped

    async def _shut_down(self, timeout: float, completer: Handle, keeper: Handle) -> None:
        """Waits up to ``timeout`` for running handlers, sends what they completed, releases
        the messages of the others, and ends the helpers."""
        try:
            await self._crew.wait(timeout)
            # Send what finished first, so none of it is released (and delivered again).
            self._completions.put_nowait(None)
            await gather(completer)
            leftovers = self._flight.release_all()
            await self._crew.cancel(leftovers)
            for job in leftovers:
                await self._acknowledge(job, retry.Outcome("defer", reason=RELEASED), "released")
            log.info("worker %s stopped", self.settings.id)
        finally:
            self._done.set()
            self._crew.stop()
            await gather(keeper)
            await asyncio.to_thread(self._control.stop)
            self.metrics.stop()

    # -- the crew ---------------------------------------------------------------------------

    async def _handle(self, job: Job[M]) -> None:
        """Runs the handler on one message and acts on the outcome. The job's slot is freed
        then, or once the completer has sent its completion."""
        self._flight.start(job)
        if self._stopping.is_set() or self._flight.is_released(job):
            return  # popped ahead and not started: shutdown releases it
        queued = False
        msg = job.msg
        try:
            error = await self._run_handler(job)
            if self._flight.is_released(job):
                log_outcome(msg, job.started, time.monotonic(), "finished after release",
                            trace_id=job.trace_id)  # fmt: skip
                return
            outcome, label = retry.decide(msg, error, self.settings.retry)
            if outcome is None:  # the handler acknowledged the message itself
                if (action := SETTLED_BY_HANDLER.get(msg.state or "")) is not None:
                    self.metrics.settled(msg.topic, metrics.outcome(action))
                log_outcome(msg, job.started, time.monotonic(), label, error, job.trace_id)
            elif outcome.action == "complete":
                self._completions.put_nowait((job, label))
                queued = True
            else:
                await self._acknowledge(job, outcome, label, error)
        finally:
            if not queued:
                self._free(job)

    async def _run_handler(self, job: Job[M]) -> BaseException | None:
        """Runs the handler, in a CONSUMER span when OpenTelemetry traces; what it raised."""
        msg, began = job.msg, time.monotonic()
        self.metrics.handler_started(msg.topic)
        try:
            with tracing.consuming(msg.topic, msg.headers, msg.id, msg.attempts) as span:
                job.trace_id = span.trace_id
                error = await attempt(self.handler, msg)
                span.ended(error)
        finally:
            job.took = time.monotonic() - began
            self.metrics.handler_ended(msg.topic, job.took)
        return error

    def _free(self, job: Job[M]) -> None:
        """The job is over: its handler slot takes the next message."""
        if self._flight.done(job):
            self._wake.set()  # a slot is free again: pop

    async def _acknowledge(
        self,
        job: Job[M],
        outcome: retry.Outcome,
        label: str,
        error: BaseException | None = None,
    ) -> None:
        """Defers or discards the job's message, and logs it (with ``error``, the handler's)."""
        msg = job.msg
        action = "release" if outcome.reason == RELEASED else outcome.action
        refused: Error | None = None
        try:
            if outcome.action == "defer":
                await self.client._run(calls.defer(msg, outcome.delay, outcome.reason))
                self._pacer.deferred(outcome.delay.total_seconds())
                self._wake.set()  # recompute how long to sleep
            else:
                await self.client._run(calls.discard(msg, outcome.reason))
        except Error as exc:
            refused = exc
            label = retry.failed_acknowledgement(outcome, exc)
        self.metrics.settled(msg.topic, metrics.outcome(action, refused))
        log_outcome(msg, job.started, time.monotonic(), label, error, job.trace_id)

    # -- the completer and the lease keeper ---------------------------------------------------

    async def _send_completions(self) -> None:
        """Completes finished messages in batches: one statement for all that are waiting."""
        stopping = False
        while not stopping:
            first = await self._completions.get()
            if first is None:
                return
            batch, stopping = completion_batch(first, self._completions.get_nowait)
            error: Error | None = None
            self.metrics.batch(len(batch))
            try:
                await self.client.complete_many([job.msg for job, _ in batch])
            except Error as exc:
                error = exc
            if error is None or isinstance(error, LeaseLost):
                self.metrics.reached_database()
            for job, _ in batch:
                refused = None if job.msg.state == "completed" else error
                self.metrics.settled(job.msg.topic, metrics.outcome("complete", refused))
            log_completions(batch, error)
            for job, _ in batch:
                self._free(job)

    async def _keep_leases(self) -> None:
        """Extends the leases of messages whose handler runs, three times per lease."""
        while not await self._done.wait(min(self.settings.renew_every / 2, 1.0)):
            for job in self._flight.due_for_renewal():
                began = time.monotonic()
                try:
                    await self.client._run(calls.extend(job.msg, self.settings.lease))
                    self._flight.renewed(job)
                    self.metrics.reached_database()
                except LeaseLost:
                    self._flight.lost(job)
                except Unavailable as exc:
                    self._control.outage.failed(str(exc), began)
                except Error as exc:
                    log.warning(
                        "message %s: could not extend its lease (%s)", job.msg.id, exc,
                        extra=message_fields(job.msg, job.trace_id),
                    )  # fmt: skip
