"""The hot paths read the queue in index order, whatever the planner's statistics say.

A queue can fill faster than autovacuum analyzes it: a table analyzed while it was empty (or
never) then holds a backlog the planner does not know about. Planned from such statistics, the
head of the queue would be found by reading every ready message and sorting them, on every
pop. pop is planned so that it never does.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[tuple[Any, ...]]

BACKLOG = 150_000


def plans_of(conn: Conn, query: str) -> str:
    """The plans of every statement ``query`` runs, functions' statements included."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for setting, value in (
        ("log_min_duration", "0"),
        ("log_nested_statements", "on"),
        ("log_level", "notice"),
    ):
        conn.execute(f"SET auto_explain.{setting} = {value}")
    conn.execute(query)
    conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(notices)


@pytest.fixture
def stale(conn: Conn) -> Conn:
    """A queue analyzed while empty, then given a backlog of 100-byte messages on topic 't'."""
    conn.execute("ANALYZE pushpop.messages")
    conn.execute(
        "SELECT count(*) FROM pushpop.push_many('t', array_fill(%s::bytea, ARRAY[%s]))",
        (bytes(100), BACKLOG),
    )
    return conn


@pytest.mark.parametrize("batch", [1, 50])
def test_pop_reads_a_backlog_the_statistics_miss_in_index_order(stale: Conn, batch: int) -> None:
    first = stale.execute(
        "SELECT id FROM pushpop.messages WHERE topic = 't' ORDER BY seq LIMIT %s", (batch,)
    ).fetchall()
    plans = plans_of(stale, f"SELECT * FROM pushpop.pop('t', '1 minute', {batch})")
    assert "Index Scan using messages_ready" in plans
    assert "Sort Key: r.priority" not in plans
    popped = stale.execute("SELECT id FROM pushpop.messages WHERE state = 'pending'").fetchall()
    assert sorted(popped) == sorted(first)


def test_stats_may_count_a_long_history_with_parallel_workers(conn: Conn) -> None:
    # What stats() calls must not forbid parallel workers: with a million finished messages,
    # counting them alone in one process doubled its time.
    conn.execute(
        "SELECT count(*) FROM pushpop.push_many('t', array_fill('\\x00'::bytea, ARRAY[5000]))"
    )
    conn.execute(
        "SELECT pushpop.complete_many(array_agg(id), array_agg(lease))"
        " FROM pushpop.pop('t', '1 minute', 5000)"
    )
    conn.execute("VACUUM ANALYZE pushpop.messages")
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                    "min_parallel_index_scan_size"):  # fmt: skip
        conn.execute(f"SET {setting} = 0")
    plans = plans_of(conn, "SELECT * FROM pushpop.stats()")
    assert "Gather" in plans
    assert conn.execute("SELECT completed FROM pushpop.stats()").fetchone() == (5000,)
