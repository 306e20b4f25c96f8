"""Idle pickup latency: how soon a sleeping consumer starts on a message pushed to its topic.

pushpop's consumer is a real ``pushpop.Worker`` polling only every 30 s, so a fast pickup can
only come from its wake-up; the baseline's is a thread that LISTENs and pops when notified.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from pushpop import Client, Worker

from . import baseline, data, workers
from .env import TOPIC, Env, Settings
from .figures import Figure, Metric, Values

POLL_INTERVAL = 30.0
"""The worker's polling fallback: far longer than any pickup a wake-up explains."""
PAUSE = 0.02
"""Between a pickup and the next push, so the consumer is idle (asleep) again."""
WARMUP = 3
"""Pushes picked up but not timed, before each round's samples."""
PICKUP_TIMEOUT = 5.0
ROUNDS = 3
"""At most: each round times every sample on both sides (about 25 s each for 1,000)."""
FULL_SAMPLES = 1_000
"""Pushes timed a round in a full run, so its p99 stands on ten slow pickups; a quick run
times the settings' ``samples``."""


class Pickups:
    """The consumer calls it as it starts on a message; the producer waits for that moment."""

    def __init__(self) -> None:
        self._seen = threading.Event()
        self._at = 0.0

    def __call__(self, *_: object) -> None:
        self._at = time.perf_counter()
        self._seen.set()

    def wait(self) -> float:
        """The ``perf_counter()`` of the next pickup; raises if none comes (no wake-up)."""
        if not self._seen.wait(PICKUP_TIMEOUT):
            raise RuntimeError(f"a push was not picked up within {PICKUP_TIMEOUT:g} s")
        self._seen.clear()
        return self._at


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated between the samples."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sample(push: Callable[[], object], pickups: Pickups, n: int) -> Values:
    """p50 and p99 over n pushes, each timed from the push call returning to its pickup."""
    for _ in range(WARMUP):
        time.sleep(PAUSE)
        push()
        pickups.wait()
    ms = []
    for _ in range(n):
        time.sleep(PAUSE)
        push()
        returned = time.perf_counter()
        ms.append((pickups.wait() - returned) * 1000)
    return {"latency_p50": statistics.median(ms), "latency_p99": percentile(ms, 99)}


def samples(s: Settings) -> int:
    """Pushes timed a round."""
    return s.samples if s.quick else max(s.samples, FULL_SAMPLES)


def _empty(env: Env) -> None:
    data.reset(env)


def _pushpop(env: Env) -> Values:
    pickups = Pickups()
    with (
        Client(env.conninfo, min_size=2) as consumer,
        Client(env.conninfo, min_size=1, max_size=1) as producer,
    ):
        worker = Worker(consumer, TOPIC, pickups, poll_interval=POLL_INTERVAL)
        with workers.running(consumer, worker):
            return sample(lambda: producer.push(TOPIC, env.payload), pickups, samples(env.settings))


@contextlib.contextmanager
def _listener(env: Env, pickups: Pickups) -> Iterator[None]:
    """The hand-written consumer: LISTEN; on a notification, pop until the topic is empty."""
    listening, stop = threading.Event(), threading.Event()
    params = {"topic": TOPIC, "lease": baseline.LEASE, "n": 1}

    def consume() -> None:
        with env.connect() as conn:
            conn.execute("LISTEN baseline")
            listening.set()
            while not stop.is_set():
                if not list(conn.notifies(timeout=0.25, stop_after=1)):
                    continue  # no notification: only there to look at stop now and then
                while (row := conn.execute(baseline.POP, params).fetchone()) is not None:
                    pickups()
                    conn.execute(baseline.COMPLETE, {"id": row[0], "lease": row[8]})

    with workers.background("bench-listener", consume, stop.set):
        if not listening.wait(workers.READY_TIMEOUT):
            raise RuntimeError("the baseline consumer did not LISTEN in time")
        yield


def _baseline(env: Env) -> Values:
    pickups = Pickups()
    with env.connect() as conn, _listener(env, pickups):
        return sample(baseline.push(conn, env, notify=True), pickups, samples(env.settings))


def figures(s: Settings) -> list[Figure]:
    """Push-to-pickup latency of an idle consumer, median and 99th percentile."""
    return [
        Figure(
            "latency",
            (
                Metric("latency_p50", "idle pickup latency, p50", "ms", higher_is_better=False),
                Metric("latency_p99", "idle pickup latency, p99", "ms", higher_is_better=False),
            ),
            _pushpop,
            _baseline,
            setup=_empty,
            rounds=ROUNDS,
            note=f"{samples(s):,} pushes a round, one at a time, each {PAUSE * 1000:.0f} ms after "
            "the last pickup; timed from client.push returning (its commit acknowledged) to "
            f"the handler's start, in a pushpop.Worker polling every {POLL_INTERVAL:.0f} s; "
            "baseline: INSERT + pg_notify, a LISTENing thread popping (UPDATE ... SKIP LOCKED) "
            "when notified",
        ),
    ]
