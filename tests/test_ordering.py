"""Strict order per key: the messages of a topic with one ordering_key are delivered one at a
time, in push order, in SQL and through both clients, the command line and the worker."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from typing import Any
from uuid import UUID

import psycopg
import pytest
from backdating import backdate
from psycopg import errors as pg_errors
from waiting import wait_for

import pushpop
from pushpop import cli

Conn = psycopg.Connection[tuple[Any, ...]]


def one(conn: Conn, query: Any, params: list[Any] | dict[str, Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def push(conn: Conn, payload: str, key: str | None = "k", topic: str = "t", **kw: Any) -> UUID:
    args = "".join(f", {name} => %({name})s" for name in kw)
    return one(  # type: ignore[no-any-return]
        conn,
        "SELECT pushpop.push(%(topic)s, convert_to(%(payload)s, 'UTF8'),"
        " ordering_key => %(key)s" + args + ")",
        {"topic": topic, "payload": payload, "key": key, **kw},
    )


def pop_all(conn: Conn, topic: str = "t") -> list[tuple[str, UUID, UUID]]:
    """(payload, id, lease) of everything pop gives now."""
    rows = conn.execute(
        "SELECT convert_from(payload, 'UTF8'), id, lease FROM pushpop.pop(%s, max_messages => 100)",
        [topic],
    ).fetchall()
    return [(p, i, lease) for p, i, lease in rows]


def states(conn: Conn, topic: str = "t") -> dict[str, str]:
    """payload → state of every message of the topic."""
    rows = conn.execute(
        "SELECT convert_from(payload, 'UTF8'), state FROM pushpop.messages WHERE topic = %s",
        [topic],
    ).fetchall()
    return dict(rows)


def complete(conn: Conn, id: UUID, lease: UUID) -> bool:
    return one(conn, "SELECT pushpop.complete(%s, %s)", [id, lease])  # type: ignore[no-any-return]


# --- One at a time, in push order -------------------------------------------------------------


def test_only_the_oldest_live_message_of_a_key_can_be_popped(conn: Conn) -> None:
    for p in ("a1", "a2", "a3"):
        push(conn, p, "a")
    assert [p for p, _, _ in pop_all(conn)] == ["a1"]
    assert states(conn) == {"a1": "pending", "a2": "blocked", "a3": "blocked"}
    assert pop_all(conn) == []


def test_the_messages_of_a_key_are_delivered_in_push_order_as_each_completes(conn: Conn) -> None:
    for p in ("a1", "a2", "a3"):
        push(conn, p, "a")
    delivered = []
    while got := pop_all(conn):
        assert len(got) == 1
        payload, id, lease = got[0]
        delivered.append(payload)
        assert complete(conn, id, lease)
    assert delivered == ["a1", "a2", "a3"]


def test_different_keys_and_messages_without_a_key_flow_in_parallel(conn: Conn) -> None:
    push(conn, "a1", "a")
    push(conn, "a2", "a")
    push(conn, "b1", "b")
    push(conn, "n1", None)
    push(conn, "n2", None)
    assert sorted(p for p, _, _ in pop_all(conn)) == ["a1", "b1", "n1", "n2"]


def test_a_key_is_per_topic(conn: Conn) -> None:
    push(conn, "x", "a", topic="t1")
    push(conn, "y", "a", topic="t2")
    assert [p for p, _, _ in pop_all(conn, "t1")] == ["x"]
    assert [p for p, _, _ in pop_all(conn, "t2")] == ["y"]


def test_discarding_a_keys_message_makes_the_next_one_ready(conn: Conn) -> None:
    push(conn, "a1", "a")
    push(conn, "a2", "a")
    [(_, id, lease)] = pop_all(conn)
    assert one(conn, "SELECT pushpop.discard(%s, %s, 'bad')", [id, lease]) is True
    assert [p for p, _, _ in pop_all(conn)] == ["a2"]


def test_a_deferred_message_keeps_its_key_blocked_until_it_succeeds(conn: Conn) -> None:
    push(conn, "a1", "a")
    push(conn, "a2", "a")
    [(_, id, lease)] = pop_all(conn)
    assert one(conn, "SELECT pushpop.defer(%s, %s, '0', 'try again')", [id, lease]) is True
    assert states(conn) == {"a1": "ready", "a2": "blocked"}
    [(payload, id, lease)] = pop_all(conn)
    assert payload == "a1"
    assert complete(conn, id, lease)
    assert [p for p, _, _ in pop_all(conn)] == ["a2"]


def test_a_lapsed_lease_keeps_the_key_blocked_and_fences_the_old_consumer(conn: Conn) -> None:
    push(conn, "a1", "a")
    push(conn, "a2", "a")
    [(_, id, old_lease)] = pop_all(conn)
    backdate(conn, id)
    assert one(conn, "SELECT pushpop.requeue_expired()") == 1
    assert states(conn) == {"a1": "ready", "a2": "blocked"}
    [(payload, _, new_lease)] = pop_all(conn)
    assert payload == "a1"
    assert not complete(conn, id, old_lease)  # the first consumer lost it
    assert states(conn)["a2"] == "blocked"
    assert complete(conn, id, new_lease)
    assert [p for p, _, _ in pop_all(conn)] == ["a2"]


def test_a_message_that_used_its_last_attempt_unblocks_its_key(conn: Conn) -> None:
    push(conn, "a1", "a", max_attempts=1)
    push(conn, "a2", "a")
    [(_, id, _)] = pop_all(conn)
    backdate(conn, id)
    assert one(conn, "SELECT pushpop.requeue_expired()") == 1
    assert states(conn) == {"a1": "discarded", "a2": "ready"}


def test_an_expired_message_unblocks_its_key(conn: Conn) -> None:
    push(conn, "a1", "a", expires_in="1 hour")
    push(conn, "a2", "a")
    conn.execute("UPDATE pushpop.messages SET expires_at = now() - interval '1 second'"
                 " WHERE state = 'ready'")  # fmt: skip
    assert pop_all(conn) == []  # pop passes an expired message by
    assert one(conn, "SELECT pushpop.requeue_expired()") == 1
    assert states(conn) == {"a1": "discarded", "a2": "ready"}


def test_cancelling_a_keys_live_message_or_a_blocked_one_keeps_the_order(conn: Conn) -> None:
    a1, a2, a3, a4 = (push(conn, p, "a") for p in ("a1", "a2", "a3", "a4"))
    assert one(conn, "SELECT pushpop.cancel(%s)", [a3]) is True  # blocked: passed over later
    assert one(conn, "SELECT pushpop.cancel(%s)", [a1]) is True  # live: the next takes its place
    assert states(conn) == {"a1": "discarded", "a2": "ready", "a3": "discarded", "a4": "blocked"}
    [(payload, id, lease)] = pop_all(conn)
    assert (payload, id) == ("a2", a2)
    assert complete(conn, id, lease)
    assert [i for _, i, _ in pop_all(conn)] == [a4]


def test_a_delayed_message_behind_a_key_waits_for_its_turn_and_its_time(conn: Conn) -> None:
    push(conn, "a1", "a")
    push(conn, "a2", "a", delay="1 hour")
    [(_, id, lease)] = pop_all(conn)
    assert complete(conn, id, lease)
    assert states(conn)["a2"] == "scheduled"
    assert pop_all(conn) == []


def test_complete_many_unblocks_every_key_it_finishes(conn: Conn) -> None:
    for key in ("a", "b", "c"):
        push(conn, key + "1", key)
        push(conn, key + "2", key)
    got = pop_all(conn)
    assert sorted(p for p, _, _ in got) == ["a1", "b1", "c1"]
    done = one(
        conn,
        "SELECT pushpop.complete_many(%s, %s)",
        [[i for _, i, _ in got], [lease for _, _, lease in got]],
    )
    assert done == [True, True, True]
    assert sorted(p for p, _, _ in pop_all(conn)) == ["a2", "b2", "c2"]


def test_a_blocked_message_holds_its_dedup_key(conn: Conn) -> None:
    push(conn, "a1", "a")
    a2 = push(conn, "a2", "a", dedup_key="d")
    assert push(conn, "again", "a", dedup_key="d") == a2
    assert push(conn, "again", None, dedup_key="d") == a2
    assert sorted(states(conn)) == ["a1", "a2"]


def test_a_retried_dead_message_waits_behind_the_keys_live_one(conn: Conn) -> None:
    a1 = push(conn, "a1", "a")
    push(conn, "a2", "a")
    [(_, id, lease)] = pop_all(conn)
    assert one(conn, "SELECT pushpop.discard(%s, %s)", [id, lease]) is True
    assert one(conn, "SELECT pushpop.retry(%s)", [a1]) is True
    assert states(conn) == {"a1": "blocked", "a2": "ready"}
    [(payload, id, lease)] = pop_all(conn)
    assert payload == "a2"
    assert complete(conn, id, lease)
    assert [p for p, _, _ in pop_all(conn)] == ["a1"]


def test_retry_discarded_puts_a_keys_dead_messages_back_in_push_order(conn: Conn) -> None:
    for p in ("a1", "a2", "a3"):
        push(conn, p, "a", max_attempts=1)
    for _ in range(3):
        [(_, id, lease)] = pop_all(conn)
        assert one(conn, "SELECT pushpop.discard(%s, %s)", [id, lease]) is True
    assert one(conn, "SELECT pushpop.retry_discarded('t')") == 3
    assert states(conn) == {"a1": "ready", "a2": "blocked", "a3": "blocked"}
    delivered = []
    while got := pop_all(conn):
        [(payload, id, lease)] = got
        delivered.append(payload)
        assert complete(conn, id, lease)
    assert delivered == ["a1", "a2", "a3"]


def test_purge_leaves_no_blocked_message_behind(conn: Conn) -> None:
    for p in ("a1", "a2", "a3"):
        push(conn, p, "a")
    [(_, id, lease)] = pop_all(conn)
    assert one(conn, "SELECT pushpop.purge('t')") == 2
    assert complete(conn, id, lease)
    assert states(conn) == {"a1": "completed"}


def test_stats_browse_and_find_show_blocked_messages(conn: Conn) -> None:
    push(conn, "a1", "a")
    a2 = push(conn, "a2", "a")
    row = conn.execute("SELECT ready, blocked FROM pushpop.stats() WHERE topic = 't'").fetchone()
    assert row == (1, 1)
    browsed = conn.execute("SELECT id, state, ordering_key FROM pushpop.browse('t', 'blocked')")
    assert browsed.fetchall() == [(a2, "blocked", "a")]
    assert one(conn, "SELECT state FROM pushpop.find(%s)", [a2]) == "blocked"


def test_push_many_orders_a_batch_by_the_key_of_each_payload(conn: Conn) -> None:
    ids = conn.execute(
        "SELECT pushpop.push_many('t', ARRAY['x1', 'x2', 'y1', 'n1']::bytea[],"
        " ordering_keys => ARRAY['x', 'x', 'y', NULL])"
    ).fetchall()
    assert len(ids) == 4
    assert one(conn, "SELECT array_agg(id ORDER BY seq) FROM pushpop.messages") == [
        i for (i,) in ids
    ]
    assert states(conn) == {"x1": "ready", "x2": "blocked", "y1": "ready", "n1": "ready"}


def test_a_fanned_out_keyed_push_is_ordered_in_each_subscriber_on_its_own(conn: Conn) -> None:
    for subscriber in ("billing", "audit"):
        assert one(conn, "SELECT pushpop.subscribe('orders', %s)", [subscriber]) is True
    push(conn, "o1", "customer-7", topic="orders")
    push(conn, "o2", "customer-7", topic="orders")
    [(_, id, lease)] = pop_all(conn, "billing")
    assert complete(conn, id, lease)
    assert [p for p, _, _ in pop_all(conn, "billing")] == ["o2"]
    assert states(conn, "audit") == {"o1": "ready", "o2": "blocked"}  # audit's order is its own


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        ("SELECT pushpop.push('t', 'x', ordering_key => '')", "ordering_key must be 1 to 255"),
        (f"SELECT pushpop.push('t', 'x', ordering_key => '{'k' * 256}')", "got 256 characters"),
        (
            "SELECT pushpop.push_many('t', ARRAY['x', 'y']::bytea[],"
            " ordering_keys => ARRAY['a', ''])",
            "ordering_key must be 1 to 255",
        ),
        (
            "SELECT pushpop.push_many('t', ARRAY['x', 'y']::bytea[], ordering_keys => ARRAY['a'])",
            r"ordering_keys must be a one-dimensional array as long as payloads \(2\), got 1",
        ),
    ],
)
def test_a_bad_ordering_key_is_refused_and_nothing_is_written(
    conn: Conn, call: str, problem: str
) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match=problem):
        conn.execute(call)
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 0


def test_a_push_racing_the_completion_of_its_keys_message_is_never_stranded(dsn: str) -> None:
    """Pushes of one key while its live messages complete: every message is delivered, once,
    in push order, and no blocked message is ever left with nothing ahead of it (the test
    database's rules check, afterwards, looks for one)."""
    stop = threading.Event()
    pushed: list[str] = []

    def produce() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            for n in itertools.count():
                if stop.is_set():
                    return
                push(c, f"{n:05}", "hot")
                pushed.append(f"{n:05}")

    producer = threading.Thread(target=produce)
    producer.start()
    delivered: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        try:
            while len(delivered) < 300:
                for payload, id, lease in pop_all(c):
                    delivered.append(payload)
                    assert complete(c, id, lease)
        finally:
            stop.set()
            producer.join()
        while got := pop_all(c):
            for payload, id, lease in got:
                delivered.append(payload)
                assert complete(c, id, lease)
    assert delivered == pushed


# --- Clients, command line and worker ---------------------------------------------------------


def test_the_client_pushes_with_a_key_and_reads_it_back(client: Any) -> None:
    id = client.push("t", b"a1", ordering_key="a")
    client.push("t", b"a2", ordering_key="a")
    msg = client.pop("t")
    assert (msg.id, msg.ordering_key) == (id, "a")
    assert client.pop("t") is None
    msg.complete()
    assert client.pop("t").payload == b"a2"
    built = client.new_message("t", b"b1", ordering_key="b")
    assert built.ordering_key == "b"


def test_push_many_takes_one_key_for_the_batch_or_one_per_payload(client: Any) -> None:
    client.push_many("t", [b"x1", b"x2"], ordering_key="x")
    client.push_many("t", [b"y1", b"z1", b"y2"], ordering_keys=["y", "z", "y"])
    got = sorted(m.payload for m in client.pop_many("t", 10))
    assert got == [b"x1", b"y1", b"z1"]
    assert {s.topic: s.blocked for s in client.stats()} == {"t": 2}


def test_the_client_refuses_bad_keys_before_sending_anything(client: Any) -> None:
    with pytest.raises(pushpop.InvalidArgument, match="ordering_key must be 1 to 255"):
        client.push("t", b"x", ordering_key="")
    with pytest.raises(pushpop.InvalidType, match="ordering_key must be a str or None"):
        client.push("t", b"x", ordering_key=7)
    with pytest.raises(pushpop.InvalidArgument, match="not both"):
        client.push_many("t", [b"x"], ordering_key="a", ordering_keys=["a"])
    with pytest.raises(pushpop.InvalidArgument, match=r"as long as payloads \(2\), got 1"):
        client.push_many("t", [b"x", b"y"], ordering_keys=["a"])
    with pytest.raises(pushpop.InvalidArgument, match=r"ordering_keys\[1\] must be 1 to 255"):
        client.push_many("t", [b"x", b"y"], ordering_keys=["a", ""])
    assert client.stats() == []


def test_the_command_line_pushes_with_a_key(
    capsys: pytest.CaptureFixture[str], dsn: str, client: Any
) -> None:
    for payload in ("a1", "a2"):
        assert cli.main(["--dsn", dsn, "push", "t", payload, "--ordering-key", "a"]) == 0
    capsys.readouterr()
    assert cli.main(["--dsn", dsn, "pop", "t"]) == 0
    assert "ordering_key a" in " ".join(capsys.readouterr().out.split())
    assert client.pop("t") is None


def test_a_worker_runs_one_handler_per_key_however_high_its_concurrency(dsn: str) -> None:
    """Concurrency 16, 4 keys: at most 4 handlers at once, never two of one key."""
    lock = threading.Lock()
    running: dict[str, int] = defaultdict(int)
    most = {"all": 0, "per_key": 0}
    done: list[str] = []

    def handler(msg: pushpop.Message) -> None:
        key = msg.ordering_key or ""
        with lock:
            running[key] += 1
            most["all"] = max(most["all"], sum(running.values()))
            most["per_key"] = max(most["per_key"], running[key])
        time.sleep(0.01)  # the work, long enough for handlers to overlap
        with lock:
            running[key] -= 1
            done.append(msg.payload.decode())

    with pushpop.Client(dsn, max_size=4) as client:
        for n in range(10):
            for key in "abcd":
                client.push("t", f"{key}{n}".encode(), ordering_key=key)
        worker = pushpop.Worker(client, "t", handler, concurrency=16, poll_interval=0.05)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_for(lambda: len(done) == 40, what="every message handled")
        finally:
            worker.stop()
            thread.join(timeout=30)
    assert most["per_key"] == 1
    assert 2 <= most["all"] <= 4
    for key in "abcd":
        assert [p for p in done if p[0] == key] == [f"{key}{n}" for n in range(10)]


# --- The ordering claim, under load -----------------------------------------------------------


def test_order_per_key_holds_with_many_producers_failures_and_lapsed_leases(dsn: str) -> None:
    """4 producers push to 50 keys; 8 consumers complete with random delays, fail some (defer),
    and let some leases lapse while maintenance requeues them. Per key, completions follow
    push order, and no two deliveries of one key that kept their lease overlapped: each
    consumer logs a delivery from the moment pop returned it until it began to acknowledge,
    which lies inside the time the message was really pending."""
    producers, per_producer, keys, consumers = 4, 150, 50, 8
    total = producers * per_producer
    log: list[tuple[str, str, str, int]] = []  # (event, key, payload, delivery number)
    log_lock = threading.Lock()
    deliveries = itertools.count()
    acked_ok: set[int] = set()
    stop = threading.Event()

    def note(event: str, key: str, payload: str, n: int) -> None:
        with log_lock:
            log.append((event, key, payload, n))

    def produce(p: int) -> None:
        rng = random.Random(p)
        with pushpop.Client(dsn, max_size=1) as client:
            for i in range(per_producer):
                key = f"k{rng.randrange(keys)}"
                client.push("orders", f"p{p}-{i:04}".encode(), ordering_key=key)

    def consume(c: int) -> None:
        rng = random.Random(100 + c)
        with pushpop.Client(dsn, max_size=1) as client:
            while not stop.is_set():
                lapse = rng.random() < 0.05
                msg = client.pop("orders", lease=0.2 if lapse else 30)
                if msg is None:
                    time.sleep(0.002)  # idle: nothing ready right now
                    continue
                n = next(deliveries)
                key, payload = msg.ordering_key or "", msg.payload.decode()
                note("pop", key, payload, n)
                time.sleep(rng.random() * 0.003 + (0.3 if lapse else 0))  # the work
                note("ack", key, payload, n)
                try:
                    if rng.random() < 0.1:
                        msg.defer(reason="random failure")
                    else:
                        msg.complete()
                except pushpop.LeaseLost:
                    continue
                acked_ok.add(n)

    def maintain() -> None:
        with pushpop.Client(dsn, max_size=1) as client:
            while not stop.is_set():
                client.requeue_expired()
                time.sleep(0.05)  # maintenance's own pace

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    threads.append(threading.Thread(target=maintain))
    for t in threads:
        t.start()
    try:
        with pushpop.Client(dsn, max_size=1) as watcher:

            def all_completed() -> bool:
                return sum(s.completed for s in watcher.stats()) == total

            wait_for(all_completed, timeout=120, what="every message completed")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ordering_key, convert_from(payload, 'UTF8'), seq, state, state_time"
            " FROM pushpop.messages WHERE topic = 'orders'"
        ).fetchall()
    assert {r[3] for r in rows} == {"completed"}
    assert len(rows) == total
    by_key: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_key[row[0]].append(row)
    for key, msgs in by_key.items():
        pushed = [m[1] for m in sorted(msgs, key=lambda m: m[2])]
        completed = [m[1] for m in sorted(msgs, key=lambda m: m[4])]
        assert completed == pushed, f"key {key}: completions out of push order"
        for p in range(producers):  # each producer's own pushes, in the order it made them
            mine = [x for x in pushed if x.startswith(f"p{p}-")]
            assert mine == sorted(mine)

    # No two deliveries of one key that kept their lease were held at once.
    holding: dict[str, int] = {}
    for event, key, payload, n in log:
        if n not in acked_ok:
            continue
        if event == "pop":
            assert key not in holding, f"key {key}: {payload} popped while {holding[key]} held"
            holding[key] = n
        else:
            del holding[key]
    assert len(acked_ok) >= total
