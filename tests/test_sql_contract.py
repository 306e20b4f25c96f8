"""The SQL functions' contract, called as any language would call them: push, pop, acks, find.

Each behaviour is checked with positional and with named arguments somewhere, since other
languages' clients may use either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import psycopg
import pytest
from backdating import backdate
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from typing import LiteralString

Conn = psycopg.Connection[tuple[Any, ...]]
Row = dict[str, Any]


def scalar(conn: Conn, query: LiteralString, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def rows(
    conn: Conn, query: LiteralString, params: Sequence[Any] | dict[str, Any] = ()
) -> list[Row]:
    """Every row, as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def find(conn: Conn, id: UUID) -> Row | None:
    """pushpop.find's row, or None."""
    found = rows(conn, "SELECT * FROM pushpop.find(%s)", [id])
    assert len(found) <= 1
    return found[0] if found else None


def get(conn: Conn, id: UUID) -> Row:
    """pushpop.find's row, which must exist."""
    message = find(conn, id)
    assert message is not None, f"no message {id}"
    return message


def lease_of(conn: Conn, id: UUID) -> UUID | None:
    """The lease the table holds for a message (find never shows it)."""
    lease: UUID | None = scalar(conn, "SELECT lease FROM pushpop.messages WHERE id = %s", [id])
    return lease


def push(conn: Conn, topic: str = "t", payload: bytes = b"x") -> UUID:
    """Pushes with every default, positionally."""
    result: UUID = scalar(conn, "SELECT pushpop.push(%s, %s)", [topic, payload])
    return result


def pop(conn: Conn, topic: str = "t", n: int = 1) -> list[Row]:
    """Pops with a five-minute lease."""
    return rows(conn, "SELECT * FROM pushpop.pop(%s, '5 minutes', %s)", [topic, n])


def pop_one(conn: Conn, topic: str = "t") -> Row:
    """Pops exactly one message."""
    (message,) = pop(conn, topic)
    return message


def count(conn: Conn) -> int:
    """How many messages the table holds, in any state."""
    result: int = scalar(conn, "SELECT count(*) FROM pushpop.messages")
    return result


# push


def test_push_stores_a_ready_message_with_the_default_fields(conn: Conn) -> None:
    payload = bytes(range(256))
    id = push(conn, "jobs", payload)
    message = get(conn, id)
    assert message["topic"] == "jobs"
    assert message["payload"] == payload
    assert (message["state"], message["priority"], message["attempts"]) == ("ready", 0, 0)
    assert (message["max_attempts"], message["lease"], message["error"]) == (25, None, None)
    assert message["dedup_key"] is None


def test_push_accepts_positional_and_named_arguments_alike(conn: Conn) -> None:
    given = uuid4()
    positional = scalar(
        conn,
        "SELECT pushpop.push('t', 'a'::bytea, interval '0', 7, %s, 'pos', 3)",
        [given],
    )
    named = scalar(
        conn,
        "SELECT pushpop.push(topic => 't', payload => 'b'::bytea, priority => 7,"
        " dedup_key => 'named', max_attempts => 3)",
    )
    assert positional == given
    for id, key in ((positional, "pos"), (named, "named")):
        message = get(conn, id)
        assert (message["priority"], message["max_attempts"], message["dedup_key"]) == (7, 3, key)


def test_push_with_delay_is_ready_only_once_due(conn: Conn) -> None:
    with conn.transaction():
        id = scalar(conn, "SELECT pushpop.push('t', 'x', delay => interval '1 hour')")
        due = scalar(conn, "SELECT now() + interval '1 hour'")
        message = get(conn, id)
    assert (message["state"], message["state_time"]) == ("ready", due)
    assert pop(conn) == []
    backdate(conn, id)
    assert pop_one(conn)["id"] == id


def test_push_with_an_existing_id_returns_it_and_inserts_nothing(conn: Conn) -> None:
    id = uuid4()
    first = scalar(conn, "SELECT pushpop.push('t', 'first', id => %s)", [id])
    again = scalar(conn, "SELECT pushpop.push('t', 'second', interval '0', 5, %s)", [id])
    assert first == again == id
    assert count(conn) == 1
    message = get(conn, id)
    assert (message["topic"], message["payload"], message["priority"]) == ("t", b"first", 0)


