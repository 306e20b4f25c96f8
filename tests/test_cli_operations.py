"""The operator's subcommands: pause, resume, browse, retry, cancel and the schedules."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pushpop import cli

Conn = psycopg.Connection[tuple[Any, ...]]


def run(capsys: pytest.CaptureFixture[str], dsn: str, *argv: str) -> tuple[int, str, str]:
    """Runs ``pushpop ARGV --dsn DSN`` in this process: exit status, stdout, stderr."""
    status = cli.main([*argv, "--dsn", dsn])
    out, err = capsys.readouterr()
    return status, out, err


def test_pause_and_resume_say_what_changed(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    assert run(capsys, dsn, "pause", "emails") == (0, "paused 'emails'\n", "")
    assert run(capsys, dsn, "pause", "emails") == (0, "'emails' was paused already\n", "")
    _, out, _ = run(capsys, dsn, "stats", "--json")
    assert json.loads(out)[0]["paused"] is True
    assert run(capsys, dsn, "resume", "emails") == (0, "resumed 'emails'\n", "")
    assert run(capsys, dsn, "resume", "emails") == (0, "'emails' was not paused\n", "")


def test_browse_pages_through_a_topic_as_json(
    capsys: pytest.CaptureFixture[str], dsn: str, conn: Conn
) -> None:
    for i in range(3):
        conn.execute("SELECT pushpop.push('emails', %s)", [f"m{i}".encode()])
    status, out, _ = run(capsys, dsn, "browse", "emails", "--limit", "2", "--json")
    first = json.loads(out)
    assert [m["payload"] for m in first] == ["m0", "m1"]
    assert all(m["lease"] is None and m["state"] == "ready" for m in first)
    _, out, _ = run(capsys, dsn, "browse", "emails", "--after", first[-1]["id"], "--json")
    assert [m["payload"] for m in json.loads(out)] == ["m2"]
    status, out, _ = run(capsys, dsn, "browse", "emails", "--state", "pending")
    assert (status, out) == (0, "")
    status, out, _ = run(capsys, dsn, "browse", "emails")
    assert out.splitlines()[0].split()[:2] == ["ID", "STATE"]
    assert len(out.splitlines()) == 4


def test_cancel_then_retry_one_or_a_whole_topic(
    capsys: pytest.CaptureFixture[str], dsn: str, conn: Conn
) -> None:
    ids = [str(conn.execute("SELECT pushpop.push('jobs', 'x')").fetchone()[0]) for _ in range(3)]  # type: ignore[index]
    for id in ids:
        assert run(capsys, dsn, "cancel", id) == (0, f"cancelled {id}\n", "")
    status, _, err = run(capsys, dsn, "cancel", ids[0])
    assert (status, "not cancelled" in err) == (1, True)
    assert run(capsys, dsn, "retry", ids[0]) == (0, f"retried {ids[0]}\n", "")
    status, _, err = run(capsys, dsn, "retry", ids[0])
    assert (status, err) == (1, f"pushpop: no discarded message {ids[0]}\n")
    assert run(capsys, dsn, "retry", "--topic", "jobs", "--all") == (
        0, "retried 2 message(s) of 'jobs'\n", "",
    )  # fmt: skip
    status, _, err = run(capsys, dsn, "retry", "--topic", "jobs")
    assert (status, "--all" in err) == (1, True)


def test_schedule_list_and_unschedule(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    status, out, _ = run(capsys, dsn, "schedule", "pulse", "ticks", "hi", "--every", "30s")
    assert (status, out.startswith("scheduled 'pulse': next ")) == (0, True)
    run(capsys, dsn, "schedule", "nightly", "reports", "{}", "--cron", "0 3 * * *",
        "--timezone", "Europe/Berlin")  # fmt: skip
    _, out, _ = run(capsys, dsn, "schedules", "--json")
    listed = {s["name"]: s for s in json.loads(out)}
    assert listed["pulse"]["every"] == 30.0
    assert (listed["nightly"]["cron"], listed["nightly"]["timezone"]) == (
        "0 3 * * *",
        "Europe/Berlin",
    )
    _, out, _ = run(capsys, dsn, "schedules")
    assert "every 30s" in out
    status, _, err = run(capsys, dsn, "schedule", "bad", "t", "x", "--cron", "61 * * * *")
    assert status == 1
    assert err.startswith("pushpop: error: cron has a bad minute field")
    assert run(capsys, dsn, "unschedule", "pulse") == (0, "unscheduled 'pulse'\n", "")
    assert run(capsys, dsn, "unschedule", "pulse") == (1, "", "pushpop: no schedule 'pulse'\n")
