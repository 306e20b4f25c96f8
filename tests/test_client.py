"""The Python client's public API: what each method does to the queue and what it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

import pushpop
from pushpop import calls

Conn = psycopg.Connection[tuple[Any, ...]]


def eventually(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Polls ``condition`` until it returns something truthy, which it returns; fails at timeout."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.005)
    return result


def popped(client: pushpop.Client, topic: str = "t", **kwargs: Any) -> pushpop.Message:
    """Pops a message that must be there."""
    message = client.pop(topic, **kwargs)
    assert message is not None, f"nothing to pop on {topic!r}"
    return message


def found(client: pushpop.Client, id: UUID) -> pushpop.Message:
    """Finds a message that must exist."""
    message = client.find(id)
    assert message is not None, f"no message {id}"
    return message


def expire(client: pushpop.Client, count: int = 1) -> None:
    """Waits for ``count`` short leases to lapse and be requeued by requeue_expired."""
    moved = 0

    def all_moved() -> bool:
        nonlocal moved
        moved += client.requeue_expired()
        return moved >= count

    eventually(all_moved)
    assert moved == count


def test_push_then_pop_delivers_the_message_leased(client: pushpop.Client) -> None:
    id = client.push("t", b"\x00hello", priority=2, max_attempts=3, dedup_key="k")
    message = popped(client, lease=60)
    assert (message.id, message.topic, message.payload) == (id, "t", b"\x00hello")
    assert (message.priority, message.max_attempts, message.dedup_key) == (2, 3, "k")
    assert (message.state, message.attempts, message.error) == ("pending", 1, None)
    assert isinstance(message.lease, UUID)
    assert isinstance(message.state_time, datetime)
    assert isinstance(message.created_at, datetime)
    assert isinstance(message.lease_until, datetime)
    assert message.created_at <= message.state_time  # popped then
    assert timedelta(seconds=59) < message.lease_until - message.state_time <= timedelta(seconds=60)


def test_pop_returns_none_when_nothing_is_ready(client: pushpop.Client) -> None:
    assert client.pop("t") is None
    assert client.pop_many("t", 5) == []


def test_new_message_is_sent_only_by_push(client: pushpop.Client) -> None:
    message = client.new_message("t", b"x", priority=1)
    assert message.state is None
    assert client.find(message.id) is None
    assert message.push() == message.id
    assert found(client, message.id).state == "ready"


def test_a_push_leaving_every_option_at_its_default_stores_the_client_defaults(
    client: pushpop.Client,
) -> None:
    # A plain push leaves these to the SQL function's defaults, a delayed one sends them all:
    # either way the message stored holds the defaults new_message() shows.
    built = client.new_message("t", b"x")
    plain = client.push("t", b"x")
    spelled = client.push("t", b"x", priority=0, max_attempts=25, dedup_key=None)
    delayed = client.push("t", b"x", delay=0.001)
    for stored in (found(client, id) for id in (plain, spelled, delayed)):
        assert (stored.priority, stored.max_attempts, stored.dedup_key) == (
            built.priority, built.max_attempts, built.dedup_key
        )  # fmt: skip
        assert (stored.attempts, stored.payload) == (0, b"x")
    assert found(client, plain).state == "ready"


def test_a_pop_without_a_lease_leases_for_the_default_five_minutes(client: pushpop.Client) -> None:
    # The default lease is left to the SQL function's default; another one is sent.
    for lease, expected in ((None, 300), (60, 60), (timedelta(minutes=5), 300)):
        client.push("t", b"x")
        before = datetime.now(UTC)
        msg = client.pop("t") if lease is None else client.pop("t", lease=lease)
        assert msg is not None
        assert msg.lease_until is not None
        leased_for = (msg.lease_until - before).total_seconds()
        assert expected - 5 < leased_for <= expected + 1, (lease, leased_for)


def test_push_with_delay_is_popped_only_once_due(client: pushpop.Client) -> None:
    start = time.monotonic()
    id = client.push("t", b"x", delay=0.3)
    assert found(client, id).state == "ready"
    assert eventually(lambda: client.pop("t")).id == id
    assert time.monotonic() - start >= 0.3  # not a moment earlier


def test_push_with_a_timedelta_delay_waits(client: pushpop.Client) -> None:
    client.push("t", b"x", delay=timedelta(hours=1))
    assert client.pop("t") is None
    assert [(s.ready, s.scheduled) for s in client.stats()] == [(0, 1)]


def test_pop_many_takes_priority_then_push_order(client: pushpop.Client) -> None:
    ids = client.push_many("t", [b"a", b"b", b"c"])
    urgent = client.push("t", b"urgent", priority=10)
    assert [m.id for m in client.pop_many("t", 3)] == [urgent, ids[0], ids[1]]
    assert [m.id for m in client.pop_many("t", 3)] == [ids[2]]


def test_push_many_returns_ids_in_payload_order(client: pushpop.Client) -> None:
    payloads = [bytes([i]) for i in range(20)]
    ids = client.push_many("t", payloads, priority=3)
    assert len(set(ids)) == 20
    assert [found(client, id).payload for id in ids] == payloads
    assert {found(client, id).priority for id in ids} == {3}
    assert client.push_many("t", []) == []


def test_push_many_with_delay_is_not_ready_yet(client: pushpop.Client) -> None:
    client.push_many("t", [b"a", b"b"], delay=3600)
    assert client.pop("t") is None
    assert [(s.ready, s.scheduled) for s in client.stats()] == [(0, 2)]


def test_push_with_an_existing_id_returns_it_and_keeps_the_first(client: pushpop.Client) -> None:
    id = uuid4()
    assert client.push("t", b"first", id=id) == id
    assert client.push("t", b"second", id=str(id)) == id
    assert [m.payload for m in client.pop_many("t", 10)] == [b"first"]


def test_push_with_a_live_dedup_key_returns_the_existing_id(client: pushpop.Client) -> None:
    first = client.push("t", b"a", dedup_key="k")
    assert client.push("t", b"b", dedup_key="k") == first
    message = popped(client)
    assert client.push("t", b"c", dedup_key="k") == first  # pending still holds the key
    message.complete()
    second = client.push("t", b"d", dedup_key="k")
    assert second != first
    assert popped(client).payload == b"d"


def test_complete_marks_the_message_completed(client: pushpop.Client) -> None:
    id = client.push("t", b"x")
    message = popped(client)
    message.complete()
    assert message.state == "completed"
    stored = found(client, id)
    assert (stored.state, stored.lease) == ("completed", None)
    with pytest.raises(pushpop.LeaseLost):
        message.complete()


def test_complete_many_completes_a_batch_in_one_call(client: pushpop.Client) -> None:
    ids = client.push_many("t", [b"a", b"b", b"c"])
    batch = client.pop_many("t", 3)
    client.complete_many(batch)
    assert [m.state for m in batch] == ["completed"] * 3
    assert [found(client, id).state for id in ids] == ["completed"] * 3
    client.complete_many([])  # nothing to do, and no error


def test_complete_many_completes_the_leased_and_names_the_lost(client: pushpop.Client) -> None:
    client.push_many("t", [b"a", b"b"])
    kept, lost = client.pop_many("t", 2)
    lost.complete()
    with pytest.raises(pushpop.LeaseLost, match=f"1 of 2 .*{lost.id}"):
        client.complete_many([kept, lost])
    assert found(client, kept.id).state == "completed"


def test_complete_many_tells_two_deliveries_of_one_message_apart_by_their_leases(
    client: pushpop.Client,
) -> None:
    client.push("t", b"x")
    stale = popped(client, lease=0.01)
    expire(client)
    fresh = popped(client)
    assert (fresh.id, fresh.attempts) == (stale.id, 2)
    with pytest.raises(pushpop.LeaseLost, match=f"1 of 2 .*lease {stale.lease}") as raised:
        client.complete_many([stale, fresh])
    assert str(fresh.lease) not in str(raised.value)
    assert (stale.state, fresh.state) == ("pending", "completed")
    assert found(client, fresh.id).state == "completed"


def test_complete_many_refuses_what_is_not_a_list_of_popped_messages(
    client: pushpop.Client,
) -> None:
    client.push("t", b"x")
    msg = popped(client)
    with pytest.raises(pushpop.InvalidType):
        client.complete_many(msg)  # type: ignore[arg-type]
    with pytest.raises(pushpop.InvalidType):
        client.complete_many([msg, "not a message"])  # type: ignore[list-item]
    unpopped = client.new_message("t", b"y")
    with pytest.raises(pushpop.InvalidArgument, match="holds no lease"):
        client.complete_many([msg, unpopped])
    assert found(client, msg.id).state == "pending"


def test_discard_keeps_the_reason_and_stops_delivery(client: pushpop.Client) -> None:
    id = client.push("t", b"x")
    popped(client).discard("malformed")
    stored = found(client, id)
    assert (stored.state, stored.error) == ("discarded", "malformed")
    assert client.pop("t") is None


def test_defer_returns_the_message_after_delay_with_the_reason(client: pushpop.Client) -> None:
    id = client.push("t", b"x")
    message = popped(client)
    message.defer(3600, reason="try later")
    assert message.state == "ready"
    stored = found(client, id)
    assert (stored.state, stored.error, stored.lease) == ("ready", "try later", None)
    assert client.pop("t") is None
    with pytest.raises(pushpop.LeaseLost):
        message.complete()


def test_defer_without_delay_makes_the_message_ready_again(client: pushpop.Client) -> None:
    id = client.push("t", b"x")
    first = popped(client)
    first.defer()
    again = popped(client)
    assert (again.id, again.attempts) == (id, 2)
    assert again.lease != first.lease


def test_extend_moves_the_lease_deadline(client: pushpop.Client) -> None:
    client.push("t", b"x")
    message = popped(client, lease=60)
    before = found(client, message.id).lease_until
    assert before is not None
    message.extend(lease=timedelta(hours=2))
    after = found(client, message.id).lease_until
    assert after is not None
    assert after - before > timedelta(hours=1, minutes=58)
    assert client.requeue_expired() == 0
    message.complete()


def test_acknowledging_with_a_stale_lease_raises_lease_lost(client: pushpop.Client) -> None:
    client.push("t", b"x")
    old = popped(client, lease=0.01)
    expire(client)
    new = popped(client)
    assert new.id == old.id
    for acknowledge in (old.complete, old.defer, old.extend, old.discard):
        with pytest.raises(pushpop.LeaseLost):
            acknowledge()
    stored = found(client, new.id)
    assert (stored.state, stored.attempts) == ("pending", 2)
    assert stored.lease is None  # find never shows a lease token: only its holder knows it
    new.complete()


def test_find_returns_pending_and_completed_messages_and_none_for_unknown(
    client: pushpop.Client,
) -> None:
    id = client.push("t", b"x")
    message = popped(client)
    assert found(client, id).state == "pending"
    message.complete()
    assert found(client, id).state == "completed"
    assert client.find(str(id)) is not None
    assert client.find(uuid4()) is None


def test_requeue_expired_requeues_with_an_error(client: pushpop.Client) -> None:
    id = client.push("t", b"x")
    popped(client, lease=0.01)
    client.push("t", b"y")
    popped(client, lease=3600)
    expire(client)
    stored = found(client, id)
    assert (stored.state, stored.error) == ("ready", "lease expired on attempt 1 of 25")
    assert popped(client).id == id


def test_requeue_expired_discards_after_max_attempts(client: pushpop.Client) -> None:
    id = client.push("t", b"x", max_attempts=1)
    popped(client, lease=0.01)
    expire(client)
    stored = found(client, id)
    assert stored.state == "discarded"
    assert stored.error is not None
    assert "discarded" in stored.error
    assert client.pop("t") is None


def test_cleanup_deletes_finished_messages_older_than_grace(client: pushpop.Client) -> None:
    for _ in range(3):
        client.push("t", b"x")
    popped(client).complete()
    popped(client).discard()
    pending = popped(client)
    client.push("t", b"ready")
    assert client.cleanup(grace=3600) == 0
    assert client.cleanup(grace=timedelta(0)) == 2
    assert [(s.ready, s.pending, s.completed, s.discarded) for s in client.stats()] == [
        (1, 1, 0, 0)
    ]
    pending.complete()


def test_cleanup_deletes_more_than_one_batch(client: pushpop.Client, conn: Conn) -> None:
    conn.execute(
        "INSERT INTO pushpop.messages (id, topic, state, state_time, payload)"
        " SELECT gen_random_uuid(), 't', 'completed', now() - interval '2 days', ''"
        " FROM generate_series(1, 10050)"
    )
    client.push("t", b"live")
    assert client.cleanup() == 10050
    assert [(s.ready, s.completed) for s in client.stats()] == [(1, 0)]


def test_stats_counts_messages_per_topic(client: pushpop.Client) -> None:
    assert client.stats() == []
    client.push("b", b"x")
    first = client.push("a", b"x")
    client.push("a", b"x", delay=3600)
    client.push("a", b"x", priority=1)
    popped(client, "a")
    popped(client, "b").complete()
    stats = client.stats()
    assert [s.topic for s in stats] == ["a", "b"]
    a, b = stats
    assert (a.ready, a.scheduled, a.pending, a.completed, a.discarded) == (1, 1, 1, 0, 0)
    assert a.oldest_ready == found(client, first).state_time
    assert (b.ready, b.pending, b.completed, b.oldest_ready) == (0, 0, 1, None)
    assert isinstance(a, pushpop.TopicStats)


def test_purge_deletes_all_but_pending_messages(client: pushpop.Client) -> None:
    client.push_many("t", [b"a", b"b", b"c"])
    pending = popped(client)
    client.push("t", b"later", delay=3600)
    client.push("other", b"kept")
    assert client.purge("t") == 3
    assert [(s.topic, s.ready, s.scheduled, s.pending) for s in client.stats()] == [
        ("other", 1, 0, 0),
        ("t", 0, 0, 1),
    ]
    pending.complete()


def test_migrate_on_an_up_to_date_database_applies_nothing(client: pushpop.Client) -> None:
    assert client.migrate() == []


def test_json_message_round_trips(client: pushpop.Client) -> None:
    document = {"order": 42, "items": ["é", None, 1.5], "ok": True}
    message = client.new_message("t", json=document)
    assert message.json() == document
    message.push()
    client.push("t", json=[1, 2])
    first, second = client.pop_many("t", 2)
    assert first.json() == document
    assert first.payload == '{"order":42,"items":["é",null,1.5],"ok":true}'.encode()
    assert second.json() == [1, 2]


def test_json_payload_is_json_to_sql_readers(client: pushpop.Client, conn: Conn) -> None:
    id = client.push("t", json={"name": "Zoë", "n": [1, 2]})
    row = conn.execute(
        "SELECT convert_from(payload, 'UTF8')::jsonb FROM pushpop.find(%s)", [id]
    ).fetchone()
    assert row == ({"name": "Zoë", "n": [1, 2]},)


# Transactional push takes a connection of the client's own kind: these tests are sync only.


def test_pushes_that_need_not_be_durable_are_stored_and_popped_like_any_other(
    client: pushpop.Client,
) -> None:
    first = client.push("t", b"a", durable=False)
    rest = client.push_many("t", [b"b", b"c"], durable=False)
    last = client.new_message("t", b"d").push(durable=False)
    assert [popped(client).id for _ in range(4)] == [first, *rest, last]


def test_a_push_that_need_not_be_durable_commits_without_waiting_for_the_disk(
    conn: Conn, sync_client: pushpop.Client
) -> None:
    # The statement a durable=False push sends, inside a transaction we can look into.
    call = calls.push(sync_client.new_message("t", b"x"), 0, calls.commit_suffix(False, False))
    with conn.transaction():
        conn.execute(call.sql, call.params)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # that transaction only


def test_durable_false_inside_the_callers_transaction_is_refused_before_anything_is_written(
    sync_client: pushpop.Client, dsn: str
) -> None:
    with psycopg.connect(dsn) as own:
        with pytest.raises(pushpop.InvalidArgument, match=r"durable=False.*SET LOCAL"):
            sync_client.push("t", b"x", conn=own, durable=False)
        with pytest.raises(pushpop.InvalidArgument, match="durable=False"):
            sync_client.push_many("t", [b"x"], conn=own, durable=False)
        assert own.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pytest.raises(pushpop.InvalidType, match="durable must be True or False, got str"):
        sync_client.push("t", b"x", durable="no")  # type: ignore[arg-type]
    assert sync_client.pop("t") is None
    assert sync_client.push("t", b"still fine")


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    """The synchronous client, for the calls that take a psycopg.Connection."""
    with pushpop.Client(dsn) as c:
        yield c


def test_push_in_a_rolled_back_transaction_stores_nothing(
    sync_client: pushpop.Client, dsn: str
) -> None:
    with psycopg.connect(dsn) as own:
        id = sync_client.push("t", b"x", conn=own)
        ids = sync_client.push_many("t", [b"y"], conn=own)
        sync_client.new_message("t", b"z", id=uuid4()).push(conn=own)
        own.rollback()
    assert sync_client.find(id) is None
    assert sync_client.find(ids[0]) is None
    assert sync_client.pop("t") is None


def test_push_in_a_committed_transaction_is_stored_and_poppable(
    sync_client: pushpop.Client, dsn: str
) -> None:
    with psycopg.connect(dsn) as own:
        id = sync_client.push("t", b"x", conn=own)
        assert sync_client.find(id) is None  # not visible before commit
        own.commit()
    assert popped(sync_client).id == id
