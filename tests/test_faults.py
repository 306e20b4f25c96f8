"""Faults done for real: the database restarts under load, connections are killed mid-call.

Restarts run on a throwaway cluster of their own (tests/cluster.py), never on the shared
server; killed connections are the test's own, on its own database. The figures each test
prints are the ones the README's "Guarantees, tested" reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from async_facade import SyncFacade
from cluster import Cluster
from faults import (
    BACKOFF_CAP,
    PICKUP_WITHIN,
    POOL_RETRY_GAP,
    RESUME_WITHIN,
    Producers,
    done_entries,
    first_done_after,
    gaps,
    log_lines,
    migrated_cluster,
    next_tries,
    query,
    report,
    server_binaries,
    states,
    worker_options,
)
from processes import Journal, Proc, Spawner
from psycopg.conninfo import make_conninfo
from waiting import wait_for

import pushpop
from pushpop.connection import redact
from pushpop.control import CONTROL_APP

pytestmark = pytest.mark.slow

# Restarts: messages pushed between faults.
BETWEEN_FAULTS = int(os.environ.get("PUSHPOP_FAULTS_BETWEEN", "150"))
# Killed connections: the application_name of the connections a test kills.
VICTIM = "pushpop-test-victim"
# Random kills: how long a killer terminates worker connections, and how often.
CHAOS_SECONDS = float(os.environ.get("PUSHPOP_FAULTS_CHAOS_SECONDS", "4"))
CHAOS_EVERY = 0.1


# -- the database restarts ----------------------------------------------------------------------


def test_database_restarts_under_load_lose_no_acknowledged_push_and_workers_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushpop.pool")  # the producers' reconnections
    bindir = server_binaries()
    with migrated_cluster(bindir) as db:
        dsn = db.dsn()
        journal = Journal(tmp_path / "journal.txt")
        spawn = Spawner(dsn, journal)
        spawn.env["PUSHPOP_TEST_LOG_LEVEL"] = "DEBUG"
        try:
            workers = [
                spawn.script("fault_worker.py", "load,ping-0", **worker_options()),
                spawn.script("fault_worker.py", "load,ping-1", **worker_options(asyncio=True)),
            ]
            restarts_under_load(dsn, db, journal, workers, caplog)
        finally:
            spawn.close()


def live_workers(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM pushpop.workers()")[0][0])


def control_connections(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                     [CONTROL_APP])[0][0])  # fmt: skip


def restarts_under_load(
    dsn: str, db: Cluster, journal: Journal, workers: list[Proc], caplog: pytest.LogCaptureFixture
) -> None:
    pids = [w.popen.pid for w in workers]
    wait_for(lambda: live_workers(dsn) == 2, timeout=20, what="both workers registered")
    outages: list[tuple[float, float]] = []
    resumed: list[float] = []

    def wait_for_resumption(back: float) -> None:
        firsts = wait_for(
            lambda: (
                (f := [first_done_after(journal, pid, back) for pid in pids])
                and all(t is not None for t in f)
                and f
            ),
            timeout=30,
            what="both workers handling messages again",
        )
        resumed.extend(t - back for t in firsts)

    with Producers(dsn, "load") as producers:

        def more_pushes() -> None:
            mark = len(producers.acked)
            wait_for(lambda: len(producers.acked) >= mark + BETWEEN_FAULTS, timeout=30,
                     what=f"{BETWEEN_FAULTS} more pushes")  # fmt: skip

        more_pushes()
        down = time.time()
        db.restart("fast")
        outages.append((down, time.time()))
        wait_for_resumption(outages[-1][1])
        more_pushes()

        # A crash, and an outage long enough for every backoff to reach its cap.
        down = time.time()
        db.stop("immediate")
        wait_for(
            lambda: all(BACKOFF_CAP in next_tries(w) for w in workers),
            timeout=30,
            what="the workers' reconnection backoff reaching its cap",
        )
        db.start()
        outages.append((down, time.time()))
        wait_for_resumption(outages[-1][1])
        # LISTEN is back as soon as the pops get through, not after the control's backoff.
        wait_for(lambda: control_connections(dsn) == 2, timeout=PICKUP_WITHIN,
                 what="both workers LISTENing again")  # fmt: skip
        more_pushes()
    producers.stop()

    # Every push that raised said so with a pushpop.Error; retried with its id, it is stored once.
    assert all(isinstance(exc, pushpop.Error) for _, exc in producers.raised), producers.raised
    raised = [id for id, _ in producers.raised]
    stored_anyway = len(raised) - states(dsn, raised)["missing"]
    with pushpop.Client(dsn) as client:
        for id in raised:
            assert str(client.push("load", b"retried", id=id)) == id
        everything = producers.acked + raised
        wait_for(lambda: states(dsn, everything)["completed"] == len(everything), timeout=60,
                 what="every acknowledged or retried push completed")  # fmt: skip
        assert query(dsn, "SELECT count(*) FROM pushpop.messages WHERE topic = 'load'")[0][0] == (
            len(everything)
        ), "a retried push was stored twice"
        executions = [d.id for d in done_entries(journal) if d.id in set(everything)]
        assert set(executions) == set(everything)

        # The restarts are over: LISTEN is back, an idle worker picks a push up at once.
        pickups = []
        for i, pid in enumerate(pids):
            pushed = time.time()
            id = str(client.push(f"ping-{i}", b"ping"))
            done = wait_for(
                lambda id=id: [d for d in done_entries(journal) if d.id == id],  # type: ignore[misc]
                timeout=5,
                what="the ping handled",
            )[0]
            assert done.pid == pid
            pickups.append(done.at - pushed)
        assert max(pickups) < PICKUP_WITHIN, pickups
        assert live_workers(dsn) == 2

    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(timeout=30) == 0, w.output()
    check_reconnection_logs(workers, outages)
    assert max(resumed) <= RESUME_WITHIN, resumed

    # The producers waited through the long outage: their pool kept trying, never backing off.
    down, up = outages[-1]
    pool_tries = [
        r.created for r in caplog.records
        if r.name == "pushpop.pool" and r.getMessage().startswith("error connecting")
        and down < r.created < up
    ]  # fmt: skip
    assert pool_tries
    pool_gap = max(gaps([down, *pool_tries, up]))
    assert pool_gap <= POOL_RETRY_GAP, pool_tries

    report(
        "database restarts", restarts="fast, immediate", pushes_acked=len(producers.acked),
        pushes_raised=len(raised), raised_but_stored=stored_anyway, lost=0,
        executions=len(executions), duplicates=len(executions) - len(everything),
        resumed_after_s=[round(r, 2) for r in resumed], pool_retry_gap_s=round(pool_gap, 2),
        pickup_ms=[round(p * 1000, 1) for p in pickups],
    )  # fmt: skip


def check_reconnection_logs(workers: list[Proc], outages: list[tuple[float, float]]) -> None:
    """One line when the database went, one when it came back, per outage and worker; the
    control connection's tries at most BACKOFF_CAP apart."""
    for w in workers:
        gone = log_lines(w, "pushpop.worker", "database unavailable")
        back = log_lines(w, "pushpop.worker", "database is back")
        assert len(gone) == len(outages) == len(back), w.output()
        for (down, up), (gone_at, _), (back_at, _) in zip(outages, gone, back, strict=True):
            assert down <= gone_at <= back_at <= up + RESUME_WITHIN
        tries = next_tries(w)
        assert max(tries) == BACKOFF_CAP, tries


