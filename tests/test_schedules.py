"""Periodic messages: exactly one message per tick, across a fleet, whatever dies.

``pushpop.run_schedules()`` pushes a due tick in the statement that moves the schedule on, so
overlapping callers never push a tick twice; the maintenance leader calls it, and when the
leader is killed another worker takes over within 2 s.
"""

from __future__ import annotations

import itertools
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from processes import Journal, Spawner
from psycopg import errors as pg_errors
from waiting import wait_for

from pushpop.errors import InvalidArgument

Conn = psycopg.Connection[tuple[Any, ...]]


def one(conn: Conn, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def ticks(conn: Conn, topic: str = "ticks") -> list[datetime]:
    """The tick each message of ``topic`` was pushed for, in order."""
    return [
        datetime.fromisoformat(r[0])
        for r in conn.execute(
            "SELECT headers->>'pushpop-tick' FROM pushpop.messages WHERE topic = %s"
            " ORDER BY 1", [topic],
        )
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ("NULL, 't', 'x', every => '1 second'", "name"),
        ("'', 't', 'x', every => '1 second'", "name"),
        ("'s', '', 'x', every => '1 second'", "topic"),
        ("'s', 't', NULL, every => '1 second'", "payload"),
        ("'s', 't', 'x'", "cron and every"),
        ("'s', 't', 'x', cron => '* * * * *', every => '1 second'", "cron and every"),
        ("'s', 't', 'x', every => '-1 second'", "every"),
        ("'s', 't', 'x', every => '0'", "every"),
        ("'s', 't', 'x', cron => '61 * * * *'", "cron"),
        ("'s', 't', 'x', cron => '* * * *'", "cron"),
        ("'s', 't', 'x', cron => '* * * * *', timezone => 'Mars/Olympus'", "timezone"),
        ("'s', 't', 'x', cron => '* * * * *', timezone => NULL", "timezone"),
        ("'s', 't', 'x', every => '1 second', priority => NULL", "priority"),
        ("'s', 't', 'x', cron => '0 0 30 2 *'", "cron"),
    ],
)
def test_bad_schedules_raise_22023_naming_the_argument_and_change_nothing(
    conn: Conn, args: str, argument: str
) -> None:
    conn.execute("SELECT pushpop.schedule('s', 't', 'kept', every => '1 hour')")
    before = conn.execute("SELECT * FROM pushpop.schedules").fetchall()
    with pytest.raises(pg_errors.InvalidParameterValue, match=argument):
        conn.execute(f"SELECT pushpop.schedule({args})")
    assert conn.execute("SELECT * FROM pushpop.schedules").fetchall() == before


def test_unschedule_of_an_unknown_name_returns_false(conn: Conn) -> None:
    assert one(conn, "SELECT pushpop.unschedule('none')") is False
    with pytest.raises(pg_errors.InvalidParameterValue, match="name"):
        conn.execute("SELECT pushpop.unschedule(NULL)")


def backdate(conn: Conn, name: str, by: str) -> None:
    """As if the schedule had been made ``by`` earlier (time passes without sleeping)."""
    conn.execute(
        "UPDATE pushpop.schedules SET anchor_at = anchor_at - %(by)s::interval,"
        " next_run_at = next_run_at - %(by)s::interval WHERE name = %(name)s",
        {"by": by, "name": name},
    )


def cadence(conn: Conn) -> tuple[datetime, datetime]:
    """The only schedule's anchor and next tick."""
    row = conn.execute("SELECT anchor_at, next_run_at FROM pushpop.schedules").fetchone()
    assert row is not None
    return row[0], row[1]


def test_every_ticks_from_one_interval_after_scheduling_without_drift(conn: Conn) -> None:
    conn.execute("SELECT pushpop.schedule('s', 'ticks', 'x', every => '10 seconds')")
    anchor, first = cadence(conn)
    assert first - anchor == timedelta(seconds=10)
    assert one(conn, "SELECT pushpop.run_schedules()") == 0  # not due yet
    backdate(conn, "s", "10.5 seconds")
    assert one(conn, "SELECT pushpop.run_schedules()") == 1
    assert one(conn, "SELECT pushpop.run_schedules()") == 0  # the tick is spent
    anchor2, next_run = conn.execute(
        "SELECT anchor_at, next_run_at FROM pushpop.schedules"
    ).fetchone()  # type: ignore[misc]
    assert next_run - anchor2 == timedelta(seconds=20)  # on the cadence, not now + 10 s


def test_after_downtime_one_catch_up_message_never_a_burst(conn: Conn) -> None:
    conn.execute("SELECT pushpop.schedule('s', 'ticks', 'x', every => '1 second')")
    backdate(conn, "s", "1 hour")  # 3,600 ticks missed
    assert one(conn, "SELECT pushpop.run_schedules()") == 1
    assert one(conn, "SELECT pushpop.run_schedules()") == 0
    assert one(conn, "SELECT next_run_at > now() FROM pushpop.schedules") is True
    assert len(ticks(conn)) == 1