def test_push_with_an_id_taken_in_another_topic_is_refused_and_inserts_nothing(
    conn: Conn,
) -> None:
    id = scalar(conn, "SELECT pushpop.push('t', 'first')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="taken by a message of another"):
        conn.execute("SELECT pushpop.push('other', 'second', id => %s)", [id])
    assert count(conn) == 1
    assert get(conn, id)["topic"] == "t"


def test_push_with_a_live_dedup_key_returns_the_existing_message(conn: Conn) -> None:
    first = scalar(conn, "SELECT pushpop.push('t', 'a', dedup_key => 'k')")
    assert scalar(conn, "SELECT pushpop.push('t', 'b', dedup_key => 'k')") == first
    assert pop_one(conn)["id"] == first  # pending holds the key too
    assert scalar(conn, "SELECT pushpop.push('t', 'c', dedup_key => 'k')") == first
    assert count(conn) == 1
    message = get(conn, first)
    assert message["payload"] == b"a"


def test_push_with_a_delayed_dedup_key_returns_the_existing_message(conn: Conn) -> None:
    first = scalar(conn, "SELECT pushpop.push('t', 'a', '1 hour', dedup_key => 'k')")
    assert scalar(conn, "SELECT pushpop.push('t', 'b', dedup_key => 'k')") == first
    assert count(conn) == 1


def test_push_dedup_key_is_free_again_once_the_message_finished(conn: Conn) -> None:
    first = scalar(conn, "SELECT pushpop.push('t', 'a', dedup_key => 'k')")
    leased = pop_one(conn)
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [first, leased["lease"]])
    second = scalar(conn, "SELECT pushpop.push('t', 'b', dedup_key => 'k')")
    assert second != first
    assert count(conn) == 2
    message = get(conn, second)
    assert (message["state"], message["payload"]) == ("ready", b"b")


def test_push_dedup_key_is_scoped_to_its_topic(conn: Conn) -> None:
    first = scalar(conn, "SELECT pushpop.push('a', 'x', dedup_key => 'k')")
    other = scalar(conn, "SELECT pushpop.push('b', 'x', dedup_key => 'k')")
    assert first != other
    assert count(conn) == 2


# push_many


def test_push_many_returns_ids_in_input_order(conn: Conn) -> None:
    payloads = [b"0", b"1", b"2", b"3"]
    ids = [r[0] for r in conn.execute("SELECT pushpop.push_many('t', %s)", [payloads])]
    assert len(set(ids)) == 4
    assert [get(conn, id)["payload"] for id in ids] == payloads
    assert [m["id"] for m in pop(conn, n=10)] == ids  # push order is pop order


def test_push_many_accepts_named_arguments_and_applies_delay_and_priority(conn: Conn) -> None:
    with conn.transaction():
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT pushpop.push_many(topic => 't', payloads => %s,"
                " delay => interval '1 hour', priority => 4)",
                [[b"a", b"b"]],
            )
        ]
        due = scalar(conn, "SELECT now() + interval '1 hour'")
    for id in ids:
        message = get(conn, id)
        assert (message["state"], message["state_time"], message["priority"]) == ("ready", due, 4)
    assert pop(conn) == []


def test_push_many_of_nothing_returns_no_ids(conn: Conn) -> None:
    assert conn.execute("SELECT pushpop.push_many('t', '{}'::bytea[])").fetchall() == []
    assert count(conn) == 0


# pop


def test_pop_takes_highest_priority_then_oldest_then_push_order(conn: Conn) -> None:
    ids = [r[0] for r in conn.execute("SELECT pushpop.push_many('t', %s)", [[b"a", b"b", b"c"]])]
    old = push(conn, payload=b"old")
    backdate(conn, old, "1 hour")
    urgent = scalar(conn, "SELECT pushpop.push('t', 'urgent', priority => 5)")
    expected = [urgent, old, *ids]
    assert [m["id"] for m in pop(conn, n=10)] == expected


def test_pop_one_at_a_time_follows_the_same_order(conn: Conn) -> None:
    ids = [r[0] for r in conn.execute("SELECT pushpop.push_many('t', %s)", [[b"a", b"b", b"c"]])]
    low = scalar(conn, "SELECT pushpop.push('t', 'low', priority => -1)")
    urgent = scalar(conn, "SELECT pushpop.push('t', 'urgent', priority => 1)")
    assert [pop_one(conn)["id"] for _ in range(5)] == [urgent, *ids, low]


def test_pop_returns_at_most_max_messages(conn: Conn) -> None:
    conn.execute("SELECT pushpop.push_many('t', %s)", [[b"x"] * 5])
    assert len(rows(conn, "SELECT * FROM pushpop.pop('t', interval '1 minute', 2)")) == 2
    named = "SELECT * FROM pushpop.pop(topic => 't', max_messages => 2, lease_for => '1 minute')"
    assert len(rows(conn, named)) == 2
    assert len(rows(conn, "SELECT * FROM pushpop.pop('t', max_messages => 10)")) == 1
    assert rows(conn, "SELECT * FROM pushpop.pop('t', max_messages => 10)") == []


