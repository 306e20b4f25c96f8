"""procrastinate: a task queue on PostgreSQL, used through an App, a task and its worker.

Jobs are deferred with ``task.defer_async`` (``batch_defer_async`` for a batch) and run by
``app.run_worker_async``; its worker fetches one job at a time, so it has no batch consume.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
from collections.abc import Callable, Iterator
from typing import Any

import procrastinate  # type: ignore[import-not-found, import-untyped, unused-ignore]

from .common import AsyncPickups, Config, Peer, connect, sample_pickups_async, scratch_database

QUEUE = "peers"
FILL_CHUNK = 1_000


class Procrastinate(Peer):
    """An App over ``PsycopgConnector``; producers and the worker share one event loop."""

    name = "procrastinate"
    label = "procrastinate"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""

    def version(self) -> str:
        """procrastinate's version."""
        return f"procrastinate {importlib.metadata.version('procrastinate')}"

    def notes(self) -> str:
        """The calls and settings."""
        c = self.config
        return (
            "`procrastinate.App(connector=PsycopgConnector(conninfo=..., max_size="
            f"{c.threads}))`, its schema applied with `app.schema_manager.apply_schema_async()`, "
            f"one `@app.task(queue=...)` async no-op taking the payload as a {c.payload_size}-"
            "character string argument. push: `await task.defer_async(payload=...)` from "
            f"{c.threads} coroutines; batch: `await task.batch_defer_async(...)` of {c.batch} "
            f"jobs. pop: `await app.run_worker_async(queues=[...], concurrency={c.threads}, "
            "wait=False)`, which returns once the queue is empty; timed from its start to its "
            "return. Its worker fetches one job at a time, so there is no batch consume. "
            "Finished jobs stay in its table (the default `delete_jobs`). Pickup: a worker "
            "(`concurrency=1`, `listen_notify` on, the default) waiting on the empty queue."
        )

    def _app(self, on_run: Callable[[], None]) -> tuple[procrastinate.App, Any]:
        """An App over the scratch database, and its task, which calls ``on_run``."""
        connector = procrastinate.PsycopgConnector(
            conninfo=self.conninfo, min_size=1, max_size=self.config.threads
        )
        app = procrastinate.App(connector=connector)

        async def noop(payload: str) -> None:
            on_run()

        task = app.task(name="peers_noop", queue=QUEUE)(noop)
        return app, task

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with procrastinate's schema."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with scratch_database(self.config.server, "procrastinate") as conninfo:
                self.conninfo = conninfo
                app, _ = self._app(lambda: None)

                async def install() -> None:
                    async with app.open_async():
                        await app.schema_manager.apply_schema_async()

                asyncio.run(install())
                yield

        return run()

    def _reset(self) -> None:
        with connect(self.conninfo) as conn:
            conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    def _todo(self) -> int:
        with connect(self.conninfo) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            ).fetchone()
        return int(row[0]) if row else 0

    async def _defer(self, task: Any, batch: int, calls: int) -> None:
        payload = self.config.text_payload
        for _ in range(calls):
            if batch == 1:
                await task.defer_async(payload=payload)
            else:
                await task.batch_defer_async(*[{"payload": payload}] * batch)

    def _produce(self, batch: int) -> float:
        c = self.config
        self._reset()
        app, task = self._app(lambda: None)

        async def main() -> float:
            async with app.open_async():
                calls = c.per_thread // batch
                start = time.perf_counter()
                await asyncio.gather(*(self._defer(task, batch, calls) for _ in range(c.threads)))
                return time.perf_counter() - start

        seconds = asyncio.run(main())
        if self._todo() != c.total:
            raise RuntimeError("the producers did not defer every job")
        return c.total / seconds

    def push(self) -> float:
        """``defer_async`` of one job per call."""
        return self._produce(1)

    def push_batch(self) -> float:
        """``batch_defer_async`` of a batch of jobs per call."""
        return self._produce(self.config.batch)

    def pop(self) -> float:
        """The worker, until the queue is empty."""
        c = self.config
        self._reset()
        seen = [0]

        def ran() -> None:
            seen[0] += 1

        app, task = self._app(ran)

        async def main() -> float:
            async with app.open_async():
                await self._defer(task, FILL_CHUNK, c.total // FILL_CHUNK)
                await self._defer(task, 1, c.total % FILL_CHUNK)
                start = time.perf_counter()
                await app.run_worker_async(
                    queues=[QUEUE], concurrency=c.threads, wait=False, install_signal_handlers=False
                )
                return time.perf_counter() - start

        seconds = asyncio.run(main())
        if seen[0] != c.total or self._todo():
            raise RuntimeError(f"the worker ran {seen[0]} of {c.total} jobs")
        return c.total / seconds

    def latency(self) -> list[float]:
        """A worker waiting on the empty queue; one defer at a time."""
        self._reset()
        pickups = AsyncPickups()
        app, task = self._app(pickups)
        payload = self.config.text_payload

        async def main() -> list[float]:
            async with app.open_async():
                worker = asyncio.create_task(
                    app.run_worker_async(
                        queues=[QUEUE], concurrency=1, install_signal_handlers=False
                    )
                )
                try:
                    await asyncio.sleep(0.5)  # its LISTEN in place

                    async def push() -> object:
                        return await task.defer_async(payload=payload)

                    return await sample_pickups_async(push, pickups, self.config.samples)
                finally:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker

        return asyncio.run(main())
