"""OpenTelemetry across processes: a push's span and its handler's span share one trace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import PROCS, Journal, Spawner
from waiting import wait_for

import pushpop

pytestmark = pytest.mark.slow

TRACED = str(PROCS / "traced.py")


def spans(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_handler_runs_in_a_consumer_span_child_of_the_push_in_another_process(
    dsn: str, tmp_path: Path, kind: str
) -> None:
    spawner = Spawner(dsn, Journal(tmp_path / "journal.txt"))
    produced, consumed = tmp_path / "producer.json", tmp_path / "worker.json"
    producer = subprocess.run(
        [sys.executable, TRACED, "produce", str(produced)],
        env=spawner.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert producer.returncode == 0, producer.stderr
    (request,) = [s for s in spans(produced) if s["name"] == "POST /signups"]
    pushes = {s["attributes"]["messaging.message.id"]: s for s in spans(produced)
              if s["kind"] == "PRODUCER"}  # fmt: skip
    assert len(pushes) == 2
    with pushpop.Client(dsn) as client:
        for id, push in pushes.items():
            assert push["name"] == "push emails"
            assert push["trace_id"] == request["trace_id"]
            assert push["parent_id"] == request["span_id"]
            assert push["attributes"]["messaging.system"] == "pushpop"
            assert push["attributes"]["messaging.destination.name"] == "emails"
            found = client.find(id)
            assert found is not None
            traceparent = found.headers["traceparent"]
            assert traceparent.startswith(f"00-{push['trace_id']}-{push['span_id']}-")
        worker = spawner._start([sys.executable, TRACED, "work", kind, str(consumed)])
        try:
            wait_for(
                lambda: all(
                    (m := client.find(id)) and m.state in ("completed", "discarded")
                    for id in pushes
                ),
                what="both messages handled",
            )
            worker.signal(signal.SIGTERM)
            assert worker.wait(20) == 0, worker.output()
        finally:
            spawner.close()
        assert client.find(next(iter(pushes))).headers["tenant"] == "acme"  # type: ignore[union-attr]
    handled = {s["attributes"]["messaging.message.id"]: s for s in spans(consumed)
               if s["kind"] == "CONSUMER"}  # fmt: skip
    assert handled.keys() == pushes.keys()
    statuses = set()
    for id, span in handled.items():
        assert span["name"] == "process emails"
        assert span["trace_id"] == request["trace_id"]
        assert span["parent_id"] == pushes[id]["span_id"]
        assert span["attributes"] == {
            "messaging.system": "pushpop",
            "messaging.destination.name": "emails",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": id,
            "messaging.pushpop.message.delivery_attempt": 1,
        }
        statuses.add((span["status"], tuple(span["events"])))
    assert statuses == {("UNSET", ()), ("ERROR", ("exception",))}
    # Every log line about a message carries its trace id beside its id, topic and attempt.
    lines = [json.loads(line) for line in worker.lines if line.startswith("{")]
    about = [line for line in lines if line.get("message_id") in pushes]
    assert {line["outcome"].split(":")[0] for line in about} == {"completed", "failed, discarded"}
    for line in about:
        assert line["trace_id"] == request["trace_id"]
        assert (line["topic"], line["attempt"]) == ("emails", 1)
    (failure,) = [line for line in about if line["level"] == "WARNING"]
    assert "ValueError: bad address" in failure["exception"]


def test_without_a_tracer_provider_a_push_adds_no_headers(dsn: str) -> None:
    with pushpop.Client(dsn) as client:
        id = client.push("emails", json={}, headers={"tenant": "acme"})
        found = client.find(id)
    assert found is not None
    assert found.headers == {"tenant": "acme"}