def test_pop_leases_each_message_until_now_plus_lease_for(conn: Conn) -> None:
    id = push(conn)
    with conn.transaction():
        (message,) = rows(conn, "SELECT * FROM pushpop.pop('t', interval '90 seconds')")
        now = scalar(conn, "SELECT now()")
        deadline = scalar(conn, "SELECT now() + interval '90 seconds'")
    assert message["id"] == id
    assert (message["state"], message["attempts"]) == ("pending", 1)
    assert (message["state_time"], message["lease_until"]) == (now, deadline)
    assert isinstance(message["lease"], UUID)
    assert find(conn, id) == {**message, "lease": None}  # the lease token is the popper's alone


def test_pop_gives_a_fresh_lease_and_one_more_attempt_each_time(conn: Conn) -> None:
    id = push(conn)
    first = pop_one(conn)
    assert scalar(conn, "SELECT pushpop.defer(%s, %s)", [id, first["lease"]])
    second = pop_one(conn)
    assert second["id"] == id
    assert second["attempts"] == 2
    assert second["lease"] != first["lease"]


def test_pop_returns_no_rows_when_nothing_is_ready(conn: Conn) -> None:
    assert pop(conn) == []
    push(conn, "other")
    assert pop(conn) == []
    push(conn)
    pop_one(conn)
    assert pop(conn) == []  # the only message is pending


def test_pop_takes_a_due_delayed_message_before_a_later_ready_one(conn: Conn) -> None:
    delayed = scalar(conn, "SELECT pushpop.push('t', 'delayed', interval '1 hour')")
    backdate(conn, delayed, "1 minute")
    ready = push(conn)
    assert [m["id"] for m in pop(conn, n=2)] == [delayed, ready]


# complete, discard, defer, extend: fenced by the lease


def test_complete_succeeds_only_with_the_current_lease(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [id, uuid4()]) is False
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [uuid4(), lease]) is False
    assert get(conn, id)["state"] == "pending"
    assert scalar(conn, "SELECT pushpop.complete(id => %s, lease => %s)", [id, lease]) is True
    message = get(conn, id)
    assert (message["state"], message["lease"]) == ("completed", None)
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [id, lease]) is False


