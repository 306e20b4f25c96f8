"""Every SQL statement the clients send, with its checked parameters and how to read its reply.

One place for the SQL text: :class:`~pushpop.Client` and :class:`~pushpop.AsyncClient`
both run these calls and differ only in how they do the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, LiteralString, TypeVar
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from . import checks
from .constants import (
    ADMIN,
    CLEANUP_BATCH,
    CONSUMER,
    LEASE,
    MAINTAINER,
    MAX_ATTEMPTS,
    PRIORITY,
    PRODUCER,
)
from .errors import InvalidArgument, InvalidType, LeaseLost
from .message import (
    COLUMNS,
    MessageBase,
    ScheduleInfo,
    SubscriptionInfo,
    TopicStats,
    WorkerInfo,
)

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
Message = MessageBase[Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One SQL statement, its parameters, the function that turns its rows into a result, and
    the pushpop role that grants it (named when the database refuses the call)."""

    sql: LiteralString
    params: dict[str, Any]
    read: Callable[[Rows], T]
    role: str = CONSUMER


def _scalar(rows: Rows) -> Any:
    return rows[0][0]


def _column(rows: Rows) -> list[Any]:
    return [row[0] for row in rows]


def _rows(rows: Rows) -> Rows:
    return rows


# pushpop.push's defaults for the arguments a plain push leaves out.
PUSH_DEFAULTS = {
    "priority": PRIORITY, "dedup_key": None, "max_attempts": MAX_ATTEMPTS, "ordering_key": None,
}  # fmt: skip


# Added to a push's select list: its transaction, which the client commits, then returns
# without waiting for its WAL to reach disk (README, "Durability").
NOT_DURABLE: LiteralString = ", set_config('synchronous_commit', 'off', true)"


def commit_suffix(durable: Any, on_callers_connection: bool) -> LiteralString:
    """The select-list suffix for a push's ``durable`` option (see ``NOT_DURABLE``)."""
    if checks.flag(durable, "durable"):
        return ""
    if on_callers_connection:
        raise InvalidArgument(
            "durable=False is for pushes the client commits; in a transaction of your own,"
            " run SET LOCAL synchronous_commit = off instead"
        )
    return NOT_DURABLE


def push(
    msg: Message,
    delay: checks.Duration,
    suffix: LiteralString = "",
    expires_in: checks.Duration | None = None,
) -> Call[UUID]:
    """Enqueue one built message (``pushpop.push``); ``suffix`` from :func:`commit_suffix`."""
    wait = checks.duration(delay, "delay")
    expiry = checks.optional_duration(expires_in, "expires_in")
    rest = {
        "priority": msg.priority, "dedup_key": msg.dedup_key, "max_attempts": msg.max_attempts,
        "ordering_key": msg.ordering_key,
    }  # fmt: skip
    if not wait and rest == PUSH_DEFAULTS and expiry is None and not msg.headers:
        # The usual push leaves the defaults to the server: four parameters fewer to adapt
        # and send are about a tenth of the client's work for a push.
        return Call(
            "SELECT pushpop.push(%(topic)s, %(payload)s, id => %(id)s::uuid)" + suffix,
            {"topic": msg.topic, "payload": msg.payload, "id": msg.id},
            _scalar,
            PRODUCER,
        )
    params = {
        "topic": msg.topic, "payload": msg.payload, "delay": wait, "id": msg.id, **rest,
        "expires_in": expiry, "headers": Jsonb(msg.headers) if msg.headers else None,
    }  # fmt: skip
    return Call(
        "SELECT pushpop.push(%(topic)s, %(payload)s, %(delay)s::interval, %(priority)s::integer,"
        " %(id)s::uuid, %(dedup_key)s::text, %(max_attempts)s::integer,"
        " %(expires_in)s::interval, %(headers)s::jsonb, %(ordering_key)s::text)" + suffix,
        params,
        _scalar,
        PRODUCER,
    )


