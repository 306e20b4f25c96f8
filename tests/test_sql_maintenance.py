"""The SQL functions that look after the queue (requeue_expired, cleanup, stats, purge),
the notifications push sends, and how every function rejects bad arguments.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
import pytest
from backdating import backdate
from psycopg import errors as pg_errors

if TYPE_CHECKING:
    from typing import LiteralString

Conn = psycopg.Connection[tuple[Any, ...]]


def scalar(conn: Conn, query: LiteralString, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def push(
    conn: Conn, topic: str = "t", *, delay: str = "0", priority: int = 0, max_attempts: int = 25
) -> UUID:
    """Pushes one message."""
    result: UUID = scalar(
        conn,
        "SELECT pushpop.push(%s, 'x', %s::interval, %s, max_attempts => %s)",
        [topic, delay, priority, max_attempts],
    )
    return result


def pop(conn: Conn, topic: str = "t", lease: str = "5 minutes") -> tuple[UUID, UUID]:
    """Pops exactly one message; its id and lease."""
    (row,) = conn.execute("SELECT id, lease FROM pushpop.pop(%s, %s::interval)", [topic, lease])
    return row[0], row[1]


def state(conn: Conn, id: UUID) -> tuple[str, str | None]:
    """The message's state and error as callers see them."""
    row = conn.execute("SELECT state, error FROM pushpop.find(%s)", [id]).fetchone()
    assert row is not None
    return row[0], row[1]


SETTLE: dict[str, LiteralString] = {
    "complete": "SELECT pushpop.complete(%s, %s)",
    "discard": "SELECT pushpop.discard(%s, %s)",
}


def finished(conn: Conn, how: str, ago: str = "0", topic: str = "done") -> UUID:
    """A message of ``topic`` completed or discarded ``ago`` (``how`` names the function)."""
    pushed = push(conn, topic)
    id, lease = pop(conn, topic)
    assert id == pushed
    assert scalar(conn, SETTLE[how], [id, lease]) is True
    backdate(conn, id, ago)
    return id


# requeue_expired


def test_requeue_expired_returns_lapsed_leases_to_ready_with_an_error(conn: Conn) -> None:
    lapsed = [push(conn), push(conn, "other")]
    for id, topic in zip(lapsed, ["t", "other"], strict=True):
        pop(conn, topic)
        backdate(conn, id)
    live = push(conn)
    pop(conn)
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 2
    for id in lapsed:
        assert state(conn, id) == ("ready", "lease expired on attempt 1 of 25")
    assert state(conn, live) == ("pending", None)
    assert pop(conn)[0] == lapsed[0]
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 0


def test_requeue_expired_leaves_a_lease_extended_before_it_lapsed(conn: Conn) -> None:
    id = push(conn)
    _, lease = pop(conn)
    backdate(conn, id)  # the lease has lapsed...
    assert scalar(conn, "SELECT pushpop.extend(%s, %s, '1 minute')", [id, lease]) is True
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 0  # ...but not any more
    assert state(conn, id) == ("pending", None)
    backdate(conn, id)
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 1


def test_requeue_expired_discards_a_message_out_of_attempts(conn: Conn) -> None:
    id = push(conn, max_attempts=1)
    pop(conn)
    backdate(conn, id)
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 1
    got, error = state(conn, id)
    assert got == "discarded"
    assert error is not None
    assert "attempt 1 of 1" in error
    assert "discarded" in error
    assert conn.execute("SELECT * FROM pushpop.pop('t')").fetchall() == []


def test_requeue_expired_picks_up_a_short_lease_once_it_lapses(conn: Conn) -> None:
    id = push(conn)
    pop(conn, lease="10 milliseconds")
    deadline = time.monotonic() + 5
    moved = 0
    while moved == 0 and time.monotonic() < deadline:
        moved = scalar(conn, "SELECT pushpop.requeue_expired()")
        time.sleep(0.005)
    assert moved == 1
    assert state(conn, id)[0] == "ready"


