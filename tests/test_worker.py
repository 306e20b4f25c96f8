"""The worker, in process: outcomes, retries, leases, wake-ups, registry and maintenance."""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast
from uuid import uuid4

import psycopg
import pytest
from waiting import wait_for
from wakeups import has_asked_for_a_wake_up, spend_the_wake_up_request

import pushpop
from pushpop.control import CONTROL_APP
from pushpop.worker_common import (
    POP_AHEAD,
    POP_AHEAD_BYTES,
    RELEASED,
    Flight,
    WorkerSettings,
)


class Running:
    """A Worker running in a background thread; stop() drains it and joins."""

    def __init__(self, worker: pushpop.Worker[pushpop.Message]) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, name="test-worker")
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn, max_size=4) as c:
        yield c


@pytest.fixture
def start(sync_client: pushpop.Client) -> Iterator[Callable[..., Running]]:
    """Starts workers on the test database; every one is stopped after the test."""
    started: list[Running] = []

    def start_worker(topics: Any, handler: Callable[[pushpop.Message], Any], **kw: Any) -> Running:
        kw.setdefault("poll_interval", 0.05)
        running = Running(pushpop.Worker(sync_client, topics, handler, **kw))
        started.append(running)
        return running

    yield start_worker
    for running in started:
        running.stop()


def state_of(client: pushpop.Client, id: Any) -> str | None:
    msg = client.find(id)
    return msg.state if msg else None