def push_many(
    topic: str,
    payloads: Sequence[Any],
    delay: checks.Duration,
    priority: int,
    suffix: LiteralString = "",
    expires_in: checks.Duration | None = None,
    headers: dict[str, str] | None = None,
    ordering_keys: Sequence[str | None] | None = None,
) -> Call[list[UUID]]:
    """Enqueue many payloads in one statement (``pushpop.push_many``); ``suffix`` as in push.
    ``ordering_keys``: one key (or None) per payload."""
    if isinstance(payloads, (bytes, bytearray, memoryview, str)) or not isinstance(
        payloads, Sequence
    ):
        raise InvalidType(f"payloads must be a sequence of bytes, got {type(payloads).__name__}")
    params = {
        "topic": checks.topic(topic),
        "payloads": [
            checks.payload(p, f"payloads[{i}]", takes_json=False) for i, p in enumerate(payloads)
        ],
        "delay": checks.duration(delay, "delay"),
        "priority": checks.integer(priority, "priority", low=-checks.INT4_MAX - 1),
        "expires_in": checks.optional_duration(expires_in, "expires_in"),
        "headers": Jsonb(checks.headers(headers)) if headers else None,
        "ordering_keys": checks.ordering_keys(ordering_keys, len(payloads)),
    }
    return Call(
        "SELECT pushpop.push_many(%(topic)s, %(payloads)s::bytea[], %(delay)s::interval,"
        " %(priority)s::integer, %(expires_in)s::interval, %(headers)s::jsonb,"
        " %(ordering_keys)s::text[])" + suffix,
        params,
        _column,
        PRODUCER,
    )


def batch_ordering_keys(
    one: str | None, each: Sequence[str | None] | None, count: int
) -> Sequence[str | None] | None:
    """push_many's keys: one for the whole batch, or one per payload, not both."""
    if one is not None and each is not None:
        raise InvalidArgument("give ordering_key (one for the batch) or ordering_keys, not both")
    return [one] * count if one is not None else each


# A pop's commit that does not wait for the disk (``durable=False``): set in the FROM list, so
# the rows keep exactly ``message.COLUMNS``.
POP_NOT_DURABLE: LiteralString = ", set_config('synchronous_commit', 'off', true) AS not_durable"


def pop(topic: str, n: int, lease: checks.Duration, durable: bool = True) -> Call[Rows]:
    """Lease up to n ready messages (``pushpop.pop``); rows of ``message.COLUMNS``.
    ``durable=False``: the commit does not wait for the disk (a pop lost in a crash leaves
    its message ready, as a lapsed lease would)."""
    params = {"topic": checks.topic(topic), "n": checks.integer(n, "n", low=1)}
    wanted = checks.duration(lease, "lease", positive=True)
    suffix = "" if checks.flag(durable, "durable") else POP_NOT_DURABLE
    if wanted == LEASE:
        # As in push: the default is left to the server (an interval is the dearest to send).
        return Call(
            "SELECT "
            + COLUMNS
            + " FROM pushpop.pop(%(topic)s, max_messages => %(n)s::integer)"
            + suffix,
            params,
            _rows,
        )
    return Call(
        "SELECT "
        + COLUMNS
        + " FROM pushpop.pop(%(topic)s, %(lease)s::interval, %(n)s::integer)"
        + suffix,
        {**params, "lease": wanted},
        _rows,
    )


def _settled(msg: Message, new_state: str | None) -> Callable[[Rows], None]:
    """Reads a fenced call's boolean: LeaseLost when false, else the message's new local state."""

    def read(rows: Rows) -> None:
        if not rows[0][0]:
            raise LeaseLost(
                f"message {msg.id} is no longer leased to you: it was completed, discarded or "
                "deferred already, or its lease expired and it may have gone to another consumer"
            )
        if new_state is not None:
            msg.state = new_state  # the lease stays: acknowledging again gets LeaseLost

    return read


def _lease_of(msg: Message) -> UUID:
    if msg.lease is None:
        raise InvalidArgument(
            f"message {msg.id} holds no lease: only a popped message can be acknowledged"
        )
    return msg.lease


def complete(msg: Message) -> Call[None]:
    """Mark a popped message completed (``pushpop.complete``)."""
    return Call(
        "SELECT pushpop.complete(%(id)s::uuid, %(lease)s::uuid)",
        {"id": msg.id, "lease": _lease_of(msg)},
        _settled(msg, "completed"),
    )


