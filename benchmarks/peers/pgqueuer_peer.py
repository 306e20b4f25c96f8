"""pgqueuer: an asyncio job queue on PostgreSQL, used through its Queries and QueueManager.

Jobs are enqueued with ``Queries.enqueue`` (a list of them in one call for a batch) and
consumed by ``QueueManager`` instances, the library's worker, over asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import asyncpg  # type: ignore[import-not-found, import-untyped, unused-ignore]
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager  # type: ignore[import-not-found, import-untyped, unused-ignore]
from psycopg.conninfo import conninfo_to_dict

from .common import (
    AsyncPickups,
    Config,
    Peer,
    connect,
    sample_pickups_async,
    scratch_database,
)

ENTRYPOINT = "peers"
FILL_CHUNK = 1_000


def url(conninfo: str) -> str:
    """A libpq conninfo as the URL asyncpg takes."""
    d = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    user = quote(d.get("user", "postgres"))
    password = f":{quote(d['password'])}" if d.get("password") else ""
    host, port = d.get("host", "127.0.0.1"), d.get("port", "5432")
    return f"postgresql://{user}{password}@{host}:{port}/{quote(d.get('dbname', 'postgres'))}"


class PgQueuer(Peer):
    """Producers and QueueManagers in one event loop, one asyncpg connection each."""

    name = "pgqueuer"
    label = "pgqueuer"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""

    def version(self) -> str:
        """pgqueuer's and asyncpg's versions."""
        return (
            f"pgqueuer {importlib.metadata.version('pgqueuer')}, "
            f"asyncpg {importlib.metadata.version('asyncpg')}"
        )

    def notes(self) -> str:
        """The calls and settings."""
        c = self.config
        return (
            "Its schema installed with `Queries(driver).install()`; every connection an "
            "`AsyncpgDriver` over its own `asyncpg.connect()`. push: `await queries.enqueue"
            f"(entrypoint, payload)` from {c.threads} coroutines; batch: one `enqueue` call "
            f"with lists of {c.batch} entrypoints, payloads and priorities. pop: {c.threads} "
            "`QueueManager`s with an async no-op `@qm.entrypoint`, `qm.run(batch_size=1)`; "
            f"batch: `batch_size={c.batch}` (the QueueManager also writes the finished jobs' "
            "statuses in batches of that size); timed from `run()` until every job has been "
            "handled and is gone from the queue table (its status written). Pickup: one "
            "`QueueManager` (`batch_size=1`) waiting on the empty queue, woken by its "
            "LISTEN/NOTIFY."
        )

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with pgqueuer's schema."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with scratch_database(self.config.server, "pgqueuer") as conninfo:
                self.conninfo = conninfo
                asyncio.run(self._install())
                yield

        return run()

    @contextlib.asynccontextmanager
    async def _drivers(self, n: int) -> AsyncIterator[list[AsyncpgDriver]]:
        """n drivers, each over an asyncpg connection of its own, closed at exit."""
        conns = [await asyncpg.connect(url(self.conninfo)) for _ in range(n)]
        try:
            yield [AsyncpgDriver(conn) for conn in conns]
        finally:
            for conn in conns:
                await conn.close()

    async def _install(self) -> None:
        async with self._drivers(1) as (driver,):
            await Queries(driver).install()

    async def _enqueue(self, queries: Queries, batch: int, calls: int) -> None:
        payload = self.config.payload
        for _ in range(calls):
            if batch == 1:
                await queries.enqueue(ENTRYPOINT, payload)
            else:
                await queries.enqueue([ENTRYPOINT] * batch, [payload] * batch, [0] * batch)

    def _reset(self) -> int:
        """Empties the queue (and the log of finished jobs); returns the jobs left before."""
        with connect(self.conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()
            conn.execute("TRUNCATE pgqueuer, pgqueuer_log")
        return int(row[0]) if row else 0

    def _count(self) -> int:
        with connect(self.conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()
        return int(row[0]) if row else 0

    def _produce(self, batch: int) -> float:
        c = self.config
        self._reset()

        async def main() -> float:
            async with self._drivers(c.threads) as drivers:
                calls = c.per_thread // batch
                start = time.perf_counter()
                await asyncio.gather(*(self._enqueue(Queries(d), batch, calls) for d in drivers))
                return time.perf_counter() - start

        seconds = asyncio.run(main())
        if self._count() != c.total:
            raise RuntimeError("the producers did not enqueue every job")
        return c.total / seconds

    def _consume(self, batch: int) -> float:
        c = self.config
        self._reset()

        async def fill() -> None:
            async with self._drivers(1) as (driver,):
                await self._enqueue(Queries(driver), FILL_CHUNK, c.total // FILL_CHUNK)
                await self._enqueue(Queries(driver), 1, c.total % FILL_CHUNK)

        asyncio.run(fill())

        async def main() -> float:
            async with self._drivers(c.threads) as drivers:
                return await self._drain(drivers, batch)

        seconds = asyncio.run(main())
        if self._count():
            raise RuntimeError("the QueueManagers left jobs behind")
        return c.total / seconds

    async def _drain(self, drivers: list[AsyncpgDriver], batch: int) -> float:
        """QueueManagers until every job was handled and acknowledged; the seconds it took."""
        total, done, seen = self.config.total, asyncio.Event(), [0]
        managers = [QueueManager(Queries(d)) for d in drivers]

        async def handler(job: Job) -> None:
            seen[0] += 1
            if seen[0] >= total:
                done.set()

        for qm in managers:
            qm.entrypoint(ENTRYPOINT)(handler)

        acked = [0.0]

        async def stop_when_done() -> None:
            await done.wait()
            # The handlers have all run; the last statuses may still be in the buffers.
            while await asyncio.to_thread(self._count):
                await asyncio.sleep(0.005)
            acked[0] = time.perf_counter()
            for qm in managers:
                qm.shutdown.set()

        start = time.perf_counter()
        await asyncio.gather(stop_when_done(), *(qm.run(batch_size=batch) for qm in managers))
        return acked[0] - start

    def push(self) -> float:
        """``enqueue`` of one job per call."""
        return self._produce(1)

    def push_batch(self) -> float:
        """``enqueue`` of a batch of jobs per call."""
        return self._produce(self.config.batch)

    def pop(self) -> float:
        """QueueManagers fetching one job at a time."""
        return self._consume(1)

    def pop_batch(self) -> float:
        """QueueManagers fetching a batch at a time."""
        return self._consume(self.config.batch)

    def latency(self) -> list[float]:
        """A QueueManager waiting on the empty queue; one enqueue at a time."""
        self._reset()

        async def main() -> list[float]:
            pickups = AsyncPickups()
            async with self._drivers(2) as (consumer, producer):
                qm = QueueManager(Queries(consumer))

                async def handler(job: Job) -> None:
                    pickups()

                qm.entrypoint(ENTRYPOINT)(handler)
                queries, payload = Queries(producer), self.config.payload

                async def push() -> object:
                    return await queries.enqueue(ENTRYPOINT, payload)

                running = asyncio.create_task(qm.run(batch_size=1))
                try:
                    await asyncio.sleep(0.5)  # its LISTEN in place
                    return await sample_pickups_async(push, pickups, self.config.samples)
                finally:
                    qm.shutdown.set()
                    await running

        return asyncio.run(main())
