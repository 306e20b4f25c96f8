"""The records clients return: messages (whichever client carries them), topic stats, workers."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Self, TypeVar
from uuid import UUID

from .constants import MAX_ATTEMPTS, PRIORITY

C = TypeVar("C")

# The columns of pushpop.message, in the order the calls select them.
COLUMNS = (
    "id, topic, state, state_time, payload, priority, attempts, max_attempts, "
    "lease, lease_until, created_at, error, dedup_key, headers, expires_at, ordering_key"
)


@dataclass(eq=False, repr=False)
class MessageBase(Generic[C]):
    """A message's fields, and the client ``C`` that acknowledges it.

    ``state`` is None until the message is pushed, popped or found. A pending message has a
    ``lease`` (the token its acknowledgements show) and a ``lease_until`` (its deadline).
    ``headers`` are string pairs that travel with it; ``expires_at``, when set, is the deadline
    after which it is never delivered. Messages of a topic with one ``ordering_key`` are
    delivered one at a time, in push order (state ``blocked`` while one before them is live).
    """

    topic: str
    payload: bytes
    id: UUID
    priority: int = PRIORITY
    max_attempts: int = MAX_ATTEMPTS
    dedup_key: str | None = None
    state: str | None = None
    state_time: datetime | None = None
    attempts: int = 0
    lease: UUID | None = None
    lease_until: datetime | None = None
    created_at: datetime | None = None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    ordering_key: str | None = None
    _client: C = field(kw_only=True, compare=False)

    @classmethod
    def from_row(cls, client: C, row: tuple[Any, ...]) -> Self:
        """Builds a message from a row of ``COLUMNS``."""
        (id_, topic, state, state_time, payload, priority, attempts, max_attempts,
         lease, lease_until, created_at, error, dedup_key, headers, expires_at,
         ordering_key) = row  # fmt: skip
        return cls(
            topic=topic, payload=bytes(payload), id=id_, priority=priority,
            max_attempts=max_attempts, dedup_key=dedup_key, state=state,
            state_time=state_time, attempts=attempts, lease=lease, lease_until=lease_until,
            created_at=created_at, error=error, headers=headers or {}, expires_at=expires_at,
            ordering_key=ordering_key, _client=client,
        )  # fmt: skip

    def json(self) -> Any:
        """The payload decoded as JSON (the counterpart of ``new_message(..., json=obj)``)."""
        return _json.loads(self.payload)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} topic={self.topic!r} state={self.state} "
            f"attempts={self.attempts} payload={len(self.payload)} bytes>"
        )


@dataclass(frozen=True)
class TopicStats:
    """Counts for one topic, as ``pushpop.stats()`` returns them."""

    topic: str
    ready: int
    scheduled: int
    pending: int
    completed: int
    discarded: int
    oldest_ready: datetime | None
    paused: bool = False
    blocked: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker, as ``pushpop.workers()`` lists it."""

    id: UUID
    host: str
    pid: int
    topics: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule, as ``pushpop.schedules()`` lists it: exactly one of ``cron`` and ``every``."""

    name: str
    topic: str
    cron: str | None
    every: timedelta | None
    timezone: str
    next_run_at: datetime
    last_run_at: datetime | None


@dataclass(frozen=True)
class SubscriptionInfo:
    """A subscription, as ``pushpop.subscriptions()`` lists it: pushes to a topic matching
    ``pattern`` put a copy into ``subscriber``."""

    pattern: str
    subscriber: str
    created_at: datetime