# cleanup


def test_cleanup_deletes_only_finished_messages_past_the_grace(conn: Conn) -> None:
    old_completed = finished(conn, "complete", "2 days")
    old_discarded = finished(conn, "discard", "2 days")
    recent = finished(conn, "complete", "1 hour")
    old_ready = push(conn)
    backdate(conn, old_ready, "3 days")
    old_pending = push(conn, "p")
    pop(conn, "p")
    backdate(conn, old_pending, "3 days")
    assert scalar(conn, "SELECT pushpop.cleanup(interval '1 day')") == 2
    remaining = {r[0] for r in conn.execute("SELECT id FROM pushpop.messages")}
    assert remaining == {recent, old_ready, old_pending}
    assert not remaining & {old_completed, old_discarded}
    assert scalar(conn, "SELECT pushpop.cleanup(grace => '0')") == 1
    assert scalar(conn, "SELECT count(*) FROM pushpop.messages") == 2


def test_cleanup_max_rows_deletes_the_oldest_first(conn: Conn) -> None:
    oldest = finished(conn, "complete", "3 days")
    older = finished(conn, "discard", "2 days")
    newer = finished(conn, "complete", "1 minute")
    assert scalar(conn, "SELECT pushpop.cleanup('0', 2)") == 2
    remaining = [r[0] for r in conn.execute("SELECT id FROM pushpop.messages")]
    assert remaining == [newer]
    assert oldest not in remaining
    assert older not in remaining
    assert scalar(conn, "SELECT pushpop.cleanup(max_rows => 5, grace => '0')") == 1


# stats


def test_stats_counts_each_state_per_topic(conn: Conn) -> None:
    finished(conn, "complete", topic="a")
    finished(conn, "discard", topic="a")
    push(conn, "a")
    push(conn, "a")
    push(conn, "a", delay="1 hour")
    due = push(conn, "a", delay="1 hour")
    backdate(conn, due)  # delayed, but due now: counts as ready
    pending = push(conn, "a", priority=9)
    assert pop(conn, "a")[0] == pending
    push(conn, "b")
    stats = conn.execute(
        "SELECT topic, ready, scheduled, pending, completed, discarded FROM pushpop.stats()"
    ).fetchall()
    assert stats == [("a", 3, 1, 1, 1, 1), ("b", 1, 0, 0, 0, 0)]


def test_stats_oldest_ready_is_the_earliest_state_time_among_ready_messages(conn: Conn) -> None:
    with conn.transaction():
        push(conn)
        first = scalar(conn, "SELECT now()")
    push(conn)
    pending = push(conn, priority=1)
    pop(conn)
    backdate(conn, pending, "1 day")  # pending, not ready: does not count
    assert scalar(conn, "SELECT oldest_ready FROM pushpop.stats()") == first
    due = push(conn, delay="1 hour")
    backdate(conn, due, "1 hour")
    due_time = scalar(conn, "SELECT state_time FROM pushpop.messages WHERE id = %s", [due])
    assert scalar(conn, "SELECT oldest_ready FROM pushpop.stats()") == due_time


def test_stats_of_an_empty_queue_has_no_rows(conn: Conn) -> None:
    assert conn.execute("SELECT * FROM pushpop.stats()").fetchall() == []


# purge


def test_purge_deletes_every_message_of_the_topic_but_pending_ones(conn: Conn) -> None:
    finished(conn, "complete", topic="t")
    push(conn)
    pending, lease = pop(conn)
    push(conn)
    push(conn, delay="1 hour")
    kept = push(conn, "other")
    assert scalar(conn, "SELECT pushpop.purge('t')") == 3
    remaining = {r[0] for r in conn.execute("SELECT id FROM pushpop.messages")}
    assert remaining == {pending, kept}
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [pending, lease]) is True
    assert scalar(conn, "SELECT pushpop.purge(topic => 't')") == 1


# notifications: pushes notify only consumers that wait for them