def test_a_handler_that_returns_completes_its_message(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    ids = [sync_client.push("jobs", f"job {i}".encode()) for i in range(20)]
    seen: list[bytes] = []
    start("jobs", lambda msg: seen.append(msg.payload), concurrency=3)
    wait_for(lambda: all(state_of(sync_client, i) == "completed" for i in ids), what="completion")
    assert sorted(seen) == sorted(f"job {i}".encode() for i in range(20))


def test_a_failing_handler_backs_off_keeps_the_error_and_ends_discarded(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"poison", max_attempts=4)
    attempts: list[float] = []

    def fail(msg: pushpop.Message) -> None:
        attempts.append(time.monotonic())
        raise ValueError(f"cannot handle attempt {msg.attempts}")

    start("jobs", fail, retry=pushpop.Retry(base=0.1, cap=10, jitter=0))
    wait_for(lambda: state_of(sync_client, id) == "discarded", what="discard")
    msg = sync_client.find(id)
    assert msg is not None
    assert msg.attempts == 4
    assert msg.error is not None
    assert "ValueError: cannot handle attempt 4" in msg.error
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 3
    # Backoff doubles from 0.1 s (no jitter here): 0.1, 0.2, 0.4 s at least.
    assert all(gap >= want for gap, want in zip(gaps, [0.1, 0.2, 0.4], strict=True)), gaps


def test_the_error_of_a_retried_message_is_kept_while_it_waits(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"x")

    def fail(msg: pushpop.Message) -> None:
        raise RuntimeError("smtp down")

    start("jobs", fail, retry=pushpop.Retry(base=3600, cap=3600))
    wait_for(lambda: (m := sync_client.find(id)) and m.error, what="error recorded")
    msg = sync_client.find(id)
    assert msg is not None
    assert msg.state == "ready"
    assert msg.error == "RuntimeError: smtp down"
    assert [s.scheduled for s in sync_client.stats()] == [1]


def test_a_handler_may_acknowledge_its_message_itself(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"x")
    start("jobs", lambda msg: msg.discard("not for us"))
    wait_for(lambda: state_of(sync_client, id) == "discarded", what="discard")
    msg = sync_client.find(id)
    assert msg is not None
    assert msg.error == "not for us"
    assert msg.attempts == 1


def test_concurrency_handlers_run_at_once_without_holding_pool_connections(dsn: str) -> None:
    barrier = threading.Barrier(4, timeout=10)
    with pushpop.Client(dsn, max_size=1) as one_connection:
        ids = [one_connection.push("jobs", b"x") for _ in range(4)]
        running = Running(
            pushpop.Worker(one_connection, "jobs", lambda m: barrier.wait(), concurrency=4)
        )
        try:
            wait_for(
                lambda: all(state_of(one_connection, i) == "completed" for i in ids),
                what="4 handlers meeting at the barrier",
            )
        finally:
            running.stop()


@pytest.mark.slow
def test_a_long_handler_with_a_short_lease_is_never_delivered_twice(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"long")
    deliveries: Counter[Any] = Counter()

    def long_job(msg: pushpop.Message) -> None:
        deliveries[msg.id] += 1
        time.sleep(5)

    for _ in range(2):
        start("jobs", long_job, lease=timedelta(seconds=1.5), requeue_interval=0.2)
    wait_for(lambda: state_of(sync_client, id) == "completed", timeout=20, what="completion")
    assert deliveries == {id: 1}


def test_an_idle_worker_picks_up_a_push_within_milliseconds(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    picked: dict[Any, float] = {}
    start("jobs", lambda msg: picked.setdefault(msg.id, time.monotonic()), poll_interval=10)
    wait_for(lambda: sync_client.workers(), what="registration")
    latencies = []
    for i in range(20):
        pushed = time.monotonic()
        id = sync_client.push("jobs", str(i).encode())
        wait_for(lambda: id in picked, what="pickup")  # noqa: B023 (called at once)
        latencies.append(picked[id] - pushed)
    # Far below the 10 s poll interval: the wake-up came from LISTEN/NOTIFY.
    assert statistics.median(latencies) < 0.5, latencies


def test_stop_releases_messages_whose_handler_outlives_the_shutdown_timeout(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"stuck")
    started, finish = threading.Event(), threading.Event()

    def stuck(msg: pushpop.Message) -> None:
        started.set()
        finish.wait(30)

    running = start("jobs", stuck, shutdown_timeout=0.2)
    assert started.wait(10)
    running.stop()
    msg = sync_client.find(id)
    assert msg is not None
    assert msg.state == "ready"
    assert msg.error == RELEASED
    finish.set()  # the abandoned handler ends; its late completion is fenced off
    assert state_of(sync_client, id) == "ready"


def test_stop_lets_running_handlers_finish_and_completes_them(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    ids = [sync_client.push("jobs", b"x") for _ in range(2)]
    started = threading.Barrier(3, timeout=10)

    def slowish(msg: pushpop.Message) -> None:
        started.wait()
        time.sleep(0.3)

    running = start("jobs", slowish, concurrency=2, shutdown_timeout=10)
    started.wait()
    running.stop()
    assert [state_of(sync_client, i) for i in ids] == ["completed", "completed"]


def test_workers_register_while_running_and_leave_when_stopped(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    running = start(["emails", "sms"], lambda m: None, concurrency=3)
    (info,) = wait_for(sync_client.workers, what="registration")
    assert info.id == running.worker.id
    assert (info.topics, info.concurrency) == (["emails", "sms"], 3)
    running.stop()
    assert sync_client.workers() == []


def test_only_one_worker_runs_maintenance_and_another_takes_over(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    fleet = [start("jobs", lambda m: None, requeue_interval=0.05) for _ in range(3)]

    def leaders() -> list[Running]:
        return [r for r in fleet if r.worker.is_leader]

    first = wait_for(leaders, what="a maintenance leader")
    for _ in range(20):  # stays exactly one for a while
        assert len(leaders()) == 1
        time.sleep(0.02)
    first[0].stop()
    fleet.remove(first[0])
    wait_for(leaders, what="a new leader")
    assert len(leaders()) == 1


def test_maintenance_requeues_expired_leases(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("abandoned", b"x")
    assert sync_client.pop("abandoned", lease=0.05) is not None  # a consumer that vanished
    start("other-topic", lambda m: None, requeue_interval=0.05)
    wait_for(lambda: state_of(sync_client, id) == "ready", what="requeue")


def test_a_wake_up_request_spent_while_the_worker_settles_is_made_again(
    sync_client: pushpop.Client,
    conn: psycopg.Connection[Any],
    start: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The short wait after asking for a wake-up, stretched so the test acts within it.
    monkeypatch.setattr(pushpop.worker, "SETTLE", 30.0)
    picked = threading.Event()
    running = start("jobs", lambda m: picked.set(), poll_interval=30)

    def requested() -> bool:
        return has_asked_for_a_wake_up(conn, running.worker.id)

    wait_for(requested, what="a wake-up request")
    spend_the_wake_up_request(conn, "jobs")
    wait_for(requested, what="a new request")
    sync_client.push("jobs", b"next")
    assert picked.wait(5), "no wake-up within 5 s of a push although poll_interval is 30 s"


def test_a_wake_up_that_arrives_before_the_request_call_returns_is_not_lost(
    sync_client: pushpop.Client, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    picked = threading.Event()
    worker = pushpop.Worker(sync_client, "jobs", lambda m: picked.set(), poll_interval=30)
    spent = threading.Event()
    send = sync_client._run

    def send_then_spend(call: Any, on: Any = None) -> Any:
        # Hooked where the reply to the first wait_for_push reaches the worker: the request is
        # spent and its wake-up delivered before the worker goes on.
        result = send(call, on)
        if "wait_for_push" in call.sql and not spent.is_set():
            spend_the_wake_up_request(conn, "jobs")
            wait_for(worker._wake.is_set, what="the wake-up to reach the worker")
            spent.set()
        return result

    monkeypatch.setattr(sync_client, "_run", send_then_spend)
    running = Running(worker)
    try:
        assert spent.wait(10), "the worker never asked for a wake-up"
        wait_for(lambda: has_asked_for_a_wake_up(conn, worker.id), what="a new request")
        sync_client.push("jobs", b"next")
        assert picked.wait(5), "no wake-up within 5 s of a push although poll_interval is 30 s"
    finally:
        running.stop()


def test_the_worker_reconnects_its_listener_after_the_connection_is_killed(
    sync_client: pushpop.Client, conn: psycopg.Connection[Any], start: Callable[..., Running]
) -> None:
    picked = threading.Event()
    start("jobs", lambda m: picked.set(), poll_interval=30)
    wait_for(sync_client.workers, what="registration")
    listener = (
        "SELECT pid, query FROM pg_stat_activity"
        " WHERE application_name = %s AND datname = current_database()"
    )
    ((old_pid, _),) = conn.execute(listener, [CONTROL_APP]).fetchall()
    conn.execute("SELECT pg_terminate_backend(%s)", [old_pid])

    def relistening() -> bool:
        rows = conn.execute(listener, [CONTROL_APP]).fetchall()
        # The heartbeat follows the LISTEN on a new connection.
        return any(pid != old_pid and "worker_heartbeat" in query for pid, query in rows)

    wait_for(relistening, what="the listener to reconnect")
    sync_client.push("jobs", b"after the kill")
    assert picked.wait(5), "no wake-up within 5 s of a push although poll_interval is 30 s"


def test_bad_worker_options_fail_before_anything_runs(sync_client: pushpop.Client) -> None:
    with pytest.raises(pushpop.InvalidArgument, match="concurrency"):
        pushpop.Worker(sync_client, "jobs", print, concurrency=0)
    with pytest.raises(pushpop.InvalidArgument, match="topic"):
        pushpop.Worker(sync_client, "", print)
    with pytest.raises(TypeError, match="concurency"):
        pushpop.Worker(sync_client, "jobs", print, concurency=3)  # type: ignore[call-arg]
    with pytest.raises(pushpop.InvalidArgument, match="lease"):
        pushpop.Worker(sync_client, "jobs", print, lease=-1)
    with pytest.raises(TypeError, match="handler"):
        pushpop.Worker(sync_client, "jobs", "not callable")  # type: ignore[arg-type]


def lease_deadline(conn: psycopg.Connection[Any], id: Any) -> Any:
    """A pending message's lease deadline, as the table holds it."""
    row = conn.execute("SELECT lease_until FROM pushpop.messages WHERE id = %s", [id]).fetchone()
    assert row is not None
    return row[0]


def test_a_stale_delivery_that_finishes_leaves_the_fresh_delivery_of_its_message_in_flight(
    sync_client: pushpop.Client,
    conn: psycopg.Connection[Any],
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delivery 1 of a message loses its lease and the same worker pops delivery 2: when the
    handler of delivery 1 ends, delivery 2 keeps its slot and its lease goes on being extended."""
    caplog.set_level(logging.INFO, logger="pushpop")
    id = sync_client.push("jobs", b"x")
    leases: list[Any] = []
    gates = [threading.Event(), threading.Event()]

    def held(msg: pushpop.Message) -> None:
        leases.append(msg.lease)
        gates[len(leases) - 1].wait(30)

    running = start("jobs", held, concurrency=2, lease=1.5, maintenance=False)
    wait_for(lambda: len(leases) == 1, what="delivery 1")
    with conn.transaction():  # delivery 1's lease runs out, as if its handler had stalled
        expired = "UPDATE pushpop.messages SET lease_until = now() - interval '1 second'"
        conn.execute(expired + " WHERE id = %s", [id])
        assert conn.execute("SELECT pushpop.requeue_expired()").fetchone() == (1,)
    wait_for(lambda: len(leases) == 2, what="delivery 2, to the same worker")
    assert leases[0] != leases[1]

    gates[0].set()
    wait_for(
        lambda: any("lease lost before it could be completed" in r.getMessage()
                    for r in caplog.records),
        what="delivery 1's completion to be refused",
    )  # fmt: skip
    # Extended every half second: twice more, so not merely once in flight as delivery 1 ended.
    for _ in range(2):
        before = lease_deadline(conn, id)
        wait_for(lambda: lease_deadline(conn, id) > before,  # noqa: B023 (called at once)
                 timeout=5, what="delivery 2's lease to be extended")  # fmt: skip
    assert running.worker._flight.free() == 1  # delivery 2 holds its slot
    gates[1].set()
    wait_for(lambda: state_of(sync_client, id) == "completed", what="delivery 2's completion")


def test_a_failing_handler_is_logged_as_a_warning_with_its_traceback(
    sync_client: pushpop.Client, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushpop")
    good = sync_client.push("jobs", b"good")
    bad = sync_client.push("jobs", b"bad")

    def handler(msg: pushpop.Message) -> None:
        if msg.payload == b"bad":
            raise ValueError("no good")

    start("jobs", handler, retry=pushpop.Retry(base=3600, cap=3600))
    wait_for(lambda: state_of(sync_client, good) == "completed", what="the good message")
    wait_for(lambda: (m := sync_client.find(bad)) and m.error, what="the bad message's failure")

    def outcome(id: Any) -> logging.LogRecord:
        record: logging.LogRecord = wait_for(
            lambda: next((r for r in caplog.records if getattr(r, "message_id", None) == str(id)),
                         None),
            what=f"the log line of {id}",
        )  # fmt: skip
        return record

    failed, done = outcome(bad), outcome(good)
    assert failed.levelno == logging.WARNING
    assert failed.exc_info is not None
    assert isinstance(failed.exc_info[1], ValueError)
    assert "failed, retry in" in failed.getMessage()
    assert (done.levelno, done.exc_info) == (logging.INFO, None)


def _flight_after(
    handler_seconds: float, pop_seconds: float, backlog: bool, payload: bytes = b"x"
) -> Flight[Any]:
    """A worker's flight (concurrency 4) once handlers took ``handler_seconds`` on messages
    with this payload, and a pop that found a ``backlog`` took ``pop_seconds``."""
    settings = WorkerSettings(topics=("jobs",), concurrency=4)
    flight: Flight[Any] = Flight(settings)
    for _ in range(4):
        msg = pushpop.Message(topic="jobs", payload=payload, id=uuid4(), _client=cast(Any, None))
        job = flight.add(msg)
        flight.start(job)
        job.took = handler_seconds
        flight.done(job)
    flight.popped(backlog, pop_seconds)
    return flight


def test_a_worker_pops_ahead_for_handlers_faster_than_its_pops_and_not_for_slow_ones() -> None:
    fast = _flight_after(handler_seconds=0.00001, pop_seconds=0.002, backlog=True)
    assert fast.ahead == POP_AHEAD
    assert fast.free() == 4 + POP_AHEAD
    some = _flight_after(handler_seconds=0.004, pop_seconds=0.002, backlog=True)
    assert some.ahead == 4  # what 4 handlers get through while a message goes round (2 pops)
    assert _flight_after(handler_seconds=1.0, pop_seconds=0.002, backlog=True).ahead == 0
    assert _flight_after(handler_seconds=0.0001, pop_seconds=0.002, backlog=False).ahead == 0
    big = _flight_after(0.0001, 0.002, backlog=True, payload=b"x" * (POP_AHEAD_BYTES // 10))
    assert big.ahead == 10  # what POP_AHEAD_BYTES holds of payloads that size


def test_popped_ahead_messages_never_run_more_handlers_than_concurrency(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    sync_client.push_many("jobs", [b"x"] * 1000)
    lock = threading.Lock()
    running, most, handled = 0, 0, 0

    def handler(msg: pushpop.Message) -> None:
        nonlocal running, most, handled
        with lock:
            running += 1
            most = max(most, running)
        with lock:
            running -= 1
            handled += 1

    start("jobs", handler, concurrency=2)
    wait_for(lambda: sync_client.stats()[0].completed == 1000, what="1000 completions")
    assert handled == 1000
    assert most <= 2


def test_stopping_releases_popped_ahead_messages_whose_handler_has_not_started(
    sync_client: pushpop.Client,
) -> None:
    ids = sync_client.push_many("jobs", [b"x"] * 2000)
    blocked = threading.Event()
    go_on = threading.Event()
    handled: list[Any] = []

    def handler(msg: pushpop.Message) -> None:
        if len(handled) >= 1500:  # fast until then, so the worker pops ahead
            blocked.set()
            go_on.wait(10)
        handled.append(msg.id)

    running = Running(pushpop.Worker(sync_client, "jobs", handler, concurrency=1))
    assert blocked.wait(10)
    running.worker.stop()
    go_on.set()
    running.stop()
    msgs = [m for i in ids if (m := sync_client.find(i)) is not None]
    states = Counter(m.state for m in msgs)
    # The handler that was running finished and was completed; none started after the stop,
    # and those popped ahead went back to the queue at once.
    assert states == {"completed": 1501, "ready": 2000 - 1501}
    assert len(handled) == 1501
    assert [m for m in msgs if m.error == RELEASED and m.state == "ready"]


def test_acknowledgements_of_popped_messages_go_through_the_workers_client(
    sync_client: pushpop.Client, start: Callable[..., Running]
) -> None:
    id = sync_client.push("jobs", b"x")
    clients: list[Any] = []

    def handler(msg: pushpop.Message) -> None:
        clients.append(msg._client)
        msg.complete()

    start("jobs", handler)
    wait_for(lambda: state_of(sync_client, id) == "completed", what="completion")
    assert clients == [sync_client]


def test_a_pop_that_does_not_wait_for_the_disk_still_leases_and_fences(
    sync_client: pushpop.Client,
) -> None:
    """The worker's pops (durable=False): the commit is not flushed first, nothing else changes."""
    id = sync_client.push("jobs", b"x")
    [msg] = sync_client.pop_many("jobs", 5, durable=False)
    assert (msg.id, msg.state, msg.attempts) == (id, "pending", 1)
    assert msg.lease is not None
    msg.complete()
    assert state_of(sync_client, id) == "completed"
    with pytest.raises(pushpop.InvalidType, match="durable"):
        sync_client.pop_many("jobs", 1, durable="no")  # type: ignore[arg-type]
