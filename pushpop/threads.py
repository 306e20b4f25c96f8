"""What the threaded worker runs on: handler threads, events, signals.

The same names as :mod:`pushpop.tasks`, for :mod:`pushpop.worker`, which
``tools/async_to_sync.py`` writes from the asyncio worker. Only what truly differs between the
two lives in these two modules: here nothing can be cancelled, and handlers share a few threads.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Generic

from .worker_common import Job, M, SignalPolicy

Queue = queue.SimpleQueue
Handle = threading.Thread
Event = threading.Event


def spawn(func: Callable[[], None], name: str) -> Handle:
    """Runs ``func()`` in a daemon thread of its own."""
    thread = threading.Thread(target=func, name=name, daemon=True)
    thread.start()
    return thread


def gather(*handles: Handle) -> None:
    """Waits for the threads to end."""
    for thread in handles:
        thread.join()


def cancelling() -> bool:
    """A thread is never cancelled."""
    return False


def attempt(handler: Callable[[M], Any], msg: M) -> BaseException | None:
    """Calls the handler; returns what it raised, whatever it was, or None."""
    try:
        handler(msg)
    except BaseException as exc:  # a handler's failure is data, whatever it is
        return exc
    return None


class Crew(Generic[M]):
    """``size`` threads, each running one job at a time, taken from a queue."""

    def __init__(self, work: Callable[[Job[M]], None], size: int) -> None:
        self._work = work
        self._jobs: queue.SimpleQueue[Job[M] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"pushpop-handler-{i}", daemon=True)
            for i in range(size)
        ]
        self._busy = 0  # jobs taken and not yet done
        self._changed = threading.Condition()

    def start(self) -> None:
        """Starts the threads."""
        for thread in self._threads:
            thread.start()

    def take(self, job: Job[M]) -> None:
        """Hands the job to the next free thread."""
        with self._changed:
            self._busy += 1
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._work(job)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the jobs taken to end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._busy and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)

    def cancel(self, jobs: list[Job[M]]) -> None:
        """A thread cannot be cancelled: a released job's handler runs on, and whatever it
        does then is fenced off by the lease it lost."""

    def stop(self) -> None:
        """Ends each thread once it is idle."""
        for _ in self._threads:
            self._jobs.put(None)


@contextlib.contextmanager
def handling_signals(stop: Callable[[], None], policy: SignalPolicy) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop()`` (see SignalPolicy) while in the block, and the handlers
    that were there before come back after it; only in the main thread, where signals go."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in wanted}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop()
        policy.received(signum)

    for sig in wanted:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