def test_cron_schedules_tick_on_the_cron(conn: Conn) -> None:
    conn.execute(
        "SELECT pushpop.schedule('s', 'ticks', 'x', cron => '30 9 * * MON-FRI',"
        " timezone => 'Europe/Berlin')"
    )
    next_run = one(conn, "SELECT next_run_at FROM pushpop.schedules()")
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 30, True)


def test_overlapping_callers_push_each_tick_once(dsn: str, conn: Conn) -> None:
    conn.execute("SELECT pushpop.schedule('s', 'ticks', 'x', every => '1 second')")
    backdate(conn, "s", "1.5 seconds")
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        assert one(a, "SELECT pushpop.run_schedules()") == 1  # a holds the row, uncommitted
        assert one(b, "SELECT pushpop.run_schedules()") == 0  # skips it
        a.commit()
        b.commit()
    assert len(ticks(conn)) == 1


def test_the_schedule_controls_through_the_client(client: Any, conn: Conn) -> None:
    client.schedule("nightly", "reports", json={"kind": "nightly"}, cron="0 3 * * *",
                    timezone="America/New_York")  # fmt: skip
    client.schedule("pulse", "ticks", b"x", every=30)
    client.schedule("pulse", "ticks", b"y", every=timedelta(minutes=1))  # replaces
    got = client.schedules()
    assert [(s.name, s.topic, s.cron, s.every, s.timezone) for s in got] == [
        ("nightly", "reports", "0 3 * * *", None, "America/New_York"),
        ("pulse", "ticks", None, timedelta(minutes=1), "UTC"),
    ]
    assert all(s.last_run_at is None and s.next_run_at > datetime.now(UTC) for s in got)
    with pytest.raises(InvalidArgument, match="cron and every"):
        client.schedule("x", "t", b"x")
    with pytest.raises(InvalidArgument, match="cron"):
        client.schedule("x", "t", b"x", cron="61 * * * *")
    with pytest.raises(InvalidArgument, match="timezone"):
        client.schedule("x", "t", b"x", cron="* * * * *", timezone="Nowhere/Town")
    assert client.unschedule("pulse") is True
    assert client.unschedule("pulse") is False
    backdate(conn, "nightly", "1 day")
    assert client.run_schedules() == 1
    msg = client.pop("reports")
    assert msg.json() == {"kind": "nightly"}
    assert msg.headers["pushpop-schedule"] == "nightly"


# --- A fleet of worker processes --------------------------------------------------------------


def leader_pid(conn: Conn) -> int | None:
    """The pid of the worker that leads maintenance, while its lead lasts."""
    row = conn.execute(
        "SELECT w.pid FROM pushpop.maintenance_leader AS l JOIN pushpop.workers AS w"
        " ON w.id = l.worker WHERE l.until >= now()"
    ).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.slow
def test_three_workers_and_a_killed_leader_push_exactly_one_message_per_tick(
    dsn: str, conn: Conn, tmp_path: Path
) -> None:
    spawner = Spawner(dsn, Journal(tmp_path / "journal.txt"))
    try:
        procs = {}
        for _ in range(3):
            proc = spawner.script("worker_script.py", "work", poll_interval=0.2)
            procs[proc.popen.pid] = proc
        wait_for(lambda: one(conn, "SELECT count(*) FROM pushpop.workers") == 3,
                 what="three workers")  # fmt: skip
        conn.execute("SELECT pushpop.schedule('s', 'ticks', 'x', every => '1 second')")
        anchor = one(conn, "SELECT anchor_at FROM pushpop.schedules")
        wait_for(lambda: len(ticks(conn)) >= 3, what="three ticks", timeout=10)
        # Kill the leader right after it pushed a tick.
        seen = len(ticks(conn))
        wait_for(lambda: len(ticks(conn)) > seen, what="the next tick", timeout=5)
        pid = wait_for(lambda: leader_pid(conn), what="a leader")
        procs[pid].popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        procs[pid].wait(10)
        wait_for(lambda: leader_pid(conn) not in (None, pid), what="a new leader", timeout=5)
        takeover = time.monotonic() - killed
        after_kill = len(ticks(conn))
        wait_for(lambda: len(ticks(conn)) >= after_kill + 4, what="four more ticks", timeout=10)
        got = ticks(conn)
    finally:
        spawner.close()
    assert takeover <= 2.0, f"a surviving worker took over {takeover:.2f} s after the kill"
    assert len(got) == len(set(got)), "a tick was pushed twice"
    steps = [(t - anchor) / timedelta(seconds=1) for t in got]
    assert all(abs(s - round(s)) < 1e-6 for s in steps), "ticks off the cadence"
    gaps = [round(b - a) for a, b in itertools.pairwise(steps)]
    # One message per tick, except the catch-up after the takeover: one message for the
    # ticks missed while no worker led (at most 2 s), never a burst.
    assert gaps[0] == 1
    assert sorted(gaps)[:-1] == [1] * (len(gaps) - 1), gaps
    assert max(gaps) <= 3, gaps