def complete_many(msgs: Sequence[Message]) -> Call[None]:
    """Mark popped messages completed in one statement (``pushpop.complete_many``).

    Every delivery still leased is completed; if any was not, LeaseLost names them afterwards.
    The reply is one boolean per message, by position: two deliveries of one message (a stale
    lease and a fresh one) are told apart.
    """
    if isinstance(msgs, MessageBase) or not isinstance(msgs, Sequence):
        raise InvalidType(f"msgs must be a sequence of messages, got {type(msgs).__name__}")
    for i, msg in enumerate(msgs):
        if not isinstance(msg, MessageBase):
            raise InvalidType(f"msgs[{i}] must be a message, got {type(msg).__name__}")
    leases = [_lease_of(msg) for msg in msgs]

    def read(rows: Rows) -> None:
        done: list[bool] = rows[0][0]
        lost = []
        for msg, completed in zip(msgs, done, strict=True):
            if completed:
                msg.state = "completed"
            else:
                lost.append(f"{msg.id} (lease {msg.lease})")
        if lost:
            raise LeaseLost(
                f"{len(lost)} of {len(msgs)} messages are no longer leased to you and were not "
                f"completed (the others were): {', '.join(lost)}"
            )

    return Call(
        "SELECT pushpop.complete_many(%(ids)s::uuid[], %(leases)s::uuid[])",
        {"ids": [msg.id for msg in msgs], "leases": leases},
        read,
    )


def discard(msg: Message, reason: str | None) -> Call[None]:
    """Give up on a popped message (``pushpop.discard``)."""
    return Call(
        "SELECT pushpop.discard(%(id)s::uuid, %(lease)s::uuid, %(reason)s::text)",
        {
            "id": msg.id,
            "lease": _lease_of(msg),
            "reason": checks.optional_text(reason, "reason", allow_empty=True),
        },
        _settled(msg, "discarded"),
    )


def defer(msg: Message, delay: checks.Duration, reason: str | None) -> Call[None]:
    """Put a popped message back, to be popped again after delay (``pushpop.defer``)."""
    return Call(
        "SELECT pushpop.defer(%(id)s::uuid, %(lease)s::uuid, %(delay)s::interval,"
        " %(reason)s::text)",
        {
            "id": msg.id,
            "lease": _lease_of(msg),
            "delay": checks.duration(delay, "delay"),
            "reason": checks.optional_text(reason, "reason", allow_empty=True),
        },
        _settled(msg, "ready"),
    )


def extend(msg: Message, lease: checks.Duration) -> Call[None]:
    """Push a popped message's lease deadline out to now + lease (``pushpop.extend``)."""
    return Call(
        "SELECT pushpop.extend(%(id)s::uuid, %(lease)s::uuid, %(lease_for)s::interval)",
        {
            "id": msg.id,
            "lease": _lease_of(msg),
            "lease_for": checks.duration(lease, "lease", positive=True),
        },
        _settled(msg, None),
    )


def find(id: UUID | str) -> Call[Rows]:
    """Look a message up by id (``pushpop.find``)."""
    return Call(
        "SELECT " + COLUMNS + " FROM pushpop.find(%(id)s::uuid)",
        {"id": checks.message_id(id)},
        _rows,
    )


def requeue_expired() -> Call[int]:
    """Return lapsed leases to the queue (``pushpop.requeue_expired``)."""
    return Call("SELECT pushpop.requeue_expired()", {}, _scalar, MAINTAINER)


def cleanup_batch(grace: checks.Duration) -> Call[int]:
    """Delete one batch of finished messages older than grace (``pushpop.cleanup``)."""
    return Call(
        "SELECT pushpop.cleanup(%(grace)s::interval, %(batch)s::integer)",
        {"grace": checks.duration(grace, "grace"), "batch": CLEANUP_BATCH},
        _scalar,
        MAINTAINER,
    )


def _topic_stats(rows: Rows) -> list[TopicStats]:
    return [TopicStats(*row) for row in rows]


def stats() -> Call[list[TopicStats]]:
    """Per-topic counts (``pushpop.stats``)."""
    return Call(
        "SELECT topic, ready, scheduled, pending, completed, discarded, oldest_ready, paused,"
        " blocked FROM pushpop.stats()",
        {},
        _topic_stats,
    )


def purge(topic: str) -> Call[int]:
    """Delete every message of a topic that is not pending (``pushpop.purge``)."""
    return Call("SELECT pushpop.purge(%(topic)s)", {"topic": checks.topic(topic)}, _scalar, ADMIN)


_NO_PAYLOAD: Any = object()