# -- connections killed mid-call ----------------------------------------------------------------


def backends(dsn: str, *apps: str) -> list[int]:
    """Server pids of this database's connections with one of these application names."""
    rows = query(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND application_name = ANY(%s)",
        [list(apps)],
    )
    return [int(row[0]) for row in rows]


def terminate(dsn: str, pids: list[int]) -> int:
    """Terminates these backends and waits until they are gone; how many were."""
    rows = query(
        dsn,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
        " FROM unnest(%s::integer[]) AS pid",
        [pids],
    )
    return int(rows[0][0])


def test_killing_a_workers_connections_while_its_handler_holds_a_lease_loses_nothing(
    dsn: str,
) -> None:
    started, release = threading.Event(), threading.Event()
    handled: list[tuple[str, float]] = []

    def handler(msg: pushpop.Message) -> None:
        handled.append((str(msg.id), time.monotonic()))
        started.set()
        release.wait(10)

    victim = make_conninfo(dsn, application_name=VICTIM)
    with pushpop.Client(victim) as worker_client, pushpop.Client(dsn) as client:
        worker = pushpop.Worker(worker_client, "jobs", handler, **worker_options())
        thread = threading.Thread(target=worker.run, name="test-worker")
        thread.start()
        try:
            wait_for(lambda: backends(dsn, CONTROL_APP), what="the control connection")
            first = str(client.push("jobs", b"first"))
            wait_for(started.is_set, what="the handler to hold the lease")
            killed = backends(dsn, VICTIM, CONTROL_APP)
            assert terminate(dsn, killed) == len(killed) >= 2  # the pool's and the LISTEN one
            release.set()
            wait_for(lambda: client.find(first).state == "completed",  # type: ignore[union-attr]
                     what="the message completed")  # fmt: skip
            assert client.find(first).attempts == 1  # type: ignore[union-attr]

            # The LISTEN connection came back by itself: a push wakes the idle worker at once.
            wait_for(lambda: listening(dsn), what="the control connection listening again")
            pushed = time.monotonic()
            client.push("jobs", b"second")
            wait_for(lambda: len(handled) == 2, timeout=5, what="the second message handled")
            assert handled[1][1] - pushed < PICKUP_WITHIN
        finally:
            release.set()
            worker.stop()
            thread.join(30)
        assert handled[0][0] == first
        assert client.stats()[0].completed == 2
        assert client.stats()[0].pending == 0


