"""Fan-out: subscriptions copy a push into every subscriber topic, in SQL and through both
clients and the command line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors as pg_errors
from roles import Logins, made

import pushpop
from pushpop import cli

Conn = psycopg.Connection[tuple[Any, ...]]


def one(conn: Conn, query: Any, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def topics(conn: Conn) -> list[tuple[str, bytes]]:
    """(topic, payload) of every message, sorted."""
    rows = conn.execute("SELECT topic, payload FROM pushpop.messages ORDER BY topic, seq")
    return [(t, bytes(p)) for t, p in rows.fetchall()]


def subscribe(conn: Conn, *pairs: tuple[str, str]) -> None:
    for topic, subscriber in pairs:
        assert one(conn, "SELECT pushpop.subscribe(%s, %s)", [topic, subscriber]) is True


# --- Pushes, copies and ids ------------------------------------------------------------------


def test_a_topic_without_subscribers_stays_a_plain_queue(conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"))
    id = one(conn, "SELECT pushpop.push('emails', 'x')")
    assert topics(conn) == [("emails", b"x")]
    assert one(conn, "SELECT id FROM pushpop.pop('emails')") == id
    assert one(conn, "SELECT fanout_of FROM pushpop.messages") is None


def test_a_push_puts_one_copy_into_each_subscriber_and_none_into_its_topic(conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"), ("orders", "audit"))
    id = one(conn, "SELECT pushpop.push('orders', 'o1')")
    assert topics(conn) == [("audit", b"o1"), ("billing", b"o1")]
    copies = conn.execute("SELECT id, topic, state FROM pushpop.find(%s)", [id]).fetchall()
    assert [(t, s) for _, t, s in copies] == [("audit", "ready"), ("billing", "ready")]
    assert id not in {c[0] for c in copies}  # each copy has an id of its own
    assert one(conn, "SELECT count(*) FROM pushpop.pop('orders')") == 0
    popped = one(conn, "SELECT id FROM pushpop.pop('billing')")
    assert popped in {c[0] for c in copies}
    assert one(conn, "SELECT count(*) FROM pushpop.find(%s)", [popped]) == 1


def test_a_topic_subscribed_to_itself_has_direct_consumers_and_subscribers(conn: Conn) -> None:
    subscribe(conn, ("orders", "orders"), ("orders", "billing"))
    one(conn, "SELECT pushpop.push('orders', 'o1')")
    assert topics(conn) == [("billing", b"o1"), ("orders", b"o1")]
    # A copy never fans out again, so the self-subscription makes no loop.
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 2


def test_copies_never_fan_out_again(conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"), ("billing", "ledger"))
    one(conn, "SELECT pushpop.push('orders', 'o1')")
    assert topics(conn) == [("billing", b"o1")]


def test_subscribing_does_not_deliver_messages_pushed_before(conn: Conn) -> None:
    one(conn, "SELECT pushpop.push('orders', 'before')")
    subscribe(conn, ("orders", "billing"))
    one(conn, "SELECT pushpop.push('orders', 'after')")
    assert topics(conn) == [("billing", b"after"), ("orders", b"before")]


def test_a_retried_push_with_the_same_id_adds_no_copies(conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"), ("orders", "audit"))
    id = uuid4()
    for _ in range(3):
        assert one(conn, "SELECT pushpop.push('orders', 'x', id => %s)", [id]) == id
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 2
    # The copies keep the id however they move on.
    one(conn, "SELECT pushpop.complete(id, lease) FROM pushpop.pop('billing')")
    assert one(conn, "SELECT pushpop.push('orders', 'x', id => %s)", [id]) == id
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 2
    # A subscriber added since gets no copy of the retried push either.
    subscribe(conn, ("orders", "late"))
    assert one(conn, "SELECT pushpop.push('orders', 'x', id => %s)", [id]) == id
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 2


def test_concurrent_retries_of_one_push_make_one_copy_per_subscriber(dsn: str, conn: Conn) -> None:
    subscribe(conn, *[("orders", f"s{i}") for i in range(10)])
    id = uuid4()
    barrier = threading.Barrier(8)

    def retry() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            barrier.wait()
            assert one(own, "SELECT pushpop.push('orders', 'x', id => %s)", [id]) == id

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    copies = conn.execute("SELECT topic FROM pushpop.find(%s)", [id]).fetchall()
    assert [c[0] for c in copies] == [f"s{i}" for i in range(10)]


def test_an_id_pushed_before_the_subscription_is_still_the_same_push(conn: Conn) -> None:
    id = one(conn, "SELECT pushpop.push('orders', 'x')")
    subscribe(conn, ("orders", "billing"))
    assert one(conn, "SELECT pushpop.push('orders', 'x', id => %s)", [id]) == id
    assert topics(conn) == [("orders", b"x")]
    other = one(conn, "SELECT pushpop.push('emails', 'y')")
    with pytest.raises(pg_errors.InvalidParameterValue, match="another topic"):
        conn.execute("SELECT pushpop.push('orders', 'x', id => %s)", [other])


def test_push_many_fans_out_each_payload(conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"), ("orders", "audit"))
    ids = [r[0] for r in conn.execute("SELECT pushpop.push_many('orders', '{a,b,c}'::bytea[])")]
    assert len(ids) == 3
    for id, payload in zip(ids, [b"a", b"b", b"c"], strict=True):
        found = conn.execute("SELECT topic, payload FROM pushpop.find(%s)", [id]).fetchall()
        assert [(t, bytes(p)) for t, p in found] == [("audit", payload), ("billing", payload)]
    popped = conn.execute("SELECT payload FROM pushpop.pop('billing', max_messages => 5)")
    assert [bytes(r[0]) for r in popped] == [b"a", b"b", b"c"]  # push order within a subscriber


def test_a_transactional_push_fans_out_or_rolls_back_whole(dsn: str, conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"), ("orders", "audit"))
    with psycopg.connect(dsn) as tx:
        tx.execute("SELECT pushpop.push('orders', 'x')")
        tx.rollback()
    assert topics(conn) == []
    with psycopg.connect(dsn) as tx:
        tx.execute("SELECT pushpop.push('orders', 'x')")
        assert topics(conn) == []  # nothing visible before the commit
    assert topics(conn) == [("audit", b"x"), ("billing", b"x")]


def test_copies_inherit_the_push_and_live_on_their_own(conn: Conn) -> None:
    subscribe(conn, ("orders", "fast"), ("orders", "slow"))
    id = one(
        conn,
        "SELECT pushpop.push('orders', 'x', delay => '1 hour', priority => 7, max_attempts => 2,"
        " dedup_key => 'k', expires_in => '2 hours', headers => '{\"a\": \"b\"}')",
    )
    rows = conn.execute(
        "SELECT topic, state, priority, max_attempts, dedup_key, headers,"
        " expires_at - state_time FROM pushpop.messages ORDER BY topic"
    ).fetchall()
    assert [r[0] for r in rows] == ["fast", "slow"]
    for row in rows:
        assert row[1:6] == ("scheduled", 7, 2, "k", {"a": "b"})
        assert row[6].total_seconds() == 3600
    # A live dedup_key adds no second copy; in a subscriber topic without it, it does.
    conn.execute("UPDATE pushpop.messages SET state = 'completed' WHERE topic = 'slow'")
    one(conn, "SELECT pushpop.push('orders', 'y', dedup_key => 'k')")
    assert [t for t, _ in topics(conn)] == ["fast", "slow", "slow"]
    assert one(conn, "SELECT count(*) FROM pushpop.find(%s)", [id]) == 2


def test_a_failing_or_paused_subscriber_never_delays_another(conn: Conn) -> None:
    subscribe(conn, ("orders", "good"), ("orders", "bad"))
    one(conn, "SELECT pushpop.push('orders', 'x', max_attempts => 1)")
    one(conn, "SELECT pushpop.pause('bad')")
    assert one(conn, "SELECT count(*) FROM pushpop.pop('bad')") == 0
    one(conn, "SELECT pushpop.resume('bad')")
    one(conn, "SELECT pushpop.discard(id, lease, 'boom') FROM pushpop.pop('bad')")
    assert one(conn, "SELECT pushpop.complete(id, lease) FROM pushpop.pop('good')") is True
    stats = conn.execute("SELECT topic, completed, discarded FROM pushpop.stats()").fetchall()
    assert stats == [("bad", 0, 1), ("good", 1, 0)]


def test_a_push_wakes_the_consumers_waiting_for_a_subscriber_topic(dsn: str, conn: Conn) -> None:
    subscribe(conn, ("orders", "billing"))
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pushpop")
        listener.execute("SELECT pushpop.wait_for_push(%s, '{billing}')", [uuid4()])
        one(conn, "SELECT pushpop.push('orders', 'x')")
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in notes] == ["billing"]


# --- Patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("orders.*", ["orders.created", "orders.x"], ["orders", "orders.a.b", "order.x"]),
        ("orders.>", ["orders.created", "orders.a.b.c"], ["orders", "ordersx.a", "other.a"]),
        ("*.created", ["orders.created", "x.created"], ["created", "a.b.created"]),
        ("a.*.c.>", ["a.b.c.d", "a.x.c.d.e"], ["a.b.c", "a.c.d", "a.b.x.d"]),
        ("*", ["a", "orders"], ["a.b"]),
        (">", ["a", "a.b.c"], []),
        ("or+ders.(x)", ["or+ders.(x)"], ["orrders.(x)", "or+ders.x"]),
    ],
)
def test_patterns_match_whole_words_as_nats_subjects_do(
    conn: Conn, pattern: str, matches: list[str], misses: list[str]
) -> None:
    subscribe(conn, (pattern, "sink"))
    for topic in matches + misses:
        conn.execute("SELECT pushpop.push(%s, %s)", [topic, topic.encode()])
    got = [bytes(p).decode() for t, p in topics(conn) if t == "sink"]
    assert sorted(got) == sorted(matches)
    assert sorted(t for t, _ in topics(conn) if t != "sink") == sorted(misses)


def test_a_new_topic_reaches_a_pattern_without_anyone_resubscribing(conn: Conn) -> None:
    subscribe(conn, ("orders.>", "audit"))
    one(conn, "SELECT pushpop.push('orders.refunded', 'r')")
    assert topics(conn) == [("audit", b"r")]


def test_several_subscriptions_of_one_subscriber_give_it_one_copy(conn: Conn) -> None:
    subscribe(
        conn, ("orders.created", "audit"), ("orders.*", "audit"), ("orders.>", "audit"),
        ("*.created", "audit"), ("orders.*", "mail"),
    )  # fmt: skip
    one(conn, "SELECT pushpop.push('orders.created', 'x')")
    assert topics(conn) == [("audit", b"x"), ("mail", b"x")]


# --- Subscribing -----------------------------------------------------------------------------


def test_subscribe_and_unsubscribe_say_whether_they_changed_something(conn: Conn) -> None:
    assert one(conn, "SELECT pushpop.subscriptions_in_use()") is False
    assert one(conn, "SELECT pushpop.subscribe('orders', 'billing')") is True
    assert one(conn, "SELECT pushpop.subscribe('orders', 'billing')") is False
    assert one(conn, "SELECT pushpop.subscribe(topic => 'orders.>', subscriber_topic => 'a')")
    both = "SELECT pushpop.subscriptions_in_use() AND pushpop.subscription_patterns_in_use()"
    assert one(conn, both) is True
    listed = conn.execute("SELECT pattern, subscriber FROM pushpop.subscriptions()").fetchall()
    assert listed == [("orders", "billing"), ("orders.>", "a")]
    only = conn.execute("SELECT pattern, subscriber FROM pushpop.subscriptions('orders.>')")
    assert only.fetchall() == [("orders.>", "a")]
    assert one(conn, "SELECT pushpop.unsubscribe('orders.>', 'a')") is True
    assert one(conn, "SELECT pushpop.unsubscribe('orders.>', 'a')") is False
    assert one(conn, "SELECT pushpop.subscription_patterns_in_use()") is False
    assert one(conn, "SELECT pushpop.subscriptions_in_use()") is True
    one(conn, "SELECT pushpop.push('orders', 'x')")
    assert one(conn, "SELECT pushpop.unsubscribe('orders', 'billing')") is True
    assert one(conn, "SELECT pushpop.subscriptions_in_use()") is False
    one(conn, "SELECT pushpop.push('orders', 'y')")
    # Copies made before stay; the topic is a plain queue again.
    assert topics(conn) == [("billing", b"x"), ("orders", b"y")]


@pytest.mark.parametrize(
    ("topic", "subscriber", "problem"),
    [
        (None, "s", "topic must be 1 to 255 characters, got NULL"),
        ("", "s", "topic must be 1 to 255 characters, got 0 characters"),
        ("x" * 256, "s", "topic must be 1 to 255 characters"),
        ("a..b", "s", "topic 'a..b' has an empty word"),
        (".a", "s", "has an empty word"),
        ("a.", "s", "has an empty word"),
        ("a.b*", "s", "has a wildcard inside a word"),
        ("a.>b", "s", "has a wildcard inside a word"),
        ("a.>.b", "s", "has > before its last word"),
        ("a", None, "subscriber_topic must be 1 to 255 characters, got NULL"),
        ("a", "", "subscriber_topic must be 1 to 255 characters"),
        ("a", "s.*", "subscriber_topic must be a topic, not a pattern"),
        ("a", ">", "subscriber_topic must be a topic, not a pattern"),
    ],
)
@pytest.mark.parametrize("function", ["subscribe", "unsubscribe"])
def test_bad_subscriptions_raise_22023_naming_the_argument_and_change_nothing(
    conn: Conn, function: str, topic: str | None, subscriber: str | None, problem: str
) -> None:
    query = f"SELECT pushpop.{function}(%s, %s)"
    with pytest.raises(pg_errors.InvalidParameterValue, match=problem.replace("*", r"\*")):
        conn.execute(query, [topic, subscriber])
    assert one(conn, "SELECT count(*) FROM pushpop.subscriptions") == 0
    assert one(conn, "SELECT pushpop.subscriptions_in_use()") is False


@pytest.fixture(scope="module")
def logins(server_conninfo: str, template_dbname: str) -> Iterator[Logins]:
    """LOGIN roles holding pushpop_producer, pushpop_consumer and pushpop_admin."""
    kinds = {"producer": ["pushpop_producer"], "consumer": ["pushpop_consumer"]}
    with made(server_conninfo, kinds | {"admin": ["pushpop_admin"]}) as logins:
        yield logins


def test_only_an_administrator_subscribes_and_a_producer_fans_out(
    conn: Conn, dsn: str, logins: Logins
) -> None:
    """Subscribing is administration; a producer granted the pushed topic needs no grant on
    the subscriber topics: the administrator chose them."""
    for kind in ("producer", "consumer"):
        with logins.connect(dsn, kind) as other, pytest.raises(pg_errors.InsufficientPrivilege):
            other.execute("SELECT pushpop.subscribe('orders', 'billing')")
    with logins.connect(dsn, "admin") as admin:
        assert one(admin, "SELECT pushpop.subscribe('orders', 'billing')") is True
        assert one(admin, "SELECT count(*) FROM pushpop.subscriptions()") == 1
    producer = logins.names["producer"]
    conn.execute("SELECT pushpop.grant_topics(%s::regrole, '{orders}', '{push}')", [producer])
    with logins.connect(dsn, "producer") as prod:
        with pytest.raises(pg_errors.InsufficientPrivilege):
            prod.execute("SELECT pushpop.push('billing', 'x')")
        id = one(prod, "SELECT pushpop.push('orders', 'x')")
    assert isinstance(id, UUID)
    assert topics(conn) == [("billing", b"x")]


# --- Clients and the command line ------------------------------------------------------------


def test_a_client_subscribes_pushes_and_finds_the_copies(client: Any) -> None:
    assert client.subscribe("orders.*", "billing") is True
    assert client.subscribe("orders.*", "billing") is False
    assert client.subscribe("orders.created", "audit") is True
    (info, _) = client.subscriptions()
    assert isinstance(info, pushpop.SubscriptionInfo)
    assert (info.pattern, info.subscriber) == ("orders.*", "billing")
    assert [s.subscriber for s in client.subscriptions("orders.created")] == ["audit"]
    id = client.push("orders.created", json={"n": 1})
    ids = client.push_many("orders.created", [b"a", b"b"])
    assert len(ids) == 2
    first = client.find(id)
    assert (first.topic, first.json()) == ("audit", {"n": 1})  # the first subscriber by name
    msg = client.pop("billing")
    assert msg.json() == {"n": 1}
    msg.complete()
    assert client.pop("orders.created") is None
    assert client.unsubscribe("orders.*", "billing") is True
    assert client.unsubscribe("orders.*", "billing") is False
    with pytest.raises(pushpop.InvalidArgument, match="has an empty word"):
        client.subscribe("orders..x", "billing")
    with pytest.raises(pushpop.InvalidArgument, match="subscriber_topic must be 1 to 255"):
        client.subscribe("orders", "")


def test_the_command_line_subscribes_lists_and_unsubscribes(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    def run(*argv: str) -> tuple[int, str, str]:
        status = cli.main([*argv, "--dsn", dsn])
        out, err = capsys.readouterr()
        return status, out, err

    assert run("subscriptions") == (0, "no subscriptions\n", "")
    assert run("subscribe", "orders.>", "audit") == (0, "subscribed 'audit' to 'orders.>'\n", "")
    assert run("subscribe", "orders.>", "audit")[1] == "already subscribed: 'audit' to 'orders.>'\n"
    status, out, _ = run("subscriptions", "--json")
    (row,) = json.loads(out)
    assert (status, row["pattern"], row["subscriber"]) == (0, "orders.>", "audit")
    assert "orders.>" in run("subscriptions")[1]
    assert json.loads(run("subscriptions", "other", "--json")[1]) == []
    assert run("unsubscribe", "orders.>", "audit") == (
        0, "unsubscribed 'audit' from 'orders.>'\n", "",
    )  # fmt: skip
    assert run("unsubscribe", "orders.>", "audit") == (
        1, "", "pushpop: 'audit' is not subscribed to 'orders.>'\n",
    )  # fmt: skip
    status, _, err = run("subscribe", "a.>.b", "audit")
    assert (status, "has > before its last word" in err) == (1, True)
