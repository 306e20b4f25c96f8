"""Messages that expire, topics that pause, and headers: in SQL, and through both clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import pushpop

Conn = psycopg.Connection[tuple[Any, ...]]


def one(conn: Conn, query: Any, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def backdate_expiry(conn: Conn, id: Any) -> None:
    """Moves a message's deadline into the past, as if its expires_in had run out."""
    conn.execute(
        "UPDATE pushpop.messages SET expires_at = now() - interval '1 second' WHERE id = %s", [id]
    )


# --- Expiry ---------------------------------------------------------------------------------


def test_a_message_past_its_expiry_is_never_popped_and_maintenance_discards_it(
    conn: Conn,
) -> None:
    late = one(conn, "SELECT pushpop.push('t', 'late', expires_in => '1 hour')")
    fresh = one(conn, "SELECT pushpop.push('t', 'fresh', expires_in => '1 hour')")
    backdate_expiry(conn, late)
    assert one(conn, "SELECT id FROM pushpop.pop('t')") == fresh  # before maintenance ran
    assert conn.execute("SELECT * FROM pushpop.pop('t')").fetchall() == []
    assert one(conn, "SELECT pushpop.requeue_expired()") == 1
    assert conn.execute("SELECT state, error FROM pushpop.find(%s)", [late]).fetchone() == (
        "discarded", "expired",
    )  # fmt: skip


def test_expiry_counts_from_the_push_delay_included(conn: Conn) -> None:
    id = one(conn, "SELECT pushpop.push('t', 'x', '1 hour', expires_in => '30 minutes')")
    due, deadline = conn.execute(
        "SELECT state_time, expires_at FROM pushpop.find(%s)", [id]
    ).fetchone() or (None, None)
    assert due is not None
    assert deadline is not None
    assert due - deadline == timedelta(minutes=30)  # it expires before it is ever due


def test_a_lapsed_lease_past_its_expiry_is_discarded_not_requeued(conn: Conn) -> None:
    id = one(conn, "SELECT pushpop.push('t', 'x', expires_in => '1 hour')")
    conn.execute("SELECT pushpop.pop('t', '1 microsecond')")
    backdate_expiry(conn, id)
    assert one(conn, "SELECT pushpop.requeue_expired()") == 1
    assert conn.execute("SELECT state, error FROM pushpop.find(%s)", [id]).fetchone() == (
        "discarded", "expired",
    )  # fmt: skip


def test_deferring_does_not_extend_an_expiry(conn: Conn) -> None:
    id = one(conn, "SELECT pushpop.push('t', 'x', expires_in => '1 hour')")
    before = one(conn, "SELECT expires_at FROM pushpop.find(%s)", [id])
    lease = one(conn, "SELECT lease FROM pushpop.pop('t')")
    assert one(conn, "SELECT pushpop.defer(%s, %s, '1 minute')", [id, lease]) is True
    assert one(conn, "SELECT expires_at FROM pushpop.find(%s)", [id]) == before


@pytest.mark.parametrize("expires_in", ["0", "-1 second"])
def test_an_expiry_that_is_not_positive_is_refused(conn: Conn, expires_in: str) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match="expires_in must be positive"):
        conn.execute("SELECT pushpop.push('t', 'x', expires_in => %s::interval)", [expires_in])
    with pytest.raises(pg_errors.InvalidParameterValue, match="expires_in must be positive"):
        conn.execute(
            "SELECT pushpop.push_many('t', '{x}', expires_in => %s::interval)", [expires_in]
        )
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 0


# --- Pause ------------------------------------------------------------------------------------


def test_a_paused_topic_takes_pushes_but_gives_nothing_to_pop_until_resumed(conn: Conn) -> None:
    first = one(conn, "SELECT pushpop.push('t', 'a')")
    held = one(conn, "SELECT lease FROM pushpop.pop('t')")
    assert one(conn, "SELECT pushpop.pause('t')") is True
    assert one(conn, "SELECT pushpop.pause('t')") is False  # changed nothing
    second = one(conn, "SELECT pushpop.push('t', 'b')")
    other = one(conn, "SELECT pushpop.push('other', 'c')")
    assert conn.execute("SELECT * FROM pushpop.pop('t', max_messages => 10)").fetchall() == []
    assert one(conn, "SELECT id FROM pushpop.pop('other')") == other  # only that topic
    assert one(conn, "SELECT pushpop.complete(%s, %s)", [first, held]) is True  # work goes on
    assert one(conn, "SELECT pushpop.resume('t')") is True
    assert one(conn, "SELECT pushpop.resume('t')") is False
    assert one(conn, "SELECT id FROM pushpop.pop('t')") == second


def test_stats_shows_which_topics_are_paused_even_without_messages(conn: Conn) -> None:
    conn.execute("SELECT pushpop.push('busy', 'x')")
    conn.execute("SELECT pushpop.pause('busy'), pushpop.pause('empty')")
    rows = conn.execute("SELECT topic, ready, paused FROM pushpop.stats()").fetchall()
    assert rows == [("busy", 1, True), ("empty", 0, True)]
    conn.execute("SELECT pushpop.resume('empty')")
    rows = conn.execute("SELECT topic, paused FROM pushpop.stats()").fetchall()
    assert rows == [("busy", True)]