@pytest.fixture
def listener(dsn: str) -> Iterator[Conn]:
    """A second connection listening on the ``pushpop`` channel."""
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute("LISTEN pushpop")
        yield listening


CONSUMER = "00000000-0000-4000-8000-00000000000c"


def waits(conn: Conn, *topics: str) -> None:
    """Registers CONSUMER as waiting for a push to any of topics."""
    conn.execute("SELECT pushpop.wait_for_push(%s, %s)", [CONSUMER, list(topics)])


def heard_until_marker(listener: Conn) -> list[str]:
    """The topics notified, up to and including the one named "marker"."""
    received = []
    for notify in listener.notifies(timeout=5):
        assert notify.channel == "pushpop"
        received.append(notify.payload)
        if notify.payload == "marker":
            break
    return received


def test_push_notifies_a_waiting_consumer_once_and_ends_its_wait(
    conn: Conn, listener: Conn
) -> None:
    waits(conn, "orders")
    push(conn, "orders")
    push(conn, "orders")  # nobody waits any more: no second notification
    waits(conn, "marker")
    push(conn, "marker")
    assert heard_until_marker(listener) == ["orders", "marker"]
    assert scalar(conn, "SELECT count(*) FROM pushpop.waiting") == 0


def test_push_without_a_waiting_consumer_does_not_notify(conn: Conn, listener: Conn) -> None:
    push(conn, "busy")
    waits(conn, "other", "marker")
    push(conn, "marker")
    assert heard_until_marker(listener) == ["marker"]


def test_delayed_push_does_not_notify(conn: Conn, listener: Conn) -> None:
    waits(conn, "later", "marker")
    push(conn, "later", delay="1 hour")
    push(conn, "marker")  # notifications arrive in commit order: the marker comes after
    assert heard_until_marker(listener) == ["marker"]


def test_push_many_notifies_once(conn: Conn, listener: Conn) -> None:
    waits(conn, "bulk", "marker")
    conn.execute("SELECT pushpop.push_many('bulk', %s)", [[b"a", b"b", b"c"]])
    push(conn, "marker")
    assert heard_until_marker(listener) == ["bulk", "marker"]


def test_push_inside_a_transaction_notifies_only_on_commit(conn: Conn, listener: Conn) -> None:
    waits(conn, "rolled-back", "marker")
    with conn.transaction(force_rollback=True):
        push(conn, "rolled-back")
    push(conn, "marker")
    assert heard_until_marker(listener) == ["marker"]
    assert scalar(conn, "SELECT count(*) FROM pushpop.waiting") == 1  # rolled back: still waits


def test_defer_without_delay_and_requeue_wake_waiting_consumers(conn: Conn, listener: Conn) -> None:
    push(conn, "again")
    push(conn, "lapsed")
    (id, lease), _ = conn.execute(
        "SELECT id, lease FROM pushpop.pop('again') UNION ALL"
        " SELECT id, lease FROM pushpop.pop('lapsed', interval '1 microsecond')"
    ).fetchall()
    waits(conn, "again", "lapsed", "marker")
    assert scalar(conn, "SELECT pushpop.defer(%s, %s)", [id, lease]) is True
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 1
    push(conn, "marker")
    assert heard_until_marker(listener) == ["again", "lapsed", "marker"]


def test_waiting_consumers_are_forgotten_when_they_stop_or_go_stale(conn: Conn) -> None:
    waits(conn, "a", "b")
    conn.execute(
        "UPDATE pushpop.waiting SET since = now() - interval '2 minutes' WHERE topic = 'a'"
    )
    conn.execute("SELECT pushpop.prune_workers(interval '1 minute')")
    assert conn.execute("SELECT topic FROM pushpop.waiting").fetchall() == [("b",)]
    conn.execute("SELECT pushpop.worker_stopped(%s)", [CONSUMER])
    assert scalar(conn, "SELECT count(*) FROM pushpop.waiting") == 0


