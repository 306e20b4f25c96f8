"""What every peer shares: the workload's settings, the peer interface, timing and databases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ..latency import PICKUP_TIMEOUT, Pickups

COLUMNS = ("push", "pop", "push_batch", "pop_batch", "latency")
"""The figures a peer may measure; ``latency`` yields p50 and p99."""


@dataclass(frozen=True)
class Config:
    """The workload: the same for every peer, from the command line."""

    messages: int = 10_000
    """Messages per throughput measurement (rounded up to whole batches per thread)."""
    rounds: int = 3
    samples: int = 200
    """Pushes timed per round by the idle pickup figure."""
    threads: int = 4
    batch: int = 100
    payload_size: int = 100
    server: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"

    @property
    def per_thread(self) -> int:
        """Messages each producer or consumer handles: whole batches, so every column agrees."""
        unit = self.batch
        per = -(-self.messages // self.threads)
        return -(-per // unit) * unit

    @property
    def total(self) -> int:
        """Messages a throughput measurement moves (``messages`` rounded up)."""
        return self.per_thread * self.threads

    @property
    def payload(self) -> bytes:
        """The 100-byte payload every message carries."""
        return b"x" * self.payload_size

    @property
    def text_payload(self) -> str:
        """The payload as text, for the peers whose messages are text or JSON."""
        return "x" * self.payload_size


class Peer:
    """A system measured beside pushpop: each figure is one method, None where it cannot."""

    name: ClassVar[str]
    """Its ``--only`` name."""
    label: ClassVar[str]
    """Its row in the table."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def version(self) -> str:
        """The version measured, for the notes."""
        raise NotImplementedError

    def notes(self) -> str:
        """How it was used: the calls and settings, for the notes section."""
        raise NotImplementedError

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """Sets the peer up (a scratch database, a queue) for the run; tears it down after."""
        return contextlib.nullcontext()

    def push(self) -> float | None:
        """Messages a second pushed one per call by the producers."""
        return None

    def pop(self) -> float | None:
        """Messages a second popped and acknowledged one at a time by the consumers."""
        return None

    def push_batch(self) -> float | None:
        """Messages a second pushed in batches."""
        return None

    def pop_batch(self) -> float | None:
        """Messages a second popped and acknowledged in batches."""
        return None

    def latency(self) -> list[float] | None:
        """Milliseconds from each push's commit to an idle consumer's handler starting."""
        return None


def timed_threads(bodies: list[Callable[[], None]]) -> float:
    """Runs each body on a thread of its own, started together; the seconds until all end.

    Whatever a body needs (a connection) is made before, so only the work is timed. The
    first error of any thread is raised once all have ended.
    """
    gate = threading.Barrier(len(bodies) + 1)
    errors: list[BaseException] = []

    def run(body: Callable[[], None]) -> None:
        gate.wait()
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,), daemon=True) for b in bodies]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


PAUSE = 0.02
"""Between a pickup and the next push, so the consumer is idle (waiting) again."""
WARMUP = 3


def sample_pickups(
    push: Callable[[], object], pickups: Pickups, n: int, *, from_call: bool = False
) -> list[float]:
    """n pickup latencies in ms, each from the push call returning to the handler's start.

    ``from_call`` times from the push call's start instead, for a system that may hand the
    message to a consumer before the push returns.
    """
    for _ in range(WARMUP):
        time.sleep(PAUSE)
        push()
        pickups.wait()
    ms = []
    for _ in range(n):
        time.sleep(PAUSE)
        called = time.perf_counter()
        push()
        returned = called if from_call else time.perf_counter()
        ms.append((pickups.wait() - returned) * 1000)
    return ms


class AsyncPickups:
    """:class:`Pickups` for a consumer and producer sharing one event loop."""

    def __init__(self) -> None:
        self._seen = asyncio.Event()
        self._at = 0.0

    def __call__(self, *_: object) -> None:
        self._at = time.perf_counter()
        self._seen.set()

    async def wait(self) -> float:
        """The ``perf_counter()`` of the next pickup; raises if none comes."""
        await asyncio.wait_for(self._seen.wait(), PICKUP_TIMEOUT)
        self._seen.clear()
        return self._at


async def sample_pickups_async(
    push: Callable[[], Awaitable[object]], pickups: AsyncPickups, n: int
) -> list[float]:
    """:func:`sample_pickups` for an asyncio producer and consumer."""
    for _ in range(WARMUP):
        await asyncio.sleep(PAUSE)
        await push()
        await pickups.wait()
    ms = []
    for _ in range(n):
        await asyncio.sleep(PAUSE)
        await push()
        returned = time.perf_counter()
        ms.append((await pickups.wait() - returned) * 1000)
    return ms


@contextlib.contextmanager
def scratch_database(server: str, suffix: str) -> Iterator[str]:
    """A database of its own for one peer; yields its conninfo; drops it at exit."""
    name = f"pushpop_peers_{os.getpid()}_{suffix}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """An autocommit connection: every statement its own committed (fsynced) transaction."""
    return psycopg.connect(conninfo, autocommit=True)


@contextlib.contextmanager
def connections(conninfo: str, n: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """n autocommit connections, closed at exit."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(connect(conninfo)) for _ in range(n)]