def test_resuming_wakes_the_consumers_waiting_for_the_topic(conn: Conn) -> None:
    conn.execute("SELECT pushpop.pause('t')")
    conn.execute("SELECT pushpop.wait_for_push(gen_random_uuid(), '{t}')")
    conn.execute("LISTEN pushpop")
    conn.execute("SELECT pushpop.resume('t')")
    assert [n.payload for n in conn.notifies(timeout=5, stop_after=1)] == ["t"]


def test_pop_looks_up_pauses_only_while_a_topic_is_paused(conn: Conn) -> None:
    assert one(conn, "SELECT pushpop.topics_paused()") is False
    conn.execute("SELECT pushpop.pause('a'), pushpop.pause('b')")
    assert one(conn, "SELECT pushpop.topics_paused()") is True
    conn.execute("SELECT pushpop.resume('a')")
    assert one(conn, "SELECT pushpop.topics_paused()") is True
    conn.execute("SELECT pushpop.resume('b')")
    assert one(conn, "SELECT pushpop.topics_paused()") is False


# --- Headers ----------------------------------------------------------------------------------


def test_headers_travel_with_the_message_to_pop_and_find(conn: Conn) -> None:
    headers = {"traceparent": "00-abc-def-01", "content-type": "application/json"}
    id = one(conn, "SELECT pushpop.push('t', 'x', headers => %s)", [Jsonb(headers)])
    assert one(conn, "SELECT headers FROM pushpop.pop('t')") == headers
    assert one(conn, "SELECT headers FROM pushpop.find(%s)", [id]) == headers
    many = "SELECT pushpop.push_many('t', '{a,b}', headers => %s)"
    ids = [row[0] for row in conn.execute(many, [Jsonb({"k": "v"})])]
    assert [one(conn, "SELECT headers FROM pushpop.find(%s)", [i]) for i in ids] == [{"k": "v"}] * 2


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ("[]", "headers must be a JSON object of strings, got a array"),
        ('"x"', "headers must be a JSON object of strings, got a string"),
        ('{"n": 1}', "headers must be a JSON object of strings: 'n' is not a string"),
        ('{"a": "b", "x": null}', "headers must be a JSON object of strings: 'x' is not a string"),
    ],
)
def test_headers_that_are_not_an_object_of_strings_are_refused(
    conn: Conn, headers: str, problem: str
) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match=problem):
        conn.execute("SELECT pushpop.push('t', 'x', headers => %s::jsonb)", [headers])
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 0


def test_headers_above_the_databases_limit_are_refused(conn: Conn) -> None:
    assert one(conn, "SELECT pushpop.max_header_bytes()") == 8192
    assert one(conn, "SELECT pushpop.set_max_header_bytes(20)") == 20
    conn.execute("SELECT pushpop.push('t', 'x', headers => '{\"k\": \"1234567\"}')")  # 16 bytes
    with pytest.raises(pg_errors.ProgramLimitExceeded, match="more than the limit of 20 bytes"):
        conn.execute("SELECT pushpop.push('t', 'x', headers => '{\"k\": \"123456789012\"}')")


# --- Through the clients ----------------------------------------------------------------------


def test_a_client_pushes_headers_and_an_expiry_and_reads_them_back(client: Any) -> None:
    id = client.push("t", b"x", headers={"who": "ada"}, expires_in=3600)
    msg = client.pop("t")
    assert (msg.id, msg.headers) == (id, {"who": "ada"})
    assert msg.expires_at is not None
    assert client.pop("t") is None
    ids = client.push_many("t", [b"a"], headers={"k": "v"}, expires_in=timedelta(hours=1))
    found = client.find(ids[0])
    assert (found.headers, found.expires_at is not None) == ({"k": "v"}, True)
    built = client.new_message("t", b"y", headers={"a": "b"})
    assert built.headers == {"a": "b"}
    assert client.find(built.push()).headers == {"a": "b"}
    assert client.find(client.push("t", b"z")).headers == {}


@pytest.mark.parametrize(
    ("options", "error", "problem"),
    [
        ({"headers": {"n": 1}}, pushpop.InvalidType, "headers must be a dict of str to str"),
        ({"headers": ["a"]}, pushpop.InvalidType, "headers must be a dict of str to str"),
        ({"expires_in": 0}, pushpop.InvalidArgument, "expires_in must be positive"),
    ],
)
def test_a_client_refuses_bad_headers_and_expiries_before_sending(
    client: Any, options: dict[str, Any], error: type[Exception], problem: str
) -> None:
    with pytest.raises(error, match=problem):
        client.push("t", b"x", **options)
    assert client.stats() == []


def test_a_client_sees_whether_a_topic_is_paused(client: Any, conn: Conn) -> None:
    client.push("t", b"x")
    conn.execute("SELECT pushpop.pause('t')")
    assert [(s.topic, s.paused) for s in client.stats()] == [("t", True)]
    assert client.pop("t") is None
