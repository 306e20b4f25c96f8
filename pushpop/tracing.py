"""OpenTelemetry traces (the ``otel`` extra, ``opentelemetry-api`` only): a PRODUCER span per
push that puts the W3C ``traceparent``/``tracestate`` in the message's headers, and a CONSUMER
span per handler run, a child of the producer's span.

Nothing here imports OpenTelemetry until a message is pushed or handled, and then only if it
is installed. Until the application sets a tracer provider (the SDK's), no span is made and
no header added: a push pays one check. Spans follow OpenTelemetry's messaging semantic
conventions; docs/observability.md lists their names and attributes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any
from uuid import UUID

from .retry import describe

SYSTEM = "pushpop"
ATTEMPT = "messaging.pushpop.message.delivery_attempt"

_api: tuple[ModuleType, ModuleType] | None = None
_missing = False
_tracer: Any = None


def _otel() -> tuple[ModuleType, ModuleType] | None:
    """``(opentelemetry.trace, opentelemetry.propagate)`` once an application has set a tracer
    provider, else None (not installed, or nothing would record the spans)."""
    global _api, _missing, _tracer
    if _api is None:
        if _missing:
            return None
        try:
            from opentelemetry import propagate, trace
        except ImportError:
            _missing = True
            return None
        _api = (trace, propagate)
    trace = _api[0]
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # the API alone: every span would be a no-op
    if _tracer is None:
        from . import __version__

        _tracer = trace.get_tracer("pushpop", __version__)
    return _api


class Consuming:
    """The CONSUMER span of one handler run (or nothing, without tracing)."""

    def __init__(self, span: Any = None) -> None:
        self.span = span
        self.trace_id: str | None = None
        if span is not None:
            context = span.get_span_context()
            if context.is_valid:
                self.trace_id = format(context.trace_id, "032x")

    def ended(self, error: BaseException | None) -> None:
        """The handler returned (``error`` None) or raised ``error``: recorded on the span,
        whose status becomes ERROR."""
        if self.span is None or error is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, describe(error)))


@contextlib.contextmanager
def pushing(
    topic: str, headers: dict[str, str] | None, id: UUID | None = None, count: int = 1
) -> Iterator[dict[str, str] | None]:
    """A PRODUCER span around a push of ``count`` messages (the one ``id`` when given) to
    ``topic``; yields the headers to send: a copy of ``headers`` with the span's
    ``traceparent`` (and ``tracestate``), or ``headers`` themselves without tracing."""
    otel = _otel()
    if otel is None:
        yield headers
        return
    trace, propagate = otel
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        "messaging.operation.name": "push",
    }
    if id is not None:
        attributes["messaging.message.id"] = str(id)
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with _tracer.start_as_current_span(
        f"push {topic}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        carrier = dict(headers or {})
        propagate.inject(carrier)
        yield carrier


@contextlib.contextmanager
def consuming(
    topic: str, headers: Mapping[str, str] | None, id: UUID, attempt: int
) -> Iterator[Consuming]:
    """A CONSUMER span around one handler run, a child of the span whose context the
    message's headers carry (a new trace when they carry none)."""
    otel = _otel()
    if otel is None:
        yield Consuming()
        return
    trace, propagate = otel
    parent = propagate.extract(dict(headers or {}))
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": topic,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": str(id),
        ATTEMPT: attempt,
    }
    with _tracer.start_as_current_span(
        f"process {topic}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        yield Consuming(span)
