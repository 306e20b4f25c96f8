"""Queue gauges for Prometheus, read from the database at scrape time (the ``metrics`` extra).

``pushpop exporter --port 9187`` serves them; :func:`register_queue_metrics` adds the same
collector to an application's own registry. One query (``pushpop.stats()`` and the live
workers, see :func:`pushpop.calls.queue_gauges`) answers every scrape within ``cache_seconds``
of it, however many scrapers ask. ``prometheus_client`` is imported only when a collector is
made, so this module imports without the extra.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import calls, checks, constants
from .client import Client
from .errors import Error
from .metrics import prometheus

log = logging.getLogger("pushpop.exporter")

CACHE_SECONDS = 5.0
PORT = 9187
STATES = ("ready", "scheduled", "pending", "completed", "discarded", "blocked")


class QueueCollector:
    """A Prometheus collector of pushpop's queue gauges, per topic:

    - ``pushpop_queue_messages{topic,state}``: messages by state;
    - ``pushpop_queue_paused{topic}``: 1 while the topic is paused;
    - ``pushpop_queue_oldest_ready_age_seconds{topic}``: how long the oldest ready message has
      waited (0 when none is ready): the number to alert on;
    - ``pushpop_queue_workers{topic}``: live workers consuming the topic;
    - ``pushpop_queue_up``: 1 if the last read reached the database, else 0 (and no other
      gauge).

    The client's role needs ``pushpop_consumer`` (``stats()`` and ``workers()``).
    """

    def __init__(self, client: Client, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.client = client
        self.cache_seconds = checks.duration(cache_seconds, "cache_seconds").total_seconds()
        self.pc = prometheus("the queue exporter")
        self.reads = 0  # queries sent, for the curious and the tests
        self._lock = threading.Lock()
        self._families_cache: list[Any] = []
        self._read_at = float("-inf")

    def rows(self) -> list[tuple[Any, ...]] | None:
        """The gauges' rows, read afresh; None if the database did not answer."""
        self.reads += 1
        try:
            return self.client._run(calls.queue_gauges(constants.STALE_AFTER))
        except Error as exc:
            log.warning("cannot read the queue's gauges: %s", " ".join(str(exc).split()))
            return None

    def describe(self) -> list[Any]:
        """The metric families without samples: registering sends no query."""
        return list(self._families([]))

    def collect(self) -> list[Any]:
        """The gauges as of the last read, at most ``cache_seconds`` old. Concurrent scrapes
        wait for one read instead of each sending their own, and share its families."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.cache_seconds:
                rows = self.rows()
                self._families_cache = [_up(0)] if rows is None else list(self._families(rows))
                self._read_at = now
            return self._families_cache

    def _families(self, rows: list[tuple[Any, ...]]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily as gauge  # noqa: N813

        messages = gauge(
            "pushpop_queue_messages", "Messages per topic and state.", labels=["topic", "state"]
        )
        paused = gauge("pushpop_queue_paused", "1 while the topic is paused.", labels=["topic"])
        age = gauge(
            "pushpop_queue_oldest_ready_age_seconds",
            "How long the oldest ready message of the topic has waited; 0 when none is ready.",
            labels=["topic"],
        )
        workers = gauge(
            "pushpop_queue_workers", "Live workers consuming the topic.", labels=["topic"]
        )
        for topic, *counts, is_paused, oldest, live, blocked in rows:
            for state, count in zip(STATES, [*counts, blocked], strict=True):
                messages.add_metric([topic, state], count)
            paused.add_metric([topic], 1 if is_paused else 0)
            age.add_metric([topic], oldest)
            workers.add_metric([topic], live)
        yield from (messages, paused, age, workers, _up(1))


def _up(value: int) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(
        "pushpop_queue_up", "1 if the exporter's last read reached the database.", value
    )


def register_queue_metrics(
    client: Client, registry: Any = None, *, cache_seconds: float = CACHE_SECONDS
) -> QueueCollector:
    """Adds the queue gauges to ``registry`` (prometheus_client's default one if None), so an
    application's own ``/metrics`` serves them; returns the collector (to unregister it)."""
    collector = QueueCollector(client, cache_seconds=cache_seconds)
    (collector.pc.REGISTRY if registry is None else registry).register(collector)
    return collector


def serve(
    conninfo: str,
    port: int = PORT,
    addr: str = "0.0.0.0",  # noqa: S104 - an exporter is scraped from other hosts
    *,
    cache_seconds: float = CACHE_SECONDS,
    started: Callable[[int], None] = lambda port: None,
) -> None:
    """Serves the queue gauges on ``addr:port`` at ``/metrics`` until SIGTERM or SIGINT (in
    the main thread); ``started`` is told the port (useful with port 0: any free one)."""
    checks.integer(port, "port", low=0, high=65535)
    pc = prometheus("the queue exporter")
    stop = threading.Event()
    with Client(conninfo, min_size=1, max_size=1) as client:
        registry = pc.CollectorRegistry(auto_describe=True)
        register_queue_metrics(client, registry, cache_seconds=cache_seconds)
        try:
            server, thread = pc.start_http_server(port, addr, registry=registry)
        except OSError as exc:
            raise Error(f"cannot serve metrics on port {port}: {exc}") from exc
        previous = {
            sig: signal.signal(sig, lambda signum, frame: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            started(int(server.server_port))
            stop.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.shutdown()
            server.server_close()
            thread.join(5)
