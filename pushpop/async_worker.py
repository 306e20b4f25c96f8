"""The asyncio worker: the same guarantees as :class:`pushpop.Worker`, for ``async def`` handlers.

Handlers run as tasks on the caller's event loop, at most ``concurrency`` at once; popping,
acknowledging and lease extension are awaited on the :class:`AsyncClient`. The control
connection (LISTEN, registry, maintenance) is the same :class:`~pushpop.control.Control`
thread the sync worker uses: it wakes the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import calls, retry
from .async_client import AsyncClient, AsyncMessage
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
)  # fmt: skip

AsyncHandler = Callable[[AsyncMessage], Awaitable[Any]]


class AsyncWorker:
    """Runs ``await handler(msg)`` for messages of ``topics`` until stopped or cancelled.

    Outcomes, retries, lease renewal and shutdown follow :class:`pushpop.Worker`. Cancelling
    the task that awaits ``run()`` cancels the running handlers and releases their messages
    (back to ready at once) before the cancellation propagates.
    """

    def __init__(
        self,
        client: AsyncClient,
        topics: str | Sequence[str],
        handler: AsyncHandler,
        **options: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {type(handler).__name__}")
        self.client = client
        self.handler = handler
        self.settings = WorkerSettings.build(topics, **options)
        self._flight = Flight(self.settings)
        self._pacer = Pacer(self.settings.poll_interval)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control = Control(self.settings, client.conninfo, self._notified)
        self._completions: asyncio.Queue[tuple[Job, str] | None] = asyncio.Queue()
        self._completer: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this worker runs the maintenance for the whole fleet right now."""
        return self._control.is_leader

    @property
    def id(self) -> Any:
        """This worker's id in ``pushpop.workers()``."""
        return self.settings.id

    def stop(self) -> None:
        """Stops taking messages, then run() drains and returns. Call it on the loop's thread."""
        self._stopping.set()
        self._wake.set()

    def _notified(self) -> None:
        """The control thread's wake-up (see Flight.notified), passed to the event loop."""
        self._flight.notified()
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Works until ``stop()``, a signal or cancellation; then drains and returns."""
        if self._loop is not None:
            raise Error("an AsyncWorker runs once; create a new one")
        self._loop = asyncio.get_running_loop()
        remove_signal_handlers = self._install_signal_handlers()
        log.info("worker %s started: topics=%s concurrency=%d", self.settings.id,
                 ",".join(self.settings.topics), self.settings.concurrency)  # fmt: skip
        self._control.start()
        keeper = asyncio.create_task(self._keep_leases(), name="pushpop-lease-keeper")
        self._completer = asyncio.create_task(self._send_completions(), name="pushpop-completer")
        try:
            await self._dispatch()
            await self._drain(self.settings.shutdown_timeout)
        except asyncio.CancelledError:
            await asyncio.shield(self._drain(0))
            raise
        finally:
            keeper.cancel()
            self._completer.cancel()  # done already, unless run() failed before draining
            await asyncio.gather(keeper, self._completer, return_exceptions=True)
            await asyncio.to_thread(self._control.stop)
            remove_signal_handlers()

    async def _dispatch(self) -> None:
        topics = deque(self.settings.topics)
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()  # before popping: a push or a free slot from now on wakes us
            began = time.monotonic()
            try:
                backlog, popped = await self._fetch(topics)
                failures = 0
                self._control.outage.recovered(began)
                if self._flight.must_ask_for_wake_up(backlog, popped):
                    s = self.settings
                    # Wake-ups from here on count: one may arrive before the call returns.
                    self._wake.clear()
                    await self.client._run(calls.wait_for_push(s.id, s.topics))
                    await self._sleep(SETTLE)
                    continue  # pop once more: what was pushed just before did not notify
            except Error as exc:
                failures += 1
                await self._sleep(pop_failed(self._control.outage, exc, failures, began))
                continue
            if self._flight.popped(backlog):
                continue
            await self._sleep(self._pacer.next_wait())
            self._flight.slept()

    async def _sleep(self, seconds: float) -> None:
        """Sleeps until woken (a push, a free slot, stop()) or for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _fetch(self, topics: deque[str]) -> tuple[bool, int]:
        """Pops into the free handler slots, taking the topics in turn. Returns whether a topic
        may hold more (its pop filled every free slot), and how many messages it popped."""
        backlog, popped = False, 0
        for _ in range(len(topics)):
            if (free := self._flight.free()) <= 0:
                return True, popped
            topics.rotate(-1)
            messages = await self.client.pop_many(topics[-1], free, lease=self.settings.lease)
            for msg in messages:
                job = self._flight.add(msg)
                job.task = asyncio.create_task(self._handle(job), name=f"pushpop-{msg.id}")
            backlog = backlog or len(messages) == free
            popped += len(messages)
        return backlog, popped

    async def _drain(self, timeout: float) -> None:
        """Waits up to ``timeout`` for running handlers; cancels and releases the rest."""
        tasks = [job.task for job in list(self._flight.jobs.values())]
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        # Send what finished first, so none of it is released (and delivered again).
        self._completions.put_nowait(None)
        if self._completer is not None:
            await asyncio.gather(self._completer, return_exceptions=True)
        leftovers = self._flight.release_all()
        for job in leftovers:
            job.task.cancel()
        await asyncio.gather(*(job.task for job in leftovers), return_exceptions=True)
        for job in leftovers:
            await self._acknowledge(job, retry.Outcome("defer", reason=RELEASED), "released")
        log.info("worker %s stopped", self.settings.id)

    async def _handle(self, job: Job) -> None:
        error: BaseException | None = None
        try:
            await self.handler(job.msg)
        except asyncio.CancelledError as exc:
            if self._flight.is_released(job):
                self._flight.done(job)
                raise  # shutdown cancelled it; _drain releases the message
            error = exc  # the handler cancelled itself: a failure like any other
        except Exception as exc:
            error = exc
        queued = False  # a completion keeps its slot until the completer has sent it
        try:
            outcome, label = retry.decide(job.msg, error, self.settings.retry)
            if outcome is None:
                log_outcome(job.msg, job.started, time.monotonic(), label)
            elif outcome.action == "complete":
                self._completions.put_nowait((job, label))
                queued = True
            else:
                await self._acknowledge(job, outcome, label)
        finally:
            if not queued:
                self._free(job)

    def _free(self, job: Job) -> None:
        """The job is over: its handler slot takes the next message."""
        if self._flight.done(job):
            self._wake.set()  # a slot is free again: pop

    async def _acknowledge(self, job: Job, outcome: retry.Outcome, label: str) -> None:
        msg: AsyncMessage = job.msg
        try:
            if outcome.action == "complete":
                await msg.complete()
            elif outcome.action == "defer":
                await msg.defer(outcome.delay, reason=outcome.reason)
                self._pacer.deferred(outcome.delay.total_seconds())
                self._wake.set()  # recompute how long to sleep
            else:
                await msg.discard(reason=outcome.reason)
        except Error as exc:
            label = retry.failed_acknowledgement(outcome, exc)
        log_outcome(msg, job.started, time.monotonic(), label)

    async def _send_completions(self) -> None:
        """Completes finished messages in batches: one statement for all that are waiting."""
        stopping = False
        while not stopping:
            first = await self._completions.get()
            if first is None:
                return
            batch, stopping = completion_batch(first, self._completions.get_nowait)
            error: Error | None = None
            try:
                await self.client.complete_many([job.msg for job, _ in batch])
            except Error as exc:
                error = exc
            log_completions(batch, error)
            for job, _ in batch:
                self._free(job)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(min(self.settings.renew_every / 2, 1.0))
            for job in self._flight.due_for_renewal():
                began = time.monotonic()
                try:
                    await job.msg.extend(self.settings.lease)
                    self._flight.renewed(job)
                except LeaseLost:
                    self._flight.lost(job)
                except Unavailable as exc:
                    self._control.outage.failed(str(exc), began)
                except Error as exc:
                    log.warning("message %s: could not extend its lease (%s)", job.msg.id, exc)

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the worker (see SignalPolicy), through the event loop."""
        loop = self._loop
        if loop is None or threading.current_thread() is not threading.main_thread():
            return lambda: None
        policy = SignalPolicy(self.settings)
        wanted = (signal.SIGTERM, signal.SIGINT)

        def on_signal(signum: int) -> None:
            self.stop()
            policy.received(signum)

        try:
            for sig in wanted:
                loop.add_signal_handler(sig, on_signal, sig)
        except NotImplementedError:  # an event loop without signal support
            return lambda: None

        def remove() -> None:
            for sig in wanted:
                loop.remove_signal_handler(sig)

        return remove
