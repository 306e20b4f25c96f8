"""A worker's Prometheus metrics, served on ``metrics_port`` (the ``metrics`` extra).

``prometheus_client`` is imported only when a worker asks for a port: without it the worker
reports to :class:`WorkerMetrics`, whose methods do nothing. The names, labels and units
below are a public contract (docs/observability.md lists them); change them only with a
release note.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from . import checks
from .errors import Error, LeaseLost

log = logging.getLogger("pushpop.worker")

METRICS_EXTRA = "pip install 'pushpop[metrics]'"

OUTCOMES = ("completed", "retried", "discarded", "lease_lost", "released")
"""The ``outcome`` label of ``pushpop_messages_total``."""

_DONE = {"complete": "completed", "defer": "retried", "discard": "discarded", "release": "released"}

# Complete-many batches go up to constants.COMPLETE_BATCH (500) messages.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def prometheus(option: str) -> ModuleType:
    """``prometheus_client``, or an :class:`~pushpop.Error` in one line saying which extra
    ``option`` needs."""
    try:
        import prometheus_client
    except ImportError:
        raise Error(
            f"{option} needs prometheus_client, which is not installed: {METRICS_EXTRA}"
        ) from None
    return prometheus_client


def outcome(action: str, error: BaseException | None = None) -> str | None:
    """The ``outcome`` label of a message whose ``action`` (complete, defer, discard, release) the
    database took (``error`` None) or refused; None for a refusal that is no lost lease (the
    message returns when its lease lapses, counted in ``pushpop_acknowledgement_errors_total``)."""
    if error is None:
        return _DONE[action]
    return "lease_lost" if isinstance(error, LeaseLost) else None


class WorkerMetrics:
    """What a worker reports as it goes. This base does nothing: a worker without
    ``metrics_port`` pays one empty method call per report."""

    port: int | None = None

    def start(self) -> None:
        """Starts serving ``/metrics``."""

    def stop(self) -> None:
        """Stops serving."""

    def popped(self, topic: str, n: int) -> None:
        """A pop of ``topic`` returned ``n`` messages."""

    def woke(self) -> None:
        """The control connection woke the worker."""

    def handler_started(self, topic: str) -> None:
        """A handler began."""

    def handler_ended(self, topic: str, seconds: float) -> None:
        """A handler returned or raised after ``seconds``."""

    def settled(self, topic: str, label: str | None) -> None:
        """A message's delivery ended with outcome ``label`` (see :func:`outcome`); None: the
        database did not take the acknowledgement."""

    def batch(self, size: int) -> None:
        """One complete_many of ``size`` messages was sent."""

    def reached_database(self) -> None:
        """A call of the worker's got through to the database."""


class PrometheusMetrics(WorkerMetrics):
    """A worker's metrics in a registry of their own, served over HTTP on ``wanted_port`` (0: any
    free port) from ``start()`` to ``stop()``; ``port`` is the one served on, once started."""

    def __init__(self, topics: Sequence[str], port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
        self.wanted_port = checks.integer(port, "metrics_port", low=0, high=65535)
        self.addr = addr
        pc = prometheus("metrics_port")
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = pc.Counter(
            "pushpop_messages", "Messages whose delivery ended, by outcome.",
            ["topic", "outcome"], registry=r,
        )  # fmt: skip
        self.duration = pc.Histogram(
            "pushpop_handler_duration_seconds", "How long handlers ran, whether they returned"
            " or raised.", ["topic"], registry=r,
        )  # fmt: skip
        self.in_flight = pc.Gauge(
            "pushpop_handlers_in_flight", "Handlers running now.", ["topic"], registry=r
        )
        self.pops = pc.Counter("pushpop_pops", "Pops sent.", ["topic"], registry=r)
        self.empty_pops = pc.Counter(
            "pushpop_empty_pops", "Pops that returned no message.", ["topic"], registry=r
        )
        self.wakeups = pc.Counter(
            "pushpop_wakeups", "Wake-ups from the control connection (a push to a topic of"
            " the worker's, or listening again after an outage).", registry=r,
        )  # fmt: skip
        self.batches = pc.Histogram(
            "pushpop_acknowledgement_batch_messages", "Messages per complete_many the"
            " worker sent.", buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.ack_errors = pc.Counter(
            "pushpop_acknowledgement_errors", "Acknowledgements the database did not take,"
            " for another reason than a lost lease (the message returns when its lease"
            " lapses).", ["topic"], registry=r,
        )  # fmt: skip
        self._contact = time.monotonic()
        age = pc.Gauge(
            "pushpop_database_contact_age_seconds", "Seconds since a call of the worker's last"
            " got through to the database.", registry=r,
        )  # fmt: skip
        age.set_function(lambda: time.monotonic() - self._contact)
        for topic in topics:  # every series exists from the start, so rate() sees the first
            for label in OUTCOMES:
                self.messages.labels(topic, label)
            for metric in (self.duration, self.in_flight, self.pops, self.empty_pops,
                           self.ack_errors):  # fmt: skip
                metric.labels(topic)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        pc = prometheus("metrics_port")
        try:
            self._server, self._thread = pc.start_http_server(
                self.wanted_port, self.addr, registry=self.registry
            )
        except OSError as exc:
            raise Error(f"cannot serve metrics on port {self.wanted_port}: {exc}") from exc
        self.port = int(self._server.server_port)
        self._thread.name = "pushpop-metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def popped(self, topic: str, n: int) -> None:
        self.pops.labels(topic).inc()
        if not n:
            self.empty_pops.labels(topic).inc()

    def woke(self) -> None:
        self.wakeups.inc()

    def handler_started(self, topic: str) -> None:
        self.in_flight.labels(topic).inc()

    def handler_ended(self, topic: str, seconds: float) -> None:
        self.in_flight.labels(topic).dec()
        self.duration.labels(topic).observe(seconds)

    def settled(self, topic: str, label: str | None) -> None:
        if label is None:
            self.ack_errors.labels(topic).inc()
        else:
            self.messages.labels(topic, label).inc()

    def batch(self, size: int) -> None:
        self.batches.observe(size)

    def reached_database(self) -> None:
        self._contact = time.monotonic()


def for_worker(topics: Sequence[str], port: int | None) -> WorkerMetrics:
    """The metrics of a worker: served on ``port``, or none at all when it is None."""
    return WorkerMetrics() if port is None else PrometheusMetrics(topics, port)