def listening(dsn: str) -> bool:
    """Whether a worker's control connection has LISTENed and heartbeaten since it connected."""
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s AND state = 'idle' AND query NOT LIKE 'LISTEN%%'",
        [CONTROL_APP],
    )
    return bool(rows[0][0])


@pytest.mark.parametrize("call", ["push", "push_many"])
def test_a_push_killed_mid_statement_raises_unavailable_and_the_same_client_carries_on(
    dsn: str, call: str
) -> None:
    id = str(uuid.uuid4())

    def push(client: pushpop.Client) -> None:
        if call == "push":
            client.push("cut", b"x", id=id)
        else:
            client.push_many("cut", [b"x"] * 1000)

    with pushpop.Client(make_conninfo(dsn, application_name=VICTIM)) as client:
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                push(client)
            except Exception as exc:  # judged below
                outcome.append(exc)
            else:
                outcome.append(None)

        # Another transaction holds the table: the push waits inside its own, and is killed there.
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE pushpop.messages IN SHARE MODE")
            thread = threading.Thread(target=attempt, name="test-push")
            thread.start()
            waiting = wait_for(lambda: blocked(dsn), what="the push waiting mid-statement")
            assert terminate(dsn, waiting) == 1
            thread.join(10)
            blocker.rollback()
        assert len(outcome) == 1
        assert isinstance(outcome[0], pushpop.Unavailable), outcome
        assert count(dsn, "cut") == 0  # the killed transaction left nothing behind

        push(client)  # the same client, at once: no error
        push(client)  # again: the same id is stored once; push_many adds its 1000 again
        assert count(dsn, "cut") == (1 if call == "push" else 2000)


def blocked(dsn: str) -> list[int]:
    rows = query(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [VICTIM],
    )
    return [int(row[0]) for row in rows]


