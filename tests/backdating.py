"""Moving a message's clock into the past, so tests need not wait for time to pass."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

# The moment is a parameter, not now() in the CASE: Citus refuses a function other than
# IMMUTABLE inside CASE when it updates a distributed table (tests/test_citus_contract.py).
BACKDATE = """
UPDATE pushpop.messages SET
    state_time = CASE WHEN state = 'pending' THEN state_time ELSE %(at)s END,
    lease_until = CASE WHEN state = 'pending' THEN %(at)s ELSE lease_until END
WHERE id = %(id)s
"""


def backdate(conn: psycopg.Connection[Any], id: UUID, by: str = "1 second") -> None:
    """Moves the message's clock back by ``by``: its delay is over, its lease lapsed, or it
    finished long ago. A pending message's clock is its lease deadline (lease_until), any
    other's its state_time."""
    row = conn.execute("SELECT now() - %s::interval", [by]).fetchone()
    assert row is not None
    conn.execute(BACKDATE, {"at": row[0], "id": id})
