"""pushpop itself, through its public API: the sync ``Client``, and a ``Worker``.

The Client row is the same calls an application makes one at a time or in batches; the
Worker row is how an application usually consumes: a pool of handler slots fed by one loop.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pushpop
from pushpop import Client, Message, Worker, migrations

from ..latency import Pickups
from .common import Config, Peer, sample_pickups, scratch_database, timed_threads

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "peers"
CONCURRENCY = 16
POLL_INTERVAL = 30.0
"""The Worker's polling fallback: far longer than any pickup a wake-up explains."""
READY_TIMEOUT = 10.0
FILL_CHUNK = 1_000


class _Pushpop(Peer):
    """A migrated scratch database and the helpers both rows use."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""

    def version(self) -> str:
        """pushpop's version, and the commit of this tree (and whether it has changes)."""
        tree, git = "this tree", shutil.which("git")
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            if git is None:
                raise OSError("no git")
            commit = subprocess.run(
                [git, "-C", str(ROOT), "describe", "--always", "--dirty=, with changes"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            tree = f"this tree, commit {commit}" if commit else tree
        return f"pushpop {pushpop.__version__} ({tree})"

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with pushpop's schema migrated in."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with scratch_database(self.config.server, self.name) as conninfo:
                migrations.migrate(conninfo)
                self.conninfo = conninfo
                yield

        return run()

    def client(self) -> Client:
        """A Client whose pool holds one connection per thread."""
        n = self.config.threads
        return Client(self.conninfo, min_size=n, max_size=n)

    def reset(self, client: Client, fill: int = 0) -> None:
        """Empties the topic, then pushes ``fill`` ready messages to it."""
        client.purge(TOPIC)
        payloads = [self.config.payload] * FILL_CHUNK
        for start in range(0, fill, FILL_CHUNK):
            client.push_many(TOPIC, payloads[: fill - start])

    def ready(self, client: Client) -> int:
        """Ready messages in the topic."""
        return sum(s.ready for s in client.stats() if s.topic == TOPIC)


class PushpopClient(_Pushpop):
    """``Client.push``, ``pop`` + ``complete``, ``push_many``, ``pop_many`` + ``complete_many``."""

    name = "pushpop"
    label = "pushpop Client"

    def notes(self) -> str:
        """The calls."""
        c = self.config
        return (
            f"`pushpop.Client` with a pool of {c.threads} connections shared by {c.threads} "
            "threads. push: `client.push(topic, payload)`; batch: `client.push_many(topic, "
            f"[payload] * {c.batch})`. pop: `client.pop(topic)` then `msg.complete()`; batch: "
            f"`client.pop_many(topic, {c.batch})` then `client.complete_many(msgs)`. Every "
            "call is a committed transaction (durable, the default)."
        )

    def _produce(self, op: Callable[[Client], object], calls: int) -> float:
        with self.client() as client:
            self.reset(client)

            def work() -> None:
                for _ in range(calls):
                    op(client)

            seconds = timed_threads([work] * self.config.threads)
            if self.ready(client) != self.config.total:
                raise RuntimeError("the producers did not push every message")
        return self.config.total / seconds

    def _consume(self, op: Callable[[Client], int]) -> float:
        with self.client() as client:
            self.reset(client, self.config.total)

            def work() -> None:
                while op(client):
                    pass

            seconds = timed_threads([work] * self.config.threads)
            if self.ready(client):
                raise RuntimeError("the consumers left messages behind")
        return self.config.total / seconds

    def push(self) -> float:
        """``client.push`` of one message per call."""
        payload = self.config.payload
        return self._produce(lambda c: c.push(TOPIC, payload), self.config.per_thread)

    def push_batch(self) -> float:
        """``client.push_many`` of a batch per call."""
        payloads = [self.config.payload] * self.config.batch
        calls = self.config.per_thread // self.config.batch
        return self._produce(lambda c: c.push_many(TOPIC, payloads), calls)

    def pop(self) -> float:
        """``client.pop`` then ``msg.complete()``."""

        def op(client: Client) -> int:
            msg = client.pop(TOPIC)
            if msg is None:
                return 0
            msg.complete()
            return 1

        return self._consume(op)

    def pop_batch(self) -> float:
        """``client.pop_many`` of a batch, then ``client.complete_many`` of it."""
        n = self.config.batch

        def op(client: Client) -> int:
            msgs = client.pop_many(TOPIC, n)
            if msgs:
                client.complete_many(msgs)
            return len(msgs)

        return self._consume(op)


@contextlib.contextmanager
def running(
    client: Client, worker: Worker[Message], *, wait: bool = True
) -> Iterator[Callable[[], bool]]:
    """Runs the worker on a thread until exit, then stops it and re-raises its error.

    With ``wait``, yields once the worker is registered (its LISTEN in place). Yields a
    function that tells whether the worker's thread has ended early.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="peers-worker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while wait and worker.id not in {w.id for w in client.workers()}:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.01)
        yield lambda: not thread.is_alive()
    finally:
        worker.stop()
        thread.join()
        if errors:
            raise errors[0]


class PushpopWorker(_Pushpop):
    """A ``pushpop.Worker`` with a no-op handler: its consume rate and its idle pickup."""

    name = "worker"
    label = f"pushpop Worker (concurrency {CONCURRENCY})"

    def notes(self) -> str:
        """The settings."""
        return (
            f"`pushpop.Worker(client, topic, handler, concurrency={CONCURRENCY})` with a no-op "
            "handler, on a thread of the benchmark's process. Its figure is under pop + ack: "
            "the time from `worker.run()` starting until the handler has run for every "
            "preloaded message (the Worker pops into all its free slots at once and "
            "completes the finished ones together). Pickup: the same Worker with "
            f"`poll_interval={POLL_INTERVAL:g}`, woken by the push (LISTEN/NOTIFY while idle); "
            "the producer is a `Client.push`."
        )

    def pop(self) -> float:
        """Seconds for the Worker to run the handler on every preloaded message."""
        total, seen, lock, done = self.config.total, [0], threading.Lock(), threading.Event()

        def handler(_: Message) -> None:
            with lock:
                seen[0] += 1
                if seen[0] == total:
                    done.set()

        with Client(self.conninfo) as client:
            self.reset(client, total)
            worker = Worker(client, TOPIC, handler, concurrency=CONCURRENCY)
            start = time.perf_counter()
            with running(client, worker, wait=False) as failed:
                while not done.wait(0.05):
                    if failed():
                        raise RuntimeError("the worker stopped before taking every message")
                seconds = time.perf_counter() - start
            if self.ready(client):
                raise RuntimeError("the worker left messages behind")
        return total / seconds

    def latency(self) -> list[float]:
        """Pickups by a Worker whose only fast path is its wake-up."""
        pickups = Pickups()
        with (
            Client(self.conninfo, min_size=2) as consumer,
            Client(self.conninfo, min_size=1, max_size=1) as producer,
        ):
            self.reset(producer)
            worker = Worker(
                consumer, TOPIC, pickups, concurrency=CONCURRENCY, poll_interval=POLL_INTERVAL
            )
            payload = self.config.payload
            with running(consumer, worker):
                return sample_pickups(
                    lambda: producer.push(TOPIC, payload), pickups, self.config.samples
                )
