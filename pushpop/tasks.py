"""What the asyncio worker runs on: handlers as tasks, events, cancellation, signals.

:mod:`pushpop.threads` offers the same names to the threaded worker, which
``tools/async_to_sync.py`` writes from the asyncio one by swapping this module for that one.
Only what truly differs between the two lives in these two modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic

from .worker_common import Job, M, SignalPolicy

Queue = asyncio.Queue
Handle = asyncio.Task[None]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Event:
    """An asyncio event that any thread may set, and whose wait gives up after a timeout.

    Another thread's ``set()`` goes through the event loop that uses the event, the one that
    was running when it was made or first cleared or waited on.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop = _running_loop()

    def is_set(self) -> bool:
        """Whether the event is set."""
        return self._event.is_set()

    def set(self) -> None:
        """Sets the event, from any thread."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._event.set()
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        """Clears the event (on the loop that uses it)."""
        self._loop = asyncio.get_running_loop()
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Waits until the event is set, ``timeout`` seconds at most; whether it is set."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


def spawn(func: Callable[[], Coroutine[Any, Any, None]], name: str) -> Handle:
    """Runs ``func()`` in a task of its own."""
    return asyncio.create_task(func(), name=name)


async def gather(*handles: Handle) -> None:
    """Waits for the tasks to end, whatever they raise."""
    await asyncio.gather(*handles, return_exceptions=True)


def cancelling() -> bool:
    """Whether the current task is being cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def attempt(handler: Callable[[M], Awaitable[Any]], msg: M) -> BaseException | None:
    """Awaits the handler; returns what it raised, or None. A cancellation of the handler's
    task (the worker stopping) goes on; a CancelledError of the handler's own is a failure."""
    try:
        await handler(msg)
    except asyncio.CancelledError as exc:
        if cancelling():
            raise
        return exc
    except Exception as exc:
        return exc
    return None


class Crew(Generic[M]):
    """``size`` tasks, each running one job at a time, taken from a queue: no task is made
    per message, which would cost a fast handler more than its own work."""

    def __init__(self, work: Callable[[Job[M]], Coroutine[Any, Any, None]], size: int) -> None:
        self._work = work
        self._size = size
        self._jobs: asyncio.Queue[Job[M] | None] = asyncio.Queue()
        self._running: dict[Job[M], asyncio.Task[Any]] = {}
        self._runners: list[asyncio.Task[None]] = []
        self._busy = 0  # jobs taken and not yet done
        self._idle = asyncio.Event()

    def start(self) -> None:
        """Starts the tasks, on the running event loop."""
        self._runners = [
            asyncio.create_task(self._serve(), name=f"pushpop-handler-{i}")
            for i in range(self._size)
        ]

    def take(self, job: Job[M]) -> None:
        """Hands the job to the next free task."""
        self._busy += 1
        self._idle.clear()
        self._jobs.put_nowait(job)

    async def _serve(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while (job := await self._jobs.get()) is not None:
            self._running[job] = task
            try:
                await self._work(job)
            finally:
                del self._running[job]
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    async def wait(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the jobs taken to end."""
        if self._busy and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)

    async def cancel(self, jobs: list[Job[M]]) -> None:
        """Cancels the tasks running the jobs and waits for them to end (the worker is ending:
        those tasks end too)."""
        tasks = [task for job in jobs if (task := self._running.get(job)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Ends each task once it is idle."""
        for _ in self._runners:
            self._jobs.put_nowait(None)


@contextlib.contextmanager
def handling_signals(stop: Callable[[], None], policy: SignalPolicy) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop()`` (see SignalPolicy) through the running loop, while in the
    block; only in the main thread, and where the loop supports signals."""
    loop = asyncio.get_running_loop()
    wanted = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        stop()
        policy.received(signum)

    installed = []
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError):  # an event loop without signal support
            for sig in wanted:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
