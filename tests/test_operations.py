"""An operator's controls: pause, browse, retry and cancel, in SQL and through both clients.

Each control is a SQL function first; the clients are one call each. Bad input raises 22023
naming the argument and changes nothing; unknown ids are not bad input: they return false.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors as pg_errors
from waiting import wait_for

import pushpop
from pushpop.errors import InvalidArgument

Conn = psycopg.Connection[tuple[Any, ...]]


def one(conn: Conn, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def push(conn: Conn, topic: str, payload: bytes = b"x", **args: Any) -> UUID:
    named = "".join(f", {k} => %({k})s" for k in args)
    id: UUID = one(
        conn, f"SELECT pushpop.push(%(t)s, %(p)s{named})", {"t": topic, "p": payload, **args}
    )
    return id


def state(conn: Conn, id: UUID) -> tuple[str, int, str | None]:
    row = conn.execute(
        "SELECT state, attempts, error FROM pushpop.messages WHERE id = %s", [id]
    ).fetchone()
    assert row is not None
    return row


def dead(conn: Conn, topic: str, n: int) -> list[UUID]:
    """n messages of ``topic`` that failed for good (one attempt each, discarded)."""
    ids = [push(conn, topic, str(i).encode(), max_attempts=1) for i in range(n)]
    for _ in ids:
        row = conn.execute("SELECT id, lease FROM pushpop.pop(%s)", [topic]).fetchone()
        assert row is not None
        conn.execute("SELECT pushpop.discard(%s, %s, 'boom')", list(row))
    return ids


def everything(conn: Conn) -> list[Any]:
    return conn.execute("SELECT * FROM pushpop.messages ORDER BY seq").fetchall()


# --- SQL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("SELECT * FROM pushpop.browse(NULL)", "topic"),
        ("SELECT * FROM pushpop.browse('')", "topic"),
        ("SELECT * FROM pushpop.browse('t', 'lost')", "state"),
        ("SELECT * FROM pushpop.browse('t', max_rows => 0)", "max_rows"),
        ("SELECT * FROM pushpop.browse('t', max_rows => NULL)", "max_rows"),
        ("SELECT * FROM pushpop.browse('t', after => gen_random_uuid())", "after"),
        ("SELECT pushpop.retry(NULL)", "id"),
        ("SELECT pushpop.retry_discarded(NULL)", "topic"),
        ("SELECT pushpop.retry_discarded('t', 0)", "max_rows"),
        ("SELECT pushpop.cancel(NULL)", "id"),
        ("SELECT pushpop.pause('')", "topic"),
        ("SELECT pushpop.resume(NULL)", "topic"),
    ],
)
def test_bad_input_raises_22023_naming_the_argument_and_changes_nothing(
    conn: Conn, call: Any, argument: str
) -> None:
    dead(conn, "t", 1)
    push(conn, "t")
    before = everything(conn)
    with pytest.raises(pg_errors.InvalidParameterValue, match=argument):
        conn.execute(call)
    assert everything(conn) == before


def test_unknown_ids_are_not_bad_input_they_return_false(conn: Conn) -> None:
    assert one(conn, "SELECT pushpop.retry(gen_random_uuid())") is False
    assert one(conn, "SELECT pushpop.cancel(gen_random_uuid())") is False
    assert one(conn, "SELECT pushpop.resume('never-paused')") is False


def test_cancel_discards_ready_and_scheduled_messages_which_are_then_never_delivered(
    conn: Conn,
) -> None:
    ready, later = push(conn, "t"), push(conn, "t", delay="1 hour")
    assert one(conn, "SELECT pushpop.cancel(%s)", [ready]) is True
    assert one(conn, "SELECT pushpop.cancel(%s)", [later]) is True
    assert state(conn, ready) == ("discarded", 0, "cancelled")
    assert state(conn, later) == ("discarded", 0, "cancelled")
    assert one(conn, "SELECT pushpop.cancel(%s)", [ready]) is False  # once
    assert conn.execute("SELECT * FROM pushpop.pop('t')").fetchall() == []


def test_cancel_leaves_a_pending_message_to_its_consumer(conn: Conn) -> None:
    id = push(conn, "t")
    lease = one(conn, "SELECT lease FROM pushpop.pop('t')")
    assert one(conn, "SELECT pushpop.cancel(%s)", [id]) is False
    assert state(conn, id)[0] == "pending"
    assert one(conn, "SELECT pushpop.complete(%s, %s)", [id, lease]) is True


def test_retry_returns_a_dead_message_with_fresh_attempts_keeping_its_last_error(
    conn: Conn,
) -> None:
    (id,) = dead(conn, "t", 1)
    assert state(conn, id) == ("discarded", 1, "boom")
    assert one(conn, "SELECT pushpop.retry(%s)", [id]) is True
    assert state(conn, id) == ("ready", 0, "boom")
    assert one(conn, "SELECT pushpop.retry(%s)", [id]) is False  # no longer discarded
    assert one(conn, "SELECT id FROM pushpop.pop('t')") == id


def test_a_retried_message_has_no_expiry(conn: Conn) -> None:
    id = push(conn, "t", expires_in="1 hour")
    assert one(conn, "SELECT pushpop.cancel(%s)", [id]) is True
    assert one(conn, "SELECT pushpop.retry(%s)", [id]) is True
    assert one(conn, "SELECT expires_at FROM pushpop.find(%s)", [id]) is None


def test_retry_discarded_takes_the_oldest_first_and_only_its_topic(conn: Conn) -> None:
    ids = dead(conn, "t", 5)
    other = dead(conn, "other", 1)
    assert one(conn, "SELECT pushpop.retry_discarded('t', 2)") == 2
    assert [state(conn, i)[0] for i in ids] == ["ready"] * 2 + ["discarded"] * 3
    assert one(conn, "SELECT pushpop.retry_discarded('t')") == 3
    assert state(conn, other[0])[0] == "discarded"


def test_retry_skips_a_message_whose_dedup_key_is_live_again(conn: Conn) -> None:
    first = push(conn, "t", dedup_key="k")
    assert one(conn, "SELECT pushpop.cancel(%s)", [first]) is True
    live = push(conn, "t", dedup_key="k")
    assert one(conn, "SELECT pushpop.retry_discarded('t')") == 0
    with pytest.raises(pg_errors.UniqueViolation, match="dedup_key"):
        conn.execute("SELECT pushpop.retry(%s)", [first])
    assert state(conn, first)[0] == "discarded"
    assert state(conn, live)[0] == "ready"


@pytest.mark.slow
def test_redrive_of_10000_dead_messages_delivers_each_once(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO pushpop.messages (id, topic, state, state_time, attempts, max_attempts,"
        " error, payload) SELECT gen_random_uuid(), 'dead', 'discarded', now() - g * interval"
        " '1 ms', 3, 3, 'boom', int4send(g) FROM generate_series(1, 10000) AS g"
    )
    started = time.monotonic()
    assert one(conn, "SELECT pushpop.retry_discarded('dead')") == 10_000
    took = time.monotonic() - started
    popped = conn.execute(
        "SELECT id, attempts FROM pushpop.pop('dead', max_messages => 20000)"
    ).fetchall()
    assert len({id for id, _ in popped}) == 10_000
    assert {attempts for _, attempts in popped} == {1}
    assert one(conn, "SELECT count(*) FROM pushpop.messages WHERE state = 'discarded'") == 0
    assert took < 10, f"redrive of 10,000 took {took:.1f} s"


def test_browse_shows_ready_messages_in_pop_order_without_taking_them(conn: Conn) -> None:
    (gone,) = dead(conn, "t", 1)
    low = push(conn, "t", b"low")
    high = push(conn, "t", b"high", priority=5)
    later = push(conn, "t", b"later", delay="1 hour")
    before = everything(conn)
    rows = conn.execute("SELECT id, state, lease FROM pushpop.browse('t')").fetchall()
    assert rows == [
        (high, "ready", None), (low, "ready", None), (later, "scheduled", None),
        (gone, "discarded", None),
    ]  # fmt: skip
    assert everything(conn) == before  # nothing changed
    ready = conn.execute("SELECT id FROM pushpop.browse('t', 'ready')").fetchall()
    assert [r[0] for r in ready] == [
        r[0] for r in conn.execute("SELECT id FROM pushpop.pop('t', max_messages => 10)")
    ]


def test_browse_never_shows_a_lease_token(conn: Conn) -> None:
    push(conn, "t")
    one(conn, "SELECT lease FROM pushpop.pop('t')")
    lease, until = conn.execute("SELECT lease, lease_until FROM pushpop.browse('t')").fetchall()[0]
    assert lease is None
    assert until is not None  # the deadline is no secret


def pages(conn: Conn, topic: str, state: str | None, size: int) -> Iterator[list[UUID]]:
    after = None
    while True:
        page = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM pushpop.browse(%s, %s, %s, %s)", [topic, state, after, size]
            )
        ]
        if not page:
            return
        yield page
        after = page[-1]


@pytest.mark.parametrize("state", [None, "ready", "discarded"])
def test_browse_pages_see_every_message_once(conn: Conn, state: str | None) -> None:
    dead(conn, "t", 5)
    for priority in (0, 3, 0, 7, 3, 0, 0, 7):
        push(conn, "t", priority=priority)
    push(conn, "t", delay="1 hour")
    expected = [r[0] for r in conn.execute("SELECT id FROM pushpop.browse('t', %s, NULL, 1000)",
                                           [state])]  # fmt: skip
    for size in (1, 2, 3, 100):
        assert [i for page in pages(conn, "t", state, size) for i in page] == expected


def test_browse_pagination_across_concurrent_pushes_skips_and_repeats_nothing(
    dsn: str, conn: Conn
) -> None:
    present = {push(conn, "t", priority=i % 3) for i in range(300)}
    stop = threading.Event()

    def producer() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                c.execute("SELECT pushpop.push('t', 'new', priority => %s)", [i % 3])
                i += 1

    thread = threading.Thread(target=producer, name="test-producer")
    thread.start()
    try:
        seen = [i for page in pages(conn, "t", "ready", 7) for i in page]
    finally:
        stop.set()
        thread.join(10)
    assert len(seen) == len(set(seen))  # nothing twice
    assert present <= set(seen)  # nothing that was there throughout is skipped


def test_browse_needs_the_pop_grant_once_topic_grants_are_in_use(dsn: str, conn: Conn) -> None:
    push(conn, "billing.a")
    conn.execute("SELECT pushpop.grant_topics('pushpop_consumer', '{other}', '{pop}')")
    from roles import made

    with made(dsn, {"c": ["pushpop_consumer"]}) as logins, logins.connect(dsn, "c") as c:
        with pytest.raises(pg_errors.InsufficientPrivilege):
            c.execute("SELECT * FROM pushpop.browse('billing.a')")
        assert c.execute("SELECT * FROM pushpop.browse('other')").fetchall() == []


# --- Expiry against pop --------------------------------------------------------------------


@pytest.mark.slow
def test_an_expired_message_is_never_delivered_even_racing_pops(dsn: str, conn: Conn) -> None:
    """Messages that expire while consumers pop as fast as they can: each pop happens before
    its message's deadline, and the rest are discarded as expired."""
    n = 300
    conn.execute(
        "SELECT pushpop.push('race', int4send(g), expires_in => g * interval '2 ms')"
        " FROM generate_series(1, %s) AS g",
        [n],
    )
    got: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def consume() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while True:
                rows = c.execute(
                    "SELECT id, expires_at, state_time FROM pushpop.pop('race')"
                ).fetchall()
                if not rows:
                    if one(c, "SELECT count(*) FROM pushpop.browse('race', 'ready')") == 0:
                        return
                    # Expired ones stay ready until maintenance; pop skips them.
                    if one(c, "SELECT bool_and(expires_at <= now()) FROM pushpop.browse('race',"
                              " 'ready', max_rows => 1000)"):  # fmt: skip
                        return
                    continue
                with lock:
                    got.extend(rows)
                time.sleep(0.001)

    threads = [threading.Thread(target=consume, name=f"test-consumer-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got, "nothing was popped in time: the test proves nothing"
    assert all(popped_at < expires_at for _, expires_at, popped_at in got)
    assert one(conn, "SELECT pushpop.requeue_expired()") >= 0
    expired = one(conn, "SELECT count(*) FROM pushpop.messages WHERE error = 'expired'")
    assert len(got) + expired == n


# --- Through both clients ------------------------------------------------------------------


def test_the_controls_through_the_client(client: Any, conn: Conn) -> None:
    ids = [client.push("t", b"a"), client.push("t", b"b", priority=1)]
    page = client.browse("t", limit=1)
    assert [m.id for m in page] == [ids[1]]
    assert [m.id for m in client.browse("t", after=page[0].id)] == [ids[0]]
    assert client.browse("t", state="pending") == []
    assert client.cancel(ids[0]) is True
    assert client.cancel(uuid4()) is False
    assert client.browse("t", state="discarded")[0].error == "cancelled"
    assert client.retry(ids[0]) is True
    assert client.retry(ids[0]) is False
    assert client.cancel(ids[0]) is True
    assert client.retry_discarded("t") == 1
    assert client.retry_discarded("t", max_rows=5) == 0
    assert client.pause("t") is True
    assert client.pause("t") is False
    assert client.pop("t") is None
    assert [s.paused for s in client.stats() if s.topic == "t"] == [True]
    assert client.resume("t") is True
    assert client.resume("t") is False
    assert client.pop("t") is not None
    with pytest.raises(InvalidArgument, match="state"):
        client.browse("t", state="lost")
    with pytest.raises(InvalidArgument, match="limit"):
        client.browse("t", limit=0)


# --- A paused topic under a running worker -------------------------------------------------


@contextlib.contextmanager
def running(worker: pushpop.Worker[Any]) -> Iterator[None]:
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(30)


def test_a_paused_topic_gives_a_running_worker_nothing_then_everything_after_resume(
    dsn: str, conn: Conn
) -> None:
    done: list[bytes] = []
    with pushpop.Client(dsn) as client:
        worker = pushpop.Worker(client, ["t", "other"], lambda m: done.append(m.payload),
                                poll_interval=0.05)  # fmt: skip
        with running(worker):
            client.push("t", b"before")
            wait_for(lambda: done == [b"before"], what="the first message")
            assert client.pause("t") is True
            for i in range(20):
                client.push("t", f"{i}".encode())
            client.push("other", b"other topic")
            wait_for(lambda: b"other topic" in done, what="the unpaused topic")
            # A few polls and wake-ups later, still nothing of the paused topic.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                assert len(done) == 2
                time.sleep(0.05)
            assert [s.ready for s in client.stats() if s.topic == "t"] == [20]
            assert client.resume("t") is True
            wait_for(lambda: len(done) == 22, what="everything after resume")
    assert sorted(done[2:]) == sorted(f"{i}".encode() for i in range(20))
    assert one(conn, "SELECT count(*) FROM pushpop.messages WHERE state <> 'completed'") == 0
