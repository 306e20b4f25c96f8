"""Wake-up requests (pushpop.wait_for_push), as the worker tests handle them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg


def has_asked_for_a_wake_up(conn: psycopg.Connection[Any], consumer: UUID) -> bool:
    """Whether the consumer's wake-up request (one row per topic; the tests use one) stands."""
    row = conn.execute("SELECT count(*) FROM pushpop.waiting WHERE consumer = %s", [consumer])
    return row.fetchone() == (1,)


def spend_the_wake_up_request(conn: psycopg.Connection[Any], topic: str) -> None:
    """Another consumer pops a push at once: the push's NOTIFY spends the waiting worker's
    request (pushpop.wait_for_push), and the worker, woken, finds nothing to pop."""
    with conn.transaction():
        conn.execute("SELECT pushpop.push(%s, 'taken by another')", [topic])
        assert conn.execute("SELECT count(*) FROM pushpop.pop(%s)", [topic]).fetchone() == (1,)
