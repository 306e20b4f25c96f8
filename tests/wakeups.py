"""Wake-up requests (pushpop.wait_for_push), as the worker tests handle them."""

from __future__ import annotations

from typing import Any

import psycopg


def spend_the_wake_up_request(conn: psycopg.Connection[Any], topic: str) -> None:
    """Another consumer pops a push at once: the push's NOTIFY spends the waiting worker's
    request (pushpop.wait_for_push), and the worker, woken, finds nothing to pop."""
    with conn.transaction():
        conn.execute("SELECT pushpop.push(%s, 'taken by another')", [topic])
        assert conn.execute("SELECT count(*) FROM pushpop.pop(%s)", [topic]).fetchone() == (1,)