def test_discard_keeps_the_reason_and_is_fenced(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    assert scalar(conn, "SELECT pushpop.discard(%s, %s, 'nope')", [id, uuid4()]) is False
    assert scalar(conn, "SELECT pushpop.discard(%s, %s, 'nope')", [uuid4(), lease]) is False
    assert get(conn, id)["state"] == "pending"
    assert scalar(conn, "SELECT pushpop.discard(%s, %s, 'bad input')", [id, lease]) is True
    message = get(conn, id)
    assert (message["state"], message["error"], message["lease"]) == (
        "discarded",
        "bad input",
        None,
    )
    named = "SELECT pushpop.discard(id => %s, lease => %s, reason => 'again')"
    assert scalar(conn, named, [id, lease]) is False
    assert pop(conn) == []


def test_defer_requeues_after_delay_keeping_the_reason(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    with conn.transaction():
        deferred = scalar(conn, "SELECT pushpop.defer(%s, %s, '1 hour', 'busy')", [id, lease])
        due = scalar(conn, "SELECT now() + interval '1 hour'")
    assert deferred is True
    message = get(conn, id)
    assert (message["state"], message["state_time"]) == ("ready", due)
    assert (message["error"], message["lease"], message["attempts"]) == ("busy", None, 1)
    assert pop(conn) == []
    backdate(conn, id)
    again = pop_one(conn)
    assert (again["id"], again["attempts"], again["error"]) == (id, 2, "busy")


def test_defer_without_reason_keeps_the_previous_error(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    assert scalar(conn, "SELECT pushpop.defer(%s, %s, reason => 'first')", [id, lease])
    lease = pop_one(conn)["lease"]
    assert scalar(conn, "SELECT pushpop.defer(id => %s, lease => %s)", [id, lease])
    assert pop_one(conn)["error"] == "first"


def test_defer_is_fenced(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    assert scalar(conn, "SELECT pushpop.defer(%s, %s)", [id, uuid4()]) is False
    assert scalar(conn, "SELECT pushpop.defer(%s, %s)", [uuid4(), lease]) is False
    assert get(conn, id)["state"] == "pending"


def test_extend_moves_the_lease_deadline(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    with conn.transaction():
        extended = scalar(conn, "SELECT pushpop.extend(%s, %s, '2 hours')", [id, lease])
        deadline = scalar(conn, "SELECT now() + interval '2 hours'")
    assert extended is True
    message = get(conn, id)
    assert (message["state"], message["lease_until"], lease_of(conn, id)) == (
        "pending", deadline, lease,
    )  # fmt: skip
    named = "SELECT pushpop.extend(id => %s, lease => %s, lease_for => '1 hour')"
    assert scalar(conn, named, [id, uuid4()]) is False
    assert scalar(conn, named, [uuid4(), lease]) is False
    assert get(conn, id)["lease_until"] == deadline


def updates(conn: Conn, table: str) -> tuple[int, int]:
    """Rows this transaction has updated in the table so far, and how many of those were HOT
    (written on the same page without new index entries, so pruning reclaims them)."""
    row = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
        [table],
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def test_extending_a_lease_is_a_hot_update(conn: Conn) -> None:
    id = push(conn)
    lease = pop_one(conn)["lease"]
    with conn.transaction():
        before = updates(conn, "pushpop.messages")
        for hours in (1, 2, 3):
            assert scalar(conn, "SELECT pushpop.extend(%s, %s, %s::interval)",
                          [id, lease, timedelta(hours=hours)]) is True  # fmt: skip
        assert updates(conn, "pushpop.messages") == (before[0] + 3, before[1] + 3)


def test_a_worker_heartbeat_is_a_hot_update(conn: Conn) -> None:
    worker = uuid4()
    beat = "SELECT pushpop.worker_heartbeat(%s, 'host', 1, '{t}', 1)"
    conn.execute(beat, [worker])
    with conn.transaction():
        before = updates(conn, "pushpop.workers")
        for _ in range(3):
            conn.execute(beat, [worker])
        assert updates(conn, "pushpop.workers") == (before[0] + 3, before[1] + 3)


def test_an_old_lease_cannot_settle_a_message_requeued_and_popped_again(conn: Conn) -> None:
    id = push(conn)
    old = pop_one(conn)["lease"]
    backdate(conn, id)
    assert scalar(conn, "SELECT pushpop.requeue_expired()") == 1
    new = pop_one(conn)["lease"]
    for call in (
        "SELECT pushpop.complete(%s, %s)",
        "SELECT pushpop.defer(%s, %s)",
        "SELECT pushpop.extend(%s, %s)",
        "SELECT pushpop.discard(%s, %s)",
    ):
        assert scalar(conn, call, [id, old]) is False, call
    message = get(conn, id)
    assert (message["state"], lease_of(conn, id), message["attempts"]) == ("pending", new, 2)
    assert scalar(conn, "SELECT pushpop.complete(%s, %s)", [id, new]) is True


# find


def test_find_returns_the_message_in_any_state(conn: Conn) -> None:
    id = push(conn)
    assert get(conn, id)["state"] == "ready"
    lease = pop_one(conn)["lease"]
    assert get(conn, id)["state"] == "pending"
    conn.execute("SELECT pushpop.complete(%s, %s)", [id, lease])
    completed = rows(conn, "SELECT * FROM pushpop.find(id => %s)", [id])
    assert [m["state"] for m in completed] == ["completed"]


def test_find_of_an_unknown_id_returns_no_row(conn: Conn) -> None:
    push(conn)
    assert find(conn, uuid4()) is None


def test_find_reports_a_delayed_message_as_ready(conn: Conn) -> None:
    id = scalar(conn, "SELECT pushpop.push('t', 'x', interval '1 day')")
    message = get(conn, id)
    assert message["state"] == "ready"
    assert message["state_time"] - timedelta(hours=23) > scalar(conn, "SELECT now()")


def test_find_never_shows_a_lease_token(conn: Conn) -> None:
    id = push(conn)
    assert isinstance(pop_one(conn)["lease"], UUID)
    assert get(conn, id)["lease"] is None
    assert isinstance(lease_of(conn, id), UUID)


def test_pop_keeps_priority_order_however_many_scheduled_messages_fall_due_at_once(
    conn: Conn,
) -> None:
    conn.execute(
        "INSERT INTO pushpop.messages (id, topic, state, state_time, payload)"
        " SELECT gen_random_uuid(), 't', 'scheduled', now() - interval '1 hour', 'low'"
        " FROM generate_series(1, 1500)"
    )
    urgent = scalar(conn, "SELECT pushpop.push('t', 'urgent', interval '1 hour', 10)")
    # Due a minute ago: after every low-priority one, which fell due an hour ago.
    conn.execute(
        "UPDATE pushpop.messages SET state_time = now() - interval '1 minute' WHERE id = %s",
        [urgent],
    )
    assert pop_one(conn)["id"] == urgent
