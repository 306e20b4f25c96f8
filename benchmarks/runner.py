"""Runs a workload on several threads for a fixed time and reports its rate."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence

Op = Callable[[], int]
"""Does one unit of work (a push, a pop and its completion, a batch) and says how many messages."""

Feed = Callable[[int], None]
"""Told, every few milliseconds, how many messages the ops have handled so far."""

FEED_EVERY = 0.01


def throughput(
    ops: Sequence[Op], warmup: float, duration: float, feed: Feed | None = None
) -> float:
    """Messages per second of ops running flat out, one thread each, counted after the warm-up.

    ``feed`` runs on a thread of its own alongside, for the whole run (warm-up included).
    The first error of any thread stops the run and is raised here.
    """
    counts = [0] * len(ops)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(i: int, op: Op) -> None:
        try:
            while not stop.is_set():
                counts[i] += op()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def feeding(feed: Feed) -> None:
        try:
            while not stop.wait(FEED_EVERY):
                feed(sum(counts))
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=work, args=(i, op), daemon=True) for i, op in enumerate(ops)]
    if feed is not None:
        threads.append(threading.Thread(target=feeding, args=(feed,), daemon=True))
    for thread in threads:
        thread.start()
    stop.wait(warmup)
    before, started = sum(counts), time.perf_counter()
    stop.wait(duration)
    after, ended = sum(counts), time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    if feed is not None:
        feed(sum(counts))  # what the last ops took, so the next run starts at the same depth
    return (after - before) / (ended - started)


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
