"""A real ``pushpop.Worker`` on a thread of its own, for the figures measured through one."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from pushpop import Client, Message, Worker

READY_TIMEOUT = 10.0


@contextlib.contextmanager
def background(name: str, target: Callable[[], None], stop: Callable[[], None]) -> Iterator[None]:
    """Runs ``target`` on a thread; at exit calls ``stop``, joins and re-raises its error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join()
        if errors:  # the thread's failure explains whatever the caller saw go wrong
            raise errors[0]


@contextlib.contextmanager
def running(client: Client, worker: Worker[Message]) -> Iterator[Worker[Message]]:
    """Runs the worker until exit, then ``stop()``s it and waits for its drain.

    Yields once the worker is listed by ``client.workers()``: it registers only after its
    LISTEN is in place, so from then on a push can wake it.
    """
    with background("bench-worker", worker.run, worker.stop):
        deadline = time.monotonic() + READY_TIMEOUT
        while worker.id not in {w.id for w in client.workers()}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not register within {READY_TIMEOUT:.0f} s")
            time.sleep(0.01)
        yield worker
