"""Traced programs, each recording its spans with the OpenTelemetry SDK's in-memory exporter:

    traced.py produce SPANS.json              pushes two messages inside a span of its own
    traced.py work sync|async SPANS.json      a worker, until SIGTERM; JSON logs on stderr

Each writes the spans it recorded to SPANS.json as it ends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pushpop
from pushpop import logs

EXPORTER = InMemorySpanExporter()


def dump(path: str) -> None:
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "attributes": dict(s.attributes or {}),
            "status": s.status.status_code.name,
            "events": [e.name for e in s.events],
        }
        for s in EXPORTER.get_finished_spans()
    ]
    Path(path).write_text(json.dumps(spans))


def handle(msg: pushpop.Message) -> None:
    if msg.json()["fail"]:
        raise ValueError("bad address")


async def async_handle(msg: pushpop.AsyncMessage) -> None:
    handle(msg)  # type: ignore[arg-type]


async def work_async() -> None:
    async with pushpop.AsyncClient() as client:
        await client.work("emails", async_handle)


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    if sys.argv[1] == "produce":
        tracer = trace.get_tracer("web")
        with pushpop.Client() as client, tracer.start_as_current_span("POST /signups"):
            client.push("emails", json={"fail": False}, headers={"tenant": "acme"})
            client.push("emails", json={"fail": True}, max_attempts=1)
        dump(sys.argv[2])
    else:
        logs.configure("INFO", "json")
        if sys.argv[2] == "async":
            asyncio.run(work_async())
        else:
            with pushpop.Client() as client:
                client.work("emails", handle)
        dump(sys.argv[3])
