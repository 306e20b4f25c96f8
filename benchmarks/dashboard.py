"""The dashboard: what one page load costs the database at 1,000 topics and ``depth`` messages,
and so what a dashboard left open costs (one page load per refresh).

Pages are requested from the ASGI app in process (no HTTP server in the way); each query the
page sends is counted at the dashboard's one call runner.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import data
from .data import PUSHPOP
from .env import Env, Settings
from .figures import Figure, Metric, Values

TOPICS = 1_000
CALLS = 5
# The share of each state in the loaded messages (pending ones need leases: left out).
MIX = {"ready": 0.4, "completed": 0.4, "discarded": 0.1, "scheduled": 0.1}


def topics() -> list[str]:
    return [f"topic-{i:04d}" for i in range(TOPICS)]


def _load(env: Env) -> None:
    data.reset(env)
    per_topic = max(1, env.settings.depth // TOPICS)
    for state, share in MIX.items():
        data.load(env, PUSHPOP, state, max(1, round(per_topic * share)), topics())
    data.settle(env)


async def _get(asgi: Any, path: str, query: str = "") -> int:
    """One GET straight into the ASGI app; its status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1), "server": ("bench", 80),
    }  # fmt: skip
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await asgi(scope, receive, send)
    return status


def _pages(env: Env) -> Values:
    from pushpop import AsyncClient, calls
    from pushpop.constants import STALE_AFTER
    from pushpop.dashboard import app
    from pushpop.dashboard.web import REFRESH_SECONDS, WINDOW

    async def run() -> Values:
        async with AsyncClient(env.conninfo, min_size=1, max_size=1) as client:
            asgi = app(client)
            dash = asgi.state.dashboard
            sent = 0
            inner = dash.run

            async def counted(call: calls.Call[Any]) -> Any:
                nonlocal sent
                sent += 1
                return await inner(call)

            dash.run = counted
            row = await client.browse(topics()[500], state="discarded", limit=1)
            pages = {
                "overview": ("/", ""),
                "topic": ("/topic", f"name={topics()[500]}&state=ready"),
                "message": ("/message", f"id={row[0].id}"),
                "workers": ("/workers", ""),
            }
            values: Values = {}
            for name, (path, query) in pages.items():
                assert await _get(asgi, path, query) == 200, name
                times = []
                for _ in range(CALLS):
                    dash._gauges = None  # a cold page: the shared counts read again
                    sent = 0
                    started = time.perf_counter()
                    await _get(asgi, path, query)
                    times.append((time.perf_counter() - started) * 1000)
                values[f"dash_{name}_ms"] = sorted(times)[len(times) // 2]
                values[f"dash_{name}_queries"] = sent
            for key, call in (
                ("dash_gauges_ms", calls.queue_gauges(STALE_AFTER)),
                ("dash_throughput_ms", calls.throughput(None, WINDOW)),
            ):
                times = []
                for _ in range(CALLS):
                    started = time.perf_counter()
                    await client._run(call)
                    times.append((time.perf_counter() - started) * 1000)
                values[key] = sorted(times)[len(times) // 2]
            values["dash_open_qpm"] = values["dash_overview_queries"] * 60 / REFRESH_SECONDS
            values["dash_open_db_ms_per_s"] = values["dash_overview_ms"] / REFRESH_SECONDS
            return values

    return asyncio.run(run())


def figures(s: Settings) -> list[Figure]:
    """Page loads of the dashboard at 1,000 topics; its cost when left open."""
    size = f"{TOPICS:,} topics, {s.depth:,} messages"
    pages = (
        ("overview", "overview page (every topic, the chart)"),
        ("topic", "a topic's page (counts, chart, 25 messages)"),
        ("message", "a message's page"),
        ("workers", "workers page"),
    )
    metrics = []
    for key, label in pages:
        metrics.append(Metric(f"dash_{key}_ms", f"{label}, {size}", "ms", higher_is_better=False))
        metrics.append(Metric(f"dash_{key}_queries", f"queries per {key} page", "queries", False))
    metrics.append(Metric("dash_gauges_ms", "of which: every topic's counts (stats)", "ms", False))
    metrics.append(
        Metric("dash_throughput_ms", "of which: the last hour's chart, all topics", "ms", False)
    )
    metrics.append(
        Metric("dash_open_qpm", "queries a minute, one open overview", "queries/min", False)
    )
    metrics.append(
        Metric("dash_open_db_ms_per_s", "page time per second, open overview", "ms", False)
    )
    return [
        Figure(
            "dashboard",
            tuple(metrics),
            _pages,
            None,
            setup=_load,
            note="ASGI requests in process, median of 5 a round; ready 40%, completed 40% "
            "(within the last hour), dead 10%, scheduled 10% of each topic; an open page "
            "loads itself again every 5 s",
        )
    ]
