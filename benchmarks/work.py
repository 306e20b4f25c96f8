"""``client.work()`` throughput: a real Worker with a no-op handler on a topic that never runs dry.

Its first ratio is to pushpop's own pop + complete: the worker should add little to the calls
it is made of. The others are to a ceiling: pgbench, a C client, popping and deleting rows of a
table with nothing but an id, as fast as the server goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pushpop import Client, Worker

from . import baseline, client_ops, workers
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


def worker_rate(env: Env, slots: int) -> float:
    """Messages a second through a Worker with ``slots`` handlers that only count."""
    s = env.settings
    tally = Tally()
    refill = Refill(env, PUSHPOP)
    try:
        # A connection per handler thread and two spare (completions, lease extensions); the
        # worker pops on a connection of its own.
        with Client(env.conninfo, min_size=slots + 2, max_size=slots + 2) as client:
            worker = Worker(client, TOPIC, tally, concurrency=slots)
            with workers.running(client, worker):
                rate = watch(lambda: tally.count, refill, s.warmup, s.duration)
        refill(tally.count)  # what the drain took, so the next round starts at the same depth
    finally:
        refill.close()
    return rate


def _work(env: Env) -> Values:
    rate = worker_rate(env, concurrency(env.settings))
    return {"work_noop": rate, "work_vs_ceiling": rate}


def _pop_complete(env: Env) -> Values:
    s = env.settings
    values = {"work_noop": with_client(env, client_ops.pop_complete, refill=PUSHPOP)}
    if baseline.has_pgbench():
        values["work_vs_ceiling"] = baseline.ceiling(env, s.threads, s.batch)
    return values


def _work_single(env: Env) -> Values:
    return {"work_single": worker_rate(env, 1)}


def _single_ceiling(env: Env) -> Values:
    return {"work_single": baseline.ceiling(env, 1, 1)} if baseline.has_pgbench() else {}


def figures(s: Settings) -> list[Figure]:
    """A Worker's throughput with a no-op handler, against pushpop's single pop + complete."""
    return [
        Figure(
            "work",
            (
                Metric("work_noop", "work() no-op vs pushpop pop + complete"),
                Metric("work_vs_ceiling", f"work() no-op vs pgbench ceiling, batches of {s.batch}"),
            ),
            _work,
            _pop_complete,
            setup=shallow,
            note=f"the first row's baseline column is pushpop's own pop + complete ({s.threads} "
            "threads, as in the pop figure), so the ratio reads work() / pop + complete; target "
            f"≥ 0.8. The second row's is the ceiling: pgbench, {s.threads} clients, each "
            f"transaction an UPDATE ... SKIP LOCKED of {s.batch} rows of a table with nothing "
            "but an id, and a DELETE of them (what a C client gets from the server with no work "
            f"of its own); target ≥ 0.25. pushpop: a Worker with concurrency {concurrency(s)} and "
            f"a handler that only counts, on {s.shallow:,} ready messages topped up as they are "
            "handled",
        ),
        Figure(
            "work_single",
            (Metric("work_single", "work() one at a time vs pgbench pop + DELETE of 1"),),
            _work_single,
            _single_ceiling,
            setup=shallow,
            note="pushpop: a Worker with concurrency 1 and the counting handler; baseline: "
            "pgbench, 1 client, each transaction an UPDATE ... SKIP LOCKED of 1 row of the bare "
            "table and a DELETE of it. A message at a time for the handler, not for the "
            "worker: it pops ahead for a handler faster than its pops, in batches",
        ),
    ]
