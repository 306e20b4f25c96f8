"""Does depth matter? pop + complete against big and crowded tables, and stats() on a big one."""

from __future__ import annotations

from pushpop import Client

from . import baseline, data
from .env import Env, Settings
from .figures import Figure, Metric, Values
from .runner import median_ms
from .throughput import pop_measures

STATS_CALLS = 3


def _deep(env: Env) -> None:
    data.reset(env)
    data.load_both(env, "ready", env.settings.depth)
    data.settle(env)


def _retained(env: Env) -> None:
    data.reset(env)
    data.load_both(env, "ready", env.settings.shallow)
    data.load_both(env, "completed", env.settings.depth)
    data.settle(env)


def _busy(env: Env) -> None:
    s = env.settings
    data.reset(env)
    data.load_both(env, "ready", s.shallow)
    data.load_both(env, "ready", s.shallow, [f"other-{i:03d}" for i in range(s.other_topics)])
    data.settle(env)


def _stats_pushpop(env: Env) -> Values:
    with Client(env.conninfo, min_size=1, max_size=1) as client:
        client.stats()
        return {"stats_ms": median_ms(client.stats, STATS_CALLS)}


def _stats_baseline(env: Env) -> Values:
    with env.connect() as conn:
        baseline.stats(conn)
        return {"stats_ms": median_ms(lambda: baseline.stats(conn), STATS_CALLS)}


def _pop_metric(key: str, label: str) -> tuple[Metric]:
    return (Metric(key, label, relative_to="pop_complete"),)


def figures(s: Settings) -> list[Figure]:
    """pop + complete at depth, among finished messages, among busy topics; stats() at depth."""
    stats = Metric("stats_ms", f"stats(), {s.depth:,} messages", "ms", higher_is_better=False)
    return [
        Figure(
            "deep",
            _pop_metric("pop_complete_deep", f"pop + complete, {s.depth:,} ready"),
            *pop_measures("pop_complete_deep"),
            setup=_deep,
        ),
        Figure(
            "retained",
            _pop_metric("pop_complete_retained", f"pop + complete, {s.depth:,} completed kept"),
            *pop_measures("pop_complete_retained"),
            setup=_retained,
            note=f"{s.shallow:,} ready messages beside {s.depth:,} completed ones",
        ),
        Figure(
            "stats",
            (stats,),
            _stats_pushpop,
            _stats_baseline,
            setup=_retained,
            note=f"median of {STATS_CALLS} calls a round, on the retained figure's table; "
            "baseline: the same GROUP BY count on its plain table",
        ),
        Figure(
            "busy_topics",
            _pop_metric(
                "pop_complete_busy_topics", f"pop + complete, {s.other_topics} other topics"
            ),
            *pop_measures("pop_complete_busy_topics"),
            setup=_busy,
            note=f"{s.other_topics} other topics holding {s.shallow:,} ready messages each",
        ),
    ]