def new_message_fields(
    topic: str,
    payload: Any,
    json: Any,
    priority: int,
    dedup_key: str | None,
    max_attempts: int,
    id: UUID | str | None,
    headers: dict[str, str] | None = None,
    ordering_key: str | None = None,
) -> dict[str, Any]:
    """Checks the fields of a message about to be built; exactly one of payload and json."""
    if (payload is None) == (json is _NO_PAYLOAD):
        raise InvalidType("give either payload (bytes) or json=obj, not both and not neither")
    return {
        "topic": checks.topic(topic),
        "payload": checks.payload(payload) if json is _NO_PAYLOAD else checks.json_payload(json),
        "priority": checks.integer(priority, "priority", low=-checks.INT4_MAX - 1),
        "dedup_key": checks.optional_text(dedup_key, "dedup_key"),
        "max_attempts": checks.integer(max_attempts, "max_attempts", low=1),
        "id": uuid4() if id is None else checks.message_id(id),
        "headers": {} if headers is None else checks.headers(headers),
        "ordering_key": checks.ordering_key(ordering_key),
    }


# Which schema a client talks to: first whether it may ask (pushpop may not be installed).
MAY_ASK_SCHEMA_VERSION: LiteralString = (
    "SELECT coalesce(has_function_privilege("
    "to_regprocedure('pushpop.schema_version()'), 'EXECUTE'), false)"
)
SCHEMA_VERSION: LiteralString = "SELECT pushpop.schema_version()"


# Workers: registry, wake-ups and the maintenance leader.
LISTEN: LiteralString = "LISTEN pushpop"


def lead_maintenance(worker: UUID, lease: checks.Duration) -> Call[bool]:
    """Become, or stay, the one worker that runs maintenance fleet-wide, for ``lease``; True if
    this worker leads (``pushpop.lead_maintenance``)."""
    return Call(
        "SELECT pushpop.lead_maintenance(%(worker)s::uuid, %(lease)s::interval)",
        {"worker": worker, "lease": checks.duration(lease, "lease", positive=True)},
        _scalar,
        MAINTAINER,
    )


def resign_maintenance(worker: UUID) -> Call[bool]:
    """Give up the lead at once, for another worker to take (``pushpop.resign_maintenance``)."""
    return Call(
        "SELECT pushpop.resign_maintenance(%(worker)s::uuid)",
        {"worker": worker},
        _scalar,
        MAINTAINER,
    )


def worker_heartbeat(
    id: UUID, host: str, pid: int, topics: Sequence[str], concurrency: int
) -> Call[None]:
    """Register a worker, or record that it is alive (``pushpop.worker_heartbeat``)."""
    return Call(
        "SELECT pushpop.worker_heartbeat(%(id)s::uuid, %(host)s::text, %(pid)s::integer,"
        " %(topics)s::text[], %(concurrency)s::integer)",
        {"id": id, "host": host, "pid": pid, "topics": list(topics), "concurrency": concurrency},
        lambda rows: None,
    )


def wait_for_push(consumer: UUID, topics: Sequence[str]) -> Call[None]:
    """Ask for a NOTIFY when a message of ``topics`` is next ready (``pushpop.wait_for_push``)."""
    return Call(
        "SELECT pushpop.wait_for_push(%(consumer)s::uuid, %(topics)s::text[])",
        {"consumer": consumer, "topics": list(topics)},
        lambda rows: None,
    )


def worker_stopped(id: UUID) -> Call[bool]:
    """Remove a cleanly stopped worker from the registry (``pushpop.worker_stopped``)."""
    return Call("SELECT pushpop.worker_stopped(%(id)s::uuid)", {"id": id}, _scalar)


def _workers(rows: Rows) -> list[WorkerInfo]:
    return [WorkerInfo(*row) for row in rows]


def workers(stale_after: checks.Duration) -> Call[list[WorkerInfo]]:
    """The live workers (``pushpop.workers``)."""
    return Call(
        "SELECT id, host, pid, topics, concurrency, started_at, heartbeat_at"
        " FROM pushpop.workers(%(stale)s::interval)",
        {"stale": checks.duration(stale_after, "stale_after", positive=True)},
        _workers,
    )


def prune_workers(stale_after: checks.Duration) -> Call[int]:
    """Forget workers that stopped heartbeating (``pushpop.prune_workers``)."""
    return Call(
        "SELECT pushpop.prune_workers(%(stale)s::interval)",
        {"stale": checks.duration(stale_after, "stale_after", positive=True)},
        _scalar,
        MAINTAINER,
    )


