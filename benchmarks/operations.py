"""Operations: a browse page deep in a big topic, and what the pause check costs pop."""

from __future__ import annotations

from typing import Any

import psycopg

from . import client_ops, data, throughput
from .data import PUSHPOP
from .env import TOPIC, Env, Settings
from .figures import Figure, Metric, Values
from .runner import median_ms
from .sides import with_client

PAGE = 100
CALLS = 5
DEEP_PAGE = 1_000

BROWSE: Any = "SELECT id FROM pushpop.browse(%s, 'ready', %s, %s)"
# The baseline pages as people do without a cursor: OFFSET, whose cost grows with the page.
OFFSET: Any = (
    "SELECT id FROM baseline.jobs WHERE topic = %s AND state = 'ready'"
    " ORDER BY priority DESC, state_time, seq OFFSET %s LIMIT %s"
)


def deep_page(s: Settings) -> int:
    """Page 1,000, or the deepest page the topic holds (a quick run's topic is smaller)."""
    return max(1, min(DEEP_PAGE, s.depth // PAGE))


def _deep(env: Env) -> None:
    data.reset(env)
    data.load_both(env, "ready", env.settings.depth)
    data.settle(env)


def _last_id_before(conn: psycopg.Connection[Any], page: int) -> Any:
    """The id that ends page ``page - 1``: the cursor of page ``page`` (found, not timed)."""
    if page == 1:
        return None
    row = conn.execute(
        "SELECT id FROM pushpop.messages WHERE topic = %s AND state = 'ready'"
        " ORDER BY priority DESC, state_time, seq OFFSET %s LIMIT 1",
        [TOPIC, (page - 1) * PAGE - 1],
    ).fetchone()
    assert row is not None
    return row[0]


def _browse_pushpop(env: Env) -> Values:
    n = deep_page(env.settings)
    with env.connect() as conn:
        after = _last_id_before(conn, n)

        def page(cursor: Any) -> None:
            assert len(conn.execute(BROWSE, [TOPIC, cursor, PAGE]).fetchall()) == PAGE

        page(None)
        page(after)
        return {
            "browse_page_1": median_ms(lambda: page(None), CALLS),
            "browse_page_deep": median_ms(lambda: page(after), CALLS),
        }


def _browse_baseline(env: Env) -> Values:
    n = deep_page(env.settings)
    with env.connect() as conn:

        def page(number: int) -> None:
            offset = (number - 1) * PAGE
            assert len(conn.execute(OFFSET, [TOPIC, offset, PAGE]).fetchall()) == PAGE

        page(1)
        page(n)
        return {
            "browse_page_1": median_ms(lambda: page(1), CALLS),
            "browse_page_deep": median_ms(lambda: page(n), CALLS),
        }


def _paused_elsewhere(env: Env) -> Values:
    """pop + complete from a running topic while another topic is paused."""
    with env.connect() as conn:
        conn.execute("SELECT pushpop.pause('paused-elsewhere')")
        try:
            rate = with_client(env, client_ops.pop_complete, refill=PUSHPOP)
        finally:
            conn.execute("SELECT pushpop.resume('paused-elsewhere')")
    return {"pop_complete_paused_elsewhere": rate}


_, _pop_baseline = throughput.pop_measures("pop_complete_paused_elsewhere")


def figures(s: Settings) -> list[Figure]:
    """browse pages 1 and 1,000 of a deep topic; pop + complete while another topic is paused."""
    n = deep_page(s)
    return [
        Figure(
            "browse",
            (
                Metric(
                    "browse_page_1",
                    f"browse, page 1 of {s.depth:,} ready",
                    "ms",
                    higher_is_better=False,
                ),
                Metric(
                    "browse_page_deep",
                    f"browse, page {n:,} of {s.depth:,} ready",
                    "ms",
                    higher_is_better=False,
                    relative_to="browse_page_1",
                ),
            ),
            _browse_pushpop,
            _browse_baseline,
            setup=_deep,
            note=f"pages of {PAGE}, median of {CALLS} calls a round; pushpop: browse(after => the "
            "previous page's last id); baseline: the same ORDER BY with OFFSET",
        ),
        Figure(
            "pause_check",
            (
                Metric(
                    "pop_complete_paused_elsewhere",
                    "pop + complete, another topic paused",
                    relative_to="pop_complete",
                ),
            ),
            _paused_elsewhere,
            _pop_baseline,
            setup=throughput.shallow,
            note="the pop figure's workload while one other topic is paused, so pop looks its "
            "topic up in pushpop.paused_topics; with no topic paused (the pop figure) the "
            "check is a constant false folded into pop's plan",
        ),
    ]