def count(dsn: str, topic: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM pushpop.messages WHERE topic = %s", [topic])[0][0])


@pytest.fixture(params=["sync", "async"])
def victim_client(request: pytest.FixtureRequest, dsn: str) -> Iterator[Any]:
    """A client with four pooled connections named VICTIM: the sync one, then the async one."""
    victim = make_conninfo(dsn, application_name=VICTIM)
    made: AbstractContextManager[Any] = (
        pushpop.Client(victim, min_size=4)
        if request.param == "sync"
        else SyncFacade(pushpop.AsyncClient(victim, min_size=4))
    )
    with made as client:
        yield client


def test_a_client_whose_idle_connections_were_killed_succeeds_on_its_next_call(
    dsn: str, victim_client: Any
) -> None:
    for _ in range(3):
        wait_for(lambda: len(backends(dsn, VICTIM)) >= 4, what="four pooled connections")
        assert terminate(dsn, backends(dsn, VICTIM)) >= 4
        started = time.monotonic()
        victim_client.push("idle", b"x")  # would raise Unavailable on a dead connection
        msg = victim_client.pop("idle")
        msg.complete()
        assert time.monotonic() - started < 1.0, "recovery took a reconnection backoff"
    assert victim_client.stats()[0].completed == 3


def test_random_kills_of_worker_connections_lose_nothing_and_leave_no_lease_behind(
    dsn: str, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.txt")
    spawn = Spawner(make_conninfo(dsn, application_name=VICTIM), journal)
    killer_done = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not killer_done.wait(CHAOS_EVERY):
            if pids := backends(dsn, VICTIM, CONTROL_APP):
                kills.append(terminate(dsn, [random.choice(pids)]))

    try:
        spawn.script("fault_worker.py", "chaos", **worker_options())
        spawn.script("fault_worker.py", "chaos", **worker_options(asyncio=True))
        with Producers(dsn, "chaos", pause=0.01) as producers:
            wait_for(lambda: len(backends(dsn, CONTROL_APP)) == 2, what="both workers up")
            thread = threading.Thread(target=killer, name="test-killer")
            thread.start()
            try:
                killer_done.wait(CHAOS_SECONDS)  # the test's length, not a wait for a condition
            finally:
                killer_done.set()
                thread.join(10)
        acked = producers.acked
        assert all(isinstance(exc, pushpop.Error) for _, exc in producers.raised)
        wait_for(lambda: states(dsn, acked)["completed"] == len(acked), timeout=30,
                 what="every acknowledged push completed")  # fmt: skip
        assert query(dsn, "SELECT count(*) FROM pushpop.messages WHERE state = 'pending'") == [(0,)]
        executions = [d.id for d in done_entries(journal)]
        assert set(acked) <= set(executions)
    finally:
        spawn.close()
    report(
        "random connection kills", seconds=CHAOS_SECONDS, connections_killed=sum(kills),
        pushes_acked=len(acked), pushes_raised=len(producers.raised), lost=0,
        duplicates=len(executions) - len(set(executions)),
    )  # fmt: skip


# -- no secrets in logs ---------------------------------------------------------------------------

SECRET = "s3cret-never-printed"  # noqa: S105 (the password the test hunts for)


def test_passwords_never_reach_errors_or_worker_logs(tmp_path: Path) -> None:
    bindir = server_binaries()
    with migrated_cluster(bindir) as db:
        with db.connect() as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'the-right-one'")
        db.allow_first("host all app 127.0.0.1/32 scram-sha-256")
        db.reload()
        wrong = db.dsn(user="app", password=SECRET)

        # A refused password is no outage: the client says so at once, and no retry follows.
        for open_client in (
            lambda: pushpop.Client(wrong, timeout=1),
            lambda: asyncio.run(pushpop.AsyncClient(wrong, timeout=1).open()),
        ):
            started = time.monotonic()
            with pytest.raises(pushpop.DatabaseError) as raised:
                open_client()
            assert time.monotonic() - started < 5
            assert not isinstance(raised.value, pushpop.Unavailable)
            assert "password authentication failed" in str(raised.value)
            assert SECRET not in chain_text(raised.value)

        spawn = Spawner(wrong, Journal(tmp_path / "journal.txt"))
        try:
            for options in (worker_options(), worker_options(asyncio=True)):
                proc = spawn.script("fault_worker.py", "t", **options)
                assert proc.wait(timeout=20) != 0
                assert "password authentication failed" in proc.output()
                assert SECRET not in proc.output()
                assert not log_lines(proc, "pushpop.worker", "database unavailable")
        finally:
            spawn.close()


def chain_text(exc: BaseException | None) -> str:
    """The text of an exception and of the causes and contexts a traceback would print."""
    seen = []
    while exc is not None:
        seen.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n".join(seen)


@pytest.mark.parametrize("flavour", [pushpop.Client, pushpop.AsyncClient])
def test_an_unparsable_connection_string_is_refused_without_echoing_it(flavour: type) -> None:
    with pytest.raises(pushpop.InvalidArgument, match="invalid connection string") as raised:
        flavour(f"host=127.0.0.1 password={SECRET} pw")
    assert SECRET not in chain_text(raised.value)
    assert '"pw"' not in chain_text(raised.value)


def test_a_password_echoed_in_a_message_is_masked() -> None:
    text = f'could not frob "{SECRET}"'
    assert redact(text, f"host=x password={SECRET}") == 'could not frob "***"'
    assert redact(text, "host=x") == text