# The queue gauges of pushpop.exporter: stats() and the live workers per topic, in one round
# trip, with the database's clock for the age of the oldest ready message.
QUEUE_GAUGES: LiteralString = """
WITH s AS (SELECT * FROM pushpop.stats()),
     w AS (SELECT t.topic, count(*) AS workers
           FROM pushpop.workers(%(stale)s::interval) AS l, unnest(l.topics) AS t(topic)
           GROUP BY t.topic)
SELECT coalesce(s.topic, w.topic), coalesce(s.ready, 0), coalesce(s.scheduled, 0),
       coalesce(s.pending, 0), coalesce(s.completed, 0), coalesce(s.discarded, 0),
       coalesce(s.paused, false),
       coalesce(greatest(extract(epoch FROM now() - s.oldest_ready), 0), 0)::float8,
       coalesce(w.workers, 0), coalesce(s.blocked, 0)
FROM s FULL JOIN w USING (topic)
ORDER BY 1
"""


def queue_gauges(stale_after: checks.Duration) -> Call[Rows]:
    """Per topic: ready, scheduled, pending, completed, discarded, paused, the oldest ready
    message's age in seconds, the workers heartbeating within ``stale_after``, and blocked."""
    stale = checks.duration(stale_after, "stale_after", positive=True)
    return Call(QUEUE_GAUGES, {"stale": stale}, _rows)


# Operations: pause, browse, redrive, cancel, schedules.

BROWSE_STATES = ("scheduled", "ready", "pending", "blocked", "completed", "discarded")
BROWSE_LIMIT = 100
"""``pushpop.browse(max_rows)``: messages on one page."""


def pause(topic: str) -> Call[bool]:
    """Stop pops from a topic; True if it was running (``pushpop.pause``)."""
    return Call("SELECT pushpop.pause(%(topic)s)", {"topic": checks.topic(topic)}, _scalar, ADMIN)


def resume(topic: str) -> Call[bool]:
    """Let a paused topic be popped again; True if it was paused (``pushpop.resume``)."""
    return Call("SELECT pushpop.resume(%(topic)s)", {"topic": checks.topic(topic)}, _scalar, ADMIN)


def browse(topic: str, state: str | None, after: UUID | str | None, limit: int) -> Call[Rows]:
    """One page of a topic's messages, taking none (``pushpop.browse``); rows of COLUMNS."""
    if state is not None and state not in BROWSE_STATES:
        raise InvalidArgument(
            f"state must be one of {', '.join(BROWSE_STATES)} (or None for all), got {state!r}"
        )
    return Call(
        "SELECT " + COLUMNS + " FROM pushpop.browse(%(topic)s, %(state)s::text, %(after)s::uuid,"
        " %(limit)s::integer)",
        {
            "topic": checks.topic(topic),
            "state": state,
            "after": None if after is None else checks.message_id(after, "after"),
            "limit": checks.integer(limit, "limit", low=1),
        },
        _rows,
    )


def retry(id: UUID | str) -> Call[bool]:
    """Send a discarded message round again (``pushpop.retry``)."""
    return Call("SELECT pushpop.retry(%(id)s::uuid)", {"id": checks.message_id(id)}, _scalar, ADMIN)


def retry_discarded(topic: str, max_rows: int | None) -> Call[int]:
    """Send a topic's discarded messages round again, oldest first (``pushpop.retry_discarded``)."""
    return Call(
        "SELECT pushpop.retry_discarded(%(topic)s, %(max_rows)s::integer)",
        {
            "topic": checks.topic(topic),
            "max_rows": None if max_rows is None else checks.integer(max_rows, "max_rows", low=1),
        },
        _scalar,
        ADMIN,
    )


def cancel(id: UUID | str) -> Call[bool]:
    """Discard a message that was not delivered yet (``pushpop.cancel``)."""
    return Call(
        "SELECT pushpop.cancel(%(id)s::uuid)", {"id": checks.message_id(id)}, _scalar, ADMIN
    )


def schedule(
    name: str,
    topic: str,
    payload: bytes,
    cron: str | None,
    every: checks.Duration | None,
    timezone: str,
    priority: int,
) -> Call[None]:
    """Create or replace a periodic message (``pushpop.schedule``); SQL checks the cron
    expression and the time zone."""
    if (cron is None) == (every is None):
        raise InvalidArgument("give exactly one of cron and every")
    return Call(
        "SELECT pushpop.schedule(%(name)s, %(topic)s, %(payload)s, %(cron)s::text,"
        " %(every)s::interval, %(timezone)s::text, %(priority)s::integer)",
        {
            "name": checks.topic(name, "name"),
            "topic": checks.topic(topic),
            "payload": payload,
            "cron": checks.optional_text(cron, "cron"),
            "every": None if every is None else checks.duration(every, "every", positive=True),
            "timezone": checks.topic(timezone, "timezone"),
            "priority": checks.integer(priority, "priority", low=-checks.INT4_MAX - 1),
        },
        lambda rows: None,
        ADMIN,
    )


