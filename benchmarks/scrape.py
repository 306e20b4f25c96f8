"""What a Prometheus scrape of ``pushpop exporter`` costs the database, at depth and breadth.

The table holds ``depth`` messages over ``SCRAPE_TOPICS`` topics, mostly finished (as a busy
queue's table is between cleanups): per topic, 90 % completed, 4 % discarded, 3 % ready, 2 %
scheduled, 1 % pending. A scrape renders the exporter's registry as Prometheus reads it;
uncached, it reads the database (``pushpop.stats()`` and the live workers); within the
exporter's cache it does not.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from pushpop import Client
from pushpop.exporter import QueueCollector

from . import data
from .env import Env, Settings
from .figures import Figure, Metric, Values
from .runner import median_ms

SCRAPE_TOPICS = 1_000
SCRAPES = 5
SHARES = {"completed": 0.90, "discarded": 0.04, "ready": 0.03, "scheduled": 0.02, "pending": 0.01}


def _topics() -> list[str]:
    return [f"topic-{i:04d}" for i in range(SCRAPE_TOPICS)]


def _broad(env: Env) -> None:
    data.reset(env)
    per_topic = max(1, env.settings.depth // SCRAPE_TOPICS)
    for state, share in SHARES.items():
        data.load(env, data.PUSHPOP, state, max(1, round(per_topic * share)), _topics())
    with env.connect() as conn:  # pending rows need a lease; scheduled ones a future time
        conn.execute(
            "UPDATE pushpop.messages SET lease = gen_random_uuid(),"
            " lease_until = now() + interval '1 hour' WHERE state = 'pending'"
        )
        conn.execute(
            "UPDATE pushpop.messages SET state_time = now() + interval '1 hour'"
            " WHERE state = 'scheduled'"
        )
    data.settle(env)


def _scrape(env: Env) -> Values:
    with Client(env.conninfo, min_size=1, max_size=1) as client:
        fresh, cached = CollectorRegistry(), CollectorRegistry()
        fresh.register(QueueCollector(client, cache_seconds=0))
        cached.register(QueueCollector(client, cache_seconds=3600))
        generate_latest(fresh)
        generate_latest(cached)
        return {
            "scrape_ms": median_ms(lambda: generate_latest(fresh), SCRAPES),
            "scrape_cached_ms": median_ms(lambda: generate_latest(cached), SCRAPES),
        }


def figures(s: Settings) -> list[Figure]:
    """One scrape of the exporter, read afresh and from its cache."""
    where = f"{s.depth:,} messages, {SCRAPE_TOPICS:,} topics"
    return [
        Figure(
            "scrape",
            (
                Metric("scrape_ms", f"exporter scrape, {where}", "ms", higher_is_better=False),
                Metric(
                    "scrape_cached_ms",
                    "exporter scrape within its cache",
                    "ms",
                    higher_is_better=False,
                ),
            ),
            _scrape,
            None,
            setup=_broad,
            note=f"median of {SCRAPES} scrapes a round; mostly finished messages (see"
            " benchmarks/scrape.py); no baseline",
        )
    ]
