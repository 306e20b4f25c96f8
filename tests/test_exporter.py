"""The queue's gauges for Prometheus, read from the database at scrape time."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from processes import PUSHPOP_CLI, Proc
from prometheus_client import CollectorRegistry
from scraping import port_in, scrape, value, without_extras
from waiting import wait_for

import pushpop
from pushpop import metrics
from pushpop.exporter import QueueCollector, register_queue_metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
PAGE = ROOT / "docs" / "observability.md"


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn) as c:
        yield c


def ready(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("pushpop_queue_messages", {"topic": "a", "state": "ready"})


def gauges(collector: QueueCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_queue_gauges_count_each_topics_messages_by_state_with_pauses_ages_and_workers(
    sync_client: pushpop.Client, conn: psycopg.Connection[tuple[Any, ...]]
) -> None:
    for _ in range(2):
        sync_client.push("a", json={})
    sync_client.push("a", json={}, delay=3600)
    sync_client.push("b", json={})
    sync_client.pop("b")
    for _ in range(2):
        sync_client.push("c", json={})
    first, second = sync_client.pop("c"), sync_client.pop("c")
    assert first is not None
    assert second is not None
    first.complete()
    second.discard("no")
    conn.execute("SELECT pushpop.pause('d')")
    conn.execute(
        "UPDATE pushpop.messages SET state_time = now() - interval '90 seconds'"
        " WHERE topic = 'a' AND state = 'ready'"
    )
    conn.execute(
        "SELECT pushpop.worker_heartbeat(%s, 'host', 1, ARRAY['a', 'e'], 4)", [uuid.uuid4()]
    )
    sample = gauges(QueueCollector(sync_client)).get_sample_value
    counts = {
        (topic, state): sample("pushpop_queue_messages", {"topic": topic, "state": state})
        for topic in "abcd"
        for state in ("ready", "scheduled", "pending", "completed", "discarded")
    }
    assert {key: n for key, n in counts.items() if n} == {
        ("a", "ready"): 2, ("a", "scheduled"): 1, ("b", "pending"): 1, ("c", "completed"): 1,
        ("c", "discarded"): 1,
    }  # fmt: skip
    assert counts["d", "ready"] == 0  # a paused topic with no message is still listed
    assert [sample("pushpop_queue_paused", {"topic": t}) for t in "abcd"] == [0, 0, 0, 1]
    age = sample("pushpop_queue_oldest_ready_age_seconds", {"topic": "a"})
    assert age is not None
    assert 90 <= age < 120
    assert sample("pushpop_queue_oldest_ready_age_seconds", {"topic": "b"}) == 0
    assert [sample("pushpop_queue_workers", {"topic": t}) for t in "abe"] == [1, 0, 1]
    assert sample("pushpop_queue_up") == 1


def test_scrapes_within_the_cache_share_one_query_however_many_come_at_once(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("a", json={})
    collector = QueueCollector(sync_client, cache_seconds=60)
    registry = gauges(collector)
    assert collector.reads == 0, "registering must not query"
    threads = [
        threading.Thread(target=registry.get_sample_value, args=("pushpop_queue_up",))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sync_client.push("a", json={})
    assert ready(registry) == 1
    assert collector.reads == 1


def test_without_a_cache_every_scrape_reads_the_database_afresh(
    sync_client: pushpop.Client,
) -> None:
    registry = gauges(QueueCollector(sync_client, cache_seconds=0))
    sync_client.push("a", json={})
    assert ready(registry) == 1
    sync_client.push("a", json={})
    assert ready(registry) == 2


def test_a_collector_that_cannot_reach_the_database_says_up_0_and_nothing_else(
    dsn: str,
) -> None:
    client = pushpop.Client(dsn)
    registry = gauges(QueueCollector(client, cache_seconds=0))
    client.close()
    assert registry.get_sample_value("pushpop_queue_up") == 0
    assert registry.get_sample_value("pushpop_queue_workers", {"topic": "a"}) is None


def test_register_queue_metrics_mounts_the_gauges_in_an_applications_registry(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("a", json={})
    registry = CollectorRegistry()
    register_queue_metrics(sync_client, registry)
    assert ready(registry) == 1


@pytest.mark.slow
def test_pushpop_exporter_serves_the_gauges_over_http_and_exits_0_on_sigterm(
    sync_client: pushpop.Client, dsn: str
) -> None:
    sync_client.push("emails", json={})
    proc = Proc(
        [PUSHPOP_CLI, "exporter", "--port", "0", "--cache", "1s"],
        {**os.environ, "DATABASE_URL": dsn},
    )
    try:
        port = wait_for(lambda: port_in(proc.lines), what="the exporter's port")
        samples = scrape(port)
        assert value(samples, "pushpop_queue_messages", topic="emails", state="ready") == 1
        assert value(samples, "pushpop_queue_up") == 1
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.output()
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.wait(10)


def test_pushpop_exporter_without_prometheus_client_is_a_one_line_error(dsn: str) -> None:
    done = without_extras("from pushpop.cli import main\nsys.exit(main(['exporter']))\n", dsn)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "pushpop: error: pushpop exporter needs prometheus_client, which is not installed:"
        " pip install 'pushpop[metrics]'"
    ]


def exported() -> dict[str, set[str]]:
    """Every metric the worker and the exporter export: family name -> its sample names."""
    worker = metrics.PrometheusMetrics(["t"], 0)
    collector = QueueCollector.__new__(QueueCollector)  # describe() needs no database
    families = [*worker.registry.collect(), *collector.describe()]
    return {
        f.name + ("_total" if f.type == "counter" else ""): {
            s.name for s in f.samples if not s.name.endswith("_created")
        }
        | {f.name}
        for f in families
    }


def test_the_documented_metric_table_lists_exactly_the_metrics_exported() -> None:
    documented = set(re.findall(r"^\| `(pushpop_\w+)`", PAGE.read_text(), re.MULTILINE))
    assert documented == set(exported())


def test_the_grafana_dashboard_is_valid_json_that_asks_only_for_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 5
    names = set().union(*exported().values()) | set(exported())
    asked = {name for expr in exprs for name in re.findall(r"\bpushpop_\w+", expr)}
    assert asked
    assert asked <= names, asked - names
    assert {"uid", "title", "panels", "schemaVersion"} <= set(dashboard)
