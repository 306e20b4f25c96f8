"""``client.work()`` throughput: a real Worker with a no-op handler on a topic that never runs dry.

Its ratio is to pushpop's own pop + complete, not to the baseline: the worker should add
little to the calls it is made of.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pushpop import Client, Worker

from . import client_ops, workers
from .data import PUSHPOP, Refill
from .env import TOPIC, Env, Settings
from .figures import Figure, Metric, Values
from .runner import FEED_EVERY, Feed
from .sides import with_client
from .throughput import shallow


class Tally:
    """The no-op handler: counts the messages it is given, from any handler thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, *_: object) -> None:
        with self._lock:
            self.count += 1


def concurrency(s: Settings) -> int:
    """Handler threads: twice the threads of the pop + complete figure, as a worker is sized."""
    return s.threads * 2


def watch(counted: Callable[[], int], feed: Feed, warmup: float, duration: float) -> float:
    """The rate of ``counted()`` over ``duration`` after ``warmup``, feeding it meanwhile."""

    def until(deadline: float) -> None:
        while (now := time.perf_counter()) < deadline:
            feed(counted())
            time.sleep(min(FEED_EVERY, deadline - now))

    until(time.perf_counter() + warmup)
    before, started = counted(), time.perf_counter()
    until(started + duration)
    after, ended = counted(), time.perf_counter()
    return (after - before) / (ended - started)


def _work(env: Env) -> Values:
    s = env.settings
    tally = Tally()
    slots = concurrency(s)
    refill = Refill(env, PUSHPOP)
    try:
        # A connection per handler thread, one to pop with and one spare for the lease keeper.
        with Client(env.conninfo, min_size=slots + 2, max_size=slots + 2) as client:
            worker = Worker(client, TOPIC, tally, concurrency=slots)
            with workers.running(client, worker):
                rate = watch(lambda: tally.count, refill, s.warmup, s.duration)
        refill(tally.count)  # what the drain took, so the next round starts at the same depth
    finally:
        refill.close()
    return {"work_noop": rate}


def _pop_complete(env: Env) -> Values:
    return {"work_noop": with_client(env, client_ops.pop_complete, refill=PUSHPOP)}


def figures(s: Settings) -> list[Figure]:
    """A Worker's throughput with a no-op handler, against pushpop's single pop + complete."""
    return [
        Figure(
            "work",
            (Metric("work_noop", "work() no-op vs pushpop pop + complete"),),
            _work,
            _pop_complete,
            setup=shallow,
            note=f"the baseline column is pushpop's own pop + complete ({s.threads} threads, "
            "as in the pop figure), so the ratio reads work() / pop + complete; target ≥ 0.8. "
            f"pushpop: a Worker with concurrency {concurrency(s)} and a handler that only "
            f"counts, on {s.shallow:,} ready messages topped up as they are handled",
        ),
    ]
