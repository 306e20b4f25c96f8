"""Moving a message's clock into the past, so tests need not wait for time to pass."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

BACKDATE = """
UPDATE pushpop.messages SET
    state_time = CASE WHEN state = 'pending' THEN state_time ELSE now() - %(by)s::interval END,
    lease_until = CASE WHEN state = 'pending' THEN now() - %(by)s::interval ELSE lease_until END
WHERE id = %(id)s
"""


def backdate(conn: psycopg.Connection[Any], id: UUID, by: str = "1 second") -> None:
    """Moves the message's clock back by ``by``: its delay is over, its lease lapsed, or it
    finished long ago. A pending message's clock is its lease deadline (lease_until), any
    other's its state_time."""
    conn.execute(BACKDATE, {"by": by, "id": id})