def unschedule(name: str) -> Call[bool]:
    """Delete a schedule; True if there was one (``pushpop.unschedule``)."""
    return Call(
        "SELECT pushpop.unschedule(%(name)s)", {"name": checks.topic(name, "name")}, _scalar, ADMIN
    )


def schedules() -> Call[list[ScheduleInfo]]:
    """Every schedule (``pushpop.schedules``)."""
    return Call(
        "SELECT name, topic, cron, every, timezone, next_run_at, last_run_at"
        " FROM pushpop.schedules()",
        {},
        lambda rows: [ScheduleInfo(*row) for row in rows],
        ADMIN,
    )


def run_schedules() -> Call[int]:
    """Push the due ticks of every schedule, each once (``pushpop.run_schedules``)."""
    return Call("SELECT pushpop.run_schedules()", {}, _scalar, MAINTAINER)


# Fan-out: SQL checks the patterns (words, wildcards) and names the bad argument.


def subscribe(topic: str, subscriber: str) -> Call[bool]:
    """Copy every push to ``topic`` (or a pattern) into ``subscriber`` (``pushpop.subscribe``)."""
    return Call(
        "SELECT pushpop.subscribe(%(topic)s, %(subscriber)s)",
        {"topic": checks.topic(topic), "subscriber": checks.topic(subscriber, "subscriber_topic")},
        _scalar,
        ADMIN,
    )


def unsubscribe(topic: str, subscriber: str) -> Call[bool]:
    """Remove a subscription; True if there was one (``pushpop.unsubscribe``)."""
    return Call(
        "SELECT pushpop.unsubscribe(%(topic)s, %(subscriber)s)",
        {"topic": checks.topic(topic), "subscriber": checks.topic(subscriber, "subscriber_topic")},
        _scalar,
        ADMIN,
    )


def subscriptions(topic: str | None) -> Call[list[SubscriptionInfo]]:
    """Every subscription, or those of one topic or pattern (``pushpop.subscriptions``)."""
    return Call(
        "SELECT pattern, subscriber, created_at FROM pushpop.subscriptions(%(topic)s::text)",
        {"topic": None if topic is None else checks.topic(topic)},
        lambda rows: [SubscriptionInfo(*row) for row in rows],
        ADMIN,
    )


def payload_of(payload: Any, json: Any) -> bytes:
    """The bytes of exactly one of ``payload`` and ``json=obj``, as a push stores them."""
    if (payload is None) == (json is _NO_PAYLOAD):
        raise InvalidType("give either payload (bytes) or json=obj, not both and not neither")
    return checks.payload(payload) if json is _NO_PAYLOAD else checks.json_payload(json)


# The dashboard (pushpop.dashboard): what stats() and workers() do not say.


# Finished messages per minute over a window, from the partial index messages_finished
# (state_time INCLUDE topic, state): an index-only range scan of the window, never the table.
def throughput(topic: str | None, window: checks.Duration) -> Call[Rows]:
    """Per minute of the last ``window``: (minute, completed, discarded), of one topic or all."""
    return Call(
        "SELECT minute, completed, discarded"
        " FROM pushpop.throughput(%(window)s::interval, %(topic)s::text)",
        {
            "topic": None if topic is None else checks.topic(topic),
            "window": checks.duration(window, "window", positive=True),
        },
        _rows,
        CONSUMER,
    )


def workers_and_leader(stale_after: checks.Duration) -> Call[Rows]:
    """The live workers as :func:`workers` lists them, each with whether it leads maintenance
    now, and the database's clock for their heartbeat ages."""
    return Call(
        "SELECT w.id, w.host, w.pid, w.topics, w.concurrency, w.started_at, w.heartbeat_at,"
        " coalesce(w.id = pushpop.maintenance_leader(), false), now()"
        " FROM pushpop.workers(%(stale)s::interval) AS w"
        " ORDER BY w.host, w.pid",
        {"stale": checks.duration(stale_after, "stale_after", positive=True)},
        _rows,
        CONSUMER,
    )