def test_a_live_workers_wait_outlasts_the_stale_limit(conn: Conn) -> None:
    conn.execute("SELECT pushpop.worker_heartbeat(%s, 'h', 1, '{a}', 1)", [CONSUMER])
    waits(conn, "a")
    conn.execute("UPDATE pushpop.waiting SET since = now() - interval '1 hour'")
    conn.execute("SELECT pushpop.prune_workers(interval '1 minute')")
    assert conn.execute("SELECT topic FROM pushpop.waiting").fetchall() == [("a",)]


# bad arguments

BAD_CALLS: list[tuple[LiteralString, str]] = [
    ("SELECT pushpop.push('', 'x')", "topic"),
    ("SELECT pushpop.push(repeat('a', 256), 'x')", "topic"),
    ("SELECT pushpop.push(NULL, 'x')", "topic"),
    ("SELECT pushpop.push('t', NULL)", "payload"),
    ("SELECT pushpop.push('t', 'x', interval '-1 second')", "delay"),
    ("SELECT pushpop.push('t', 'x', priority => NULL)", "priority"),
    ("SELECT pushpop.push('t', 'x', max_attempts => 0)", "max_attempts"),
    ("SELECT pushpop.push('t', 'x', dedup_key => '')", "dedup_key"),
    ("SELECT pushpop.push_many('', ARRAY['x'::bytea])", "topic"),
    ("SELECT pushpop.push_many('t', NULL)", "payloads"),
    ("SELECT pushpop.push_many('t', ARRAY['x'::bytea, NULL])", "payloads"),
    ("SELECT pushpop.push_many('t', ARRAY['x'::bytea], '-1 day')", "delay"),
    ("SELECT * FROM pushpop.pop(NULL)", "topic"),
    ("SELECT * FROM pushpop.pop('t', interval '-1 minute')", "lease_for"),
    ("SELECT * FROM pushpop.pop('t', interval '0')", "lease_for"),
    ("SELECT * FROM pushpop.pop('t', max_messages => 0)", "max_messages"),
    ("SELECT pushpop.wait_for_push(NULL, ARRAY['t'])", "consumer"),
    ("SELECT pushpop.wait_for_push(gen_random_uuid(), ARRAY[]::text[])", "topics"),
    ("SELECT pushpop.wait_for_push(gen_random_uuid(), ARRAY[''])", "topic"),
    ("SELECT * FROM pushpop.complete_many(ARRAY[gen_random_uuid()], NULL)", "leases"),
    (
        "SELECT * FROM pushpop.complete_many(ARRAY[gen_random_uuid()], ARRAY[]::uuid[])",
        "ids and leases",
    ),
    (
        "SELECT pushpop.defer(id, lease, interval '-1 second') FROM pushpop.messages"
        " WHERE state = 'pending'",
        "delay",
    ),
    (
        "SELECT pushpop.extend(id, lease, interval '0') FROM pushpop.messages"
        " WHERE state = 'pending'",
        "lease_for",
    ),
    ("SELECT pushpop.cleanup(interval '-1 day')", "grace"),
    ("SELECT pushpop.cleanup(max_rows => 0)", "max_rows"),
    ("SELECT pushpop.purge('')", "topic"),
]


def test_every_bad_argument_raises_22023_naming_it_and_changes_nothing(
    conn: Conn, subtests: pytest.Subtests
) -> None:
    push(conn)
    push(conn, "t", delay="1 hour")
    pop(conn)
    push(conn)
    table = "SELECT * FROM pushpop.messages ORDER BY seq"
    for call, argument in BAD_CALLS:
        with subtests.test(call=call):
            before = conn.execute(table).fetchall()  # per case: one failure does not cascade
            with pytest.raises(pg_errors.InvalidParameterValue) as raised:
                conn.execute(call)
            assert raised.value.sqlstate == "22023"
            assert f"{argument} must" in (raised.value.diag.message_primary or "")
            assert conn.execute(table).fetchall() == before
    assert scalar(conn, "SELECT count(*) FROM pushpop.pop('t')") == 1  # still usable
