"""The worker: runs a handler on every message of some topics, and never loses one.

Threads, each with one job:
- the caller's thread pops messages whenever a handler slot is free (``run()``);
- ``concurrency`` handler threads run the handler and acknowledge the outcome;
- a completer sends the completions of handlers that returned, together (complete_many);
- a lease keeper extends the leases of messages whose handler is still running;
- a control thread LISTENs for pushes, heartbeats in ``pushpop.workers`` and, if it wins the
  advisory lock, runs the queue's maintenance (requeue_expired, cleanup, prune_workers).
No thread holds a pooled connection while a handler runs.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from . import calls, retry
from .client import Client, Message
from .control import Control
from .errors import Error, LeaseLost, Unavailable
from .worker_common import (
    RELEASED,
    SETTLE,
    Flight,
    Job,
    Pacer,
    SignalPolicy,
    WorkerSettings,
    completion_batch,
    log,
    log_completions,
    log_outcome,
    pop_failed,
)

Handler = Callable[[Message], Any]


class Worker:
    """Runs ``handler(msg)`` for messages of ``topics`` until stopped.

    A handler that returns completes its message (unless it acknowledged it itself); one that
    raises has it retried with backoff (``retry``), or discarded after ``max_attempts``.
    SIGTERM/SIGINT (when run in the main thread) or ``stop()`` drain in-flight handlers for up to
    ``shutdown_timeout`` seconds and release the rest; a second signal exits at once.
    """

    def __init__(
        self, client: Client, topics: str | Sequence[str], handler: Handler, **options: Any
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self.client = client
        self.handler = handler
        self.settings = WorkerSettings.build(topics, **options)
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._flight = Flight(self.settings)
        self._pacer = Pacer(self.settings.poll_interval)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._completions: queue.SimpleQueue[tuple[Job, str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._completer = threading.Thread(
            target=self._send_completions, name="pushpop-completer", daemon=True
        )
        self._control = Control(self.settings, client.conninfo, self._notified)

    @property
    def is_leader(self) -> bool:
        """Whether this worker runs the maintenance for the whole fleet right now."""
        return self._control.is_leader

    @property
    def id(self) -> Any:
        """This worker's id in ``pushpop.workers()``."""
        return self.settings.id

    def stop(self) -> None:
        """Stops taking messages; ``run()`` then drains and returns. Safe from any thread."""
        self._stopping.set()
        self._wake.set()

    def _notified(self) -> None:
        """The control thread's wake-up (see Flight.notified)."""
        self._flight.notified()
        self._wake.set()

    def run(self) -> None:
        """Works until ``stop()`` or a signal, then drains in-flight handlers and returns."""
        if self._done.is_set() or self._threads:
            raise Error("a Worker runs once; create a new one")
        restore = self._install_signal_handlers()
        try:
            self._start()
            self._dispatch()
            self._drain()
        finally:
            self._done.set()
            for _ in range(self.settings.concurrency):
                self._jobs.put(None)
            self._completions.put(None)  # no-op if _drain flushed them already
            self._control.stop()
            restore()

    # -- the caller's thread: popping -------------------------------------------------------

    def _start(self) -> None:
        s = self.settings
        log.info("worker %s started: topics=%s concurrency=%d", s.id, ",".join(s.topics),
                 s.concurrency)  # fmt: skip
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"pushpop-handler-{i}", self._handle_jobs) for i in range(s.concurrency)
        ]
        targets.append(("pushpop-lease-keeper", self._keep_leases))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._completer.start()
        self._control.start()

    def _dispatch(self) -> None:
        topics = deque(self.settings.topics)
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()  # before popping: a push or a free slot from now on wakes us
            began = time.monotonic()
            try:
                backlog, popped = self._fetch(topics)
                failures = 0
                self._control.outage.recovered(began)
                if self._flight.must_ask_for_wake_up(backlog, popped):
                    # Wake-ups from here on count: one may arrive before the call returns.
                    self._wake.clear()
                    self.client._run(calls.wait_for_push(self.settings.id, self.settings.topics))
                    self._wake.wait(SETTLE)
                    continue  # pop once more: what was pushed just before did not notify
            except Error as exc:
                failures += 1
                self._stopping.wait(pop_failed(self._control.outage, exc, failures, began))
                continue
            if self._flight.popped(backlog):
                continue
            self._wake.wait(self._pacer.next_wait())
            self._flight.slept()

    def _fetch(self, topics: deque[str]) -> tuple[bool, int]:
        """Pops into the free handler slots, taking the topics in turn. Returns whether a topic
        may hold more (its pop filled every free slot), and how many messages it popped."""
        backlog, popped = False, 0
        for _ in range(len(topics)):
            if (free := self._flight.free()) <= 0:
                return True, popped
            topics.rotate(-1)
            messages = self.client.pop_many(topics[-1], free, lease=self.settings.lease)
            for msg in messages:
                self._jobs.put(self._flight.add(msg))
            backlog = backlog or len(messages) == free
            popped += len(messages)
        return backlog, popped

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout
        with self._flight.changed:
            while self._flight.jobs and (left := deadline - time.monotonic()) > 0:
                self._flight.changed.wait(left)
        # Send what finished first, so none of it is released (and delivered again).
        self._completions.put(None)
        self._completer.join()
        for job in self._flight.release_all():
            self._acknowledge(job, retry.Outcome("defer", reason=RELEASED), "released")
        log.info("worker %s stopped", self.settings.id)

    # -- handler threads ----------------------------------------------------------------------

    def _handle_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            error: BaseException | None = None
            try:
                self.handler(job.msg)
            except BaseException as exc:  # a handler's failure is data, whatever it is
                error = exc
            self._finish(job, error)

    def _finish(self, job: Job, error: BaseException | None) -> None:
        queued = False  # a completion keeps its slot until the completer has sent it
        try:
            if self._flight.is_released(job):
                log_outcome(job.msg, job.started, time.monotonic(), "finished after release")
                return
            outcome, label = retry.decide(job.msg, error, self.settings.retry)
            if outcome is None:
                log_outcome(job.msg, job.started, time.monotonic(), label)
            elif outcome.action == "complete":
                self._completions.put((job, label))
                queued = True
            else:
                self._acknowledge(job, outcome, label)
        finally:
            if not queued:
                self._free(job)

    def _free(self, job: Job) -> None:
        """The job is over: its handler slot takes the next message."""
        if self._flight.done(job):
            self._wake.set()  # a slot is free again: pop

    def _acknowledge(self, job: Job, outcome: retry.Outcome, label: str) -> None:
        msg: Message = job.msg
        try:
            if outcome.action == "complete":
                msg.complete()
            elif outcome.action == "defer":
                msg.defer(outcome.delay, reason=outcome.reason)
                self._pacer.deferred(outcome.delay.total_seconds())
                self._wake.set()  # recompute how long to sleep
            else:
                msg.discard(reason=outcome.reason)
        except Error as exc:
            label = retry.failed_acknowledgement(outcome, exc)
        log_outcome(msg, job.started, time.monotonic(), label)

    # -- completer ----------------------------------------------------------------------------

    def _send_completions(self) -> None:
        """Completes finished messages in batches: one statement for all that are waiting."""
        stopping = False
        while not stopping:
            first = self._completions.get()
            if first is None:
                return
            batch, stopping = completion_batch(first, self._completions.get_nowait)
            error: Error | None = None
            try:
                self.client.complete_many([job.msg for job, _ in batch])
            except Error as exc:
                error = exc
            log_completions(batch, error)
            for job, _ in batch:
                self._free(job)

    # -- lease keeper ---------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._done.wait(min(self.settings.renew_every / 2, 1.0)):
            for job in self._flight.due_for_renewal():
                began = time.monotonic()
                try:
                    job.msg.extend(self.settings.lease)
                    self._flight.renewed(job)
                except LeaseLost:
                    self._flight.lost(job)
                except Unavailable as exc:
                    self._control.outage.failed(str(exc), began)
                except Error as exc:
                    log.warning("message %s: could not extend its lease (%s)", job.msg.id, exc)

    # -- signals ----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the worker (see SignalPolicy). Only the main thread can do this."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        policy = SignalPolicy(self.settings)
        wanted = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.getsignal(sig) for sig in wanted}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop()
            policy.received(signum)

        for sig in wanted:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
