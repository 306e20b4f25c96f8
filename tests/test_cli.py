"""The ``pushpop`` command line, run in-process (``cli.main``) and as a real process."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pushpop
from pushpop import cli

Conn = psycopg.Connection[tuple[Any, ...]]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs the command in-process; returns (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:  # argparse: usage errors, --help, --version
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def run_process(*argv: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m pushpop.cli`` as its own process, DATABASE_URL set to ``dsn`` if given."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pushpop.cli", *argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def db_now(conn: Conn) -> Any:
    """The database's clock."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1.5", 1.5)],
)
def test_durations_accept_units_and_plain_seconds(text: str, seconds: float) -> None:
    assert cli.duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "argv",
    [
        ["pop", "jobs", "--lease", "5x"],
        ["pop", "jobs", "--lease", "0"],
        ["push", "jobs", "x", "--delay=-1s"],
        ["cleanup", "--grace", "soon"],
    ],
)
def test_bad_duration_is_a_usage_error_naming_the_option(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, _, err = run(capsys, *argv)
    option = next(a for a in argv if a.startswith("--")).split("=")[0]
    assert status == 2
    assert f"argument {option}: invalid duration" in err


@pytest.mark.parametrize("argv", [["--delay", "-1s"], ["--delay=-1s"], ["--delay", "-.5"]])
def test_a_negative_delay_is_refused_for_what_it_is(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, _, err = run(capsys, "push", "jobs", "x", *argv)
    assert status == 2
    assert "argument --delay: invalid duration" in err
    assert "delay must be zero or positive" in err


def test_worker_help_describes_the_command_and_shows_each_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "worker", "--help")
    assert status == 0
    text = " ".join(out.split())
    assert "Runs HANDLER on the topics' messages until SIGTERM/SIGINT" in text
    for option, default in [
        ("--lease", "5m"), ("--poll-interval", "1s"), ("--shutdown-timeout", "30s"),
        ("--retry-base", "1s"), ("--retry-cap", "1h"), ("--cleanup-grace", "1d"),
    ]:  # fmt: skip
        metavar = option.removeprefix("--").upper().replace("-", "_")
        help_text = text.split(f"{option} {metavar}")[-1].split(" --")[0]
        assert f"(default {default})" in help_text, option
    assert "--log-level {DEBUG,INFO,WARNING,ERROR,CRITICAL}" in text


def test_an_error_of_the_sql_reads_pushpop_once(
    capsys: pytest.CaptureFixture[str], dsn: str, conn: Conn
) -> None:
    conn.execute("SELECT pushpop.set_max_payload_bytes(5)")
    status, out, err = run(capsys, "--dsn", dsn, "push", "jobs", "too long for five bytes")
    assert (status, out) == (1, "")
    assert err.startswith("pushpop: error: payload is 23 bytes, more than the limit of 5 bytes")
    assert err.count("pushpop:") == 1


def test_push_then_pop_prints_the_message_with_its_text_payload(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    status, out, _ = run(capsys, "--dsn", dsn, "push", "jobs", "hello wörld")
    assert status == 0
    msg_id = uuid.UUID(out.strip())

    status, out, _ = run(capsys, "--dsn", dsn, "pop", "jobs", "--json")
    assert status == 0
    popped = json.loads(out)
    assert popped["id"] == str(msg_id)
    assert popped["topic"] == "jobs"
    assert popped["state"] == "pending"
    assert popped["attempts"] == 1
    assert datetime.fromisoformat(popped["lease_until"]) > datetime.fromisoformat(
        popped["state_time"]
    )  # fmt: skip
    assert popped["payload_encoding"] == "utf-8"
    assert popped["payload"] == "hello wörld"


def test_pop_text_output_says_how_the_payload_is_written(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    msg_id = client.push("jobs", b"plain text")
    status, out, _ = run(capsys, "--dsn", dsn, "pop", "jobs")
    assert status == 0
    assert f"id           {msg_id}" in out.splitlines()
    assert any(line.startswith("lease_until  20") for line in out.splitlines())
    assert out.splitlines()[-1] == "payload      (utf-8, 10 bytes) plain text"


def test_push_reads_binary_stdin_and_pop_shows_it_as_base64(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dsn: str,
    client: pushpop.Client,
) -> None:
    payload = b"\x00\xffbinary\x1b"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    status, out, _ = run(capsys, "--dsn", dsn, "push", "jobs")
    assert status == 0
    found = client.find(out.strip())
    assert found is not None
    assert found.payload == payload

    status, out, _ = run(capsys, "--dsn", dsn, "pop", "jobs", "--json")
    popped = json.loads(out)
    assert popped["payload_encoding"] == "base64"
    assert base64.b64decode(popped["payload"]) == payload


def test_push_dash_reads_stdin_too(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dsn: str,
    client: pushpop.Client,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from a pipe\n")))
    status, out, _ = run(capsys, "--dsn", dsn, "push", "jobs", "-")
    assert status == 0
    found = client.find(out.strip())
    assert found is not None
    assert found.payload == b"from a pipe\n"


def test_push_options_reach_the_message(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    wanted = uuid.uuid4()
    status, out, _ = run(
        capsys, "--dsn", dsn, "push", "jobs", "x", "--priority", "7", "--dedup-key", "k1",
        "--max-attempts", "3", "--id", str(wanted), "--delay", "1h",
    )  # fmt: skip
    assert status == 0
    assert out.strip() == str(wanted)
    msg = client.find(wanted)
    assert msg is not None
    assert (msg.priority, msg.dedup_key, msg.max_attempts) == (7, "k1", 3)
    assert msg.state_time is not None
    assert msg.created_at is not None
    assert msg.state_time - msg.created_at >= timedelta(hours=1)
    assert client.pop("jobs") is None  # delayed: not poppable yet


def test_pop_complete_acknowledges_the_message(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    msg_id = client.push("jobs", b"x")
    status, out, _ = run(capsys, "--dsn", dsn, "pop", "jobs", "--complete", "--json")
    assert status == 0
    assert json.loads(out)["state"] == "completed"
    found = client.find(msg_id)
    assert found is not None
    assert found.state == "completed"


def test_pop_lease_option_sets_the_lease_deadline(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client, conn: Conn
) -> None:
    msg_id = client.push("jobs", b"x")
    before = db_now(conn)
    status, _, _ = run(capsys, "--dsn", dsn, "pop", "jobs", "--lease", "90s")
    after = db_now(conn)
    assert status == 0
    found = client.find(msg_id)
    assert found is not None
    assert found.lease_until is not None
    assert before + timedelta(seconds=90) <= found.lease_until <= after + timedelta(seconds=90)


def test_pop_on_an_empty_topic_succeeds_without_a_message(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    status, out, err = run(capsys, "--dsn", dsn, "pop", "nothing-here")
    assert (status, out) == (0, "")
    assert "no message ready" in err
    status, out, _ = run(capsys, "--dsn", dsn, "pop", "nothing-here", "--json")
    assert (status, out.strip()) == (0, "null")


def test_find_prints_a_message_in_any_state(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    msg_id = client.push("jobs", b"x")
    msg = client.pop("jobs")
    assert msg is not None
    msg.discard("broken")
    status, out, _ = run(capsys, "--dsn", dsn, "find", str(msg_id), "--json")
    assert status == 0
    found = json.loads(out)
    assert (found["id"], found["state"], found["error"]) == (str(msg_id), "discarded", "broken")


def test_find_of_an_unknown_id_exits_1(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    status, out, err = run(capsys, "--dsn", dsn, "find", str(uuid.uuid4()), "--json")
    assert status == 1
    assert out.strip() == "null"
    assert "no message" in err


def test_stats_prints_an_aligned_table_and_json_counts(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    client.push_many("a-rather-long-topic-name", [b"1", b"2", b"3"])
    client.push("b", b"later", delay=3600)
    status, out, _ = run(capsys, "--dsn", dsn, "stats")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TOPIC", "READY", "SCHEDULED", "PENDING", "BLOCKED", "COMPLETED", "DISCARDED", "OLDEST",
        "READY",
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # every column right-aligned to one width
    assert lines[1].split()[:7] == ["a-rather-long-topic-name", "3", "0", "0", "0", "0", "0"]
    assert lines[2].split() == ["b", "0", "1", "0", "0", "0", "0", "-"]

    status, out, _ = run(capsys, "--dsn", dsn, "stats", "--json")
    rows = {row["topic"]: row for row in json.loads(out)}
    assert rows["a-rather-long-topic-name"]["ready"] == 3
    assert rows["a-rather-long-topic-name"]["oldest_ready"] is not None
    assert (rows["b"]["scheduled"], rows["b"]["oldest_ready"]) == (1, None)


def test_stats_of_an_empty_queue_says_so(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    assert run(capsys, "--dsn", dsn, "stats") == (0, "no messages\n", "")
    assert run(capsys, "--dsn", dsn, "stats", "--json") == (0, "[]\n", "")


def test_requeue_returns_expired_leases_to_the_queue(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client, conn: Conn
) -> None:
    msg_id = client.push("jobs", b"x")
    msg = client.pop("jobs", lease=0.001)
    assert msg is not None
    assert msg.lease_until is not None
    while db_now(conn) <= msg.lease_until:  # the lease lasts a millisecond
        pass
    status, out, _ = run(capsys, "--dsn", dsn, "requeue")
    assert (status, out) == (0, "moved 1 expired message(s)\n")
    found = client.find(msg_id)
    assert found is not None
    assert found.state == "ready"


def test_cleanup_deletes_finished_messages_only_after_the_grace_period(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    msg_id = client.push("jobs", b"x")
    msg = client.pop("jobs")
    assert msg is not None
    msg.complete()
    kept = run(capsys, "--dsn", dsn, "cleanup", "--grace", "1h")
    assert kept == (0, "deleted 0 finished message(s)\n", "")
    assert client.find(msg_id) is not None
    deleted = run(capsys, "--dsn", dsn, "cleanup", "--grace", "0")
    assert deleted == (0, "deleted 1 finished message(s)\n", "")
    assert client.find(msg_id) is None


def test_purge_deletes_a_topic_but_leaves_pending_messages(
    capsys: pytest.CaptureFixture[str], dsn: str, client: pushpop.Client
) -> None:
    client.push_many("jobs", [b"1", b"2", b"3"])
    other = client.push("other", b"x")
    pending = client.pop("jobs")
    assert pending is not None
    status, out, _ = run(capsys, "--dsn", dsn, "purge", "jobs")
    assert (status, out) == (0, "deleted 2 message(s) from 'jobs'\n")
    assert client.find(pending.id) is not None
    assert client.find(other) is not None


def test_migrate_brings_an_empty_database_up_to_date_once(
    capsys: pytest.CaptureFixture[str], empty_dsn: str
) -> None:
    status, out, _ = run(capsys, "migrate", "--dsn", empty_dsn)
    assert status == 0
    applied = out.splitlines()
    migrations, functions = pushpop.migrations.available(), pushpop.migrations.function_files()
    assert applied == [
        *(f"applied {pushpop.migrations.relative(m.path)}" for m in migrations),
        *(f"applied {pushpop.migrations.relative(path)}" for path in functions),
    ]
    assert applied[0] == "applied migrations/0001_baseline.sql"
    assert run(capsys, "migrate", "--dsn", empty_dsn) == (0, "up to date\n", "")


def test_dsn_works_before_or_after_the_subcommand_or_from_database_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert run(capsys, "--dsn", dsn, "push", "t", "before")[0] == 0
    assert run(capsys, "push", "t", "after", "--dsn", dsn)[0] == 0
    monkeypatch.setenv("DATABASE_URL", dsn)
    assert run(capsys, "push", "t", "from-env")[0] == 0
    stats = json.loads(run(capsys, "stats", "--json")[1])
    assert [(row["topic"], row["ready"]) for row in stats] == [("t", 3)]


def test_dsn_after_the_subcommand_wins_over_the_one_before(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    dead = f"host=127.0.0.1 port={free_port()} user=nobody"
    assert run(capsys, "--dsn", dead, "stats", "--json", "--dsn", dsn) == (0, "[]\n", "")


def test_argument_errors_print_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    bad = [["push", "", "x"], ["find", "not-a-uuid"], ["push", "t", "x", "--max-attempts", "0"]]
    for argv in bad:
        status, out, err = run(capsys, "--dsn", dsn, *argv)
        assert (status, out) == (1, "")
        assert err.startswith("pushpop: error: ")
        assert err.count("\n") == 1


def free_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_database_fails_fast_with_one_line_and_no_password() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=someone password=sekrit-pw dbname=x"
    started = time.monotonic()
    result = run_process("stats", dsn=dsn)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("pushpop: error: cannot connect to the database")
    assert result.stderr.count("\n") == 1
    assert "sekrit-pw" not in result.stderr


def test_unparsable_connection_string_is_not_echoed() -> None:
    result = run_process("--dsn", "host=127.0.0.1 password=sekrit pw", "stats")
    assert result.returncode == 1
    assert result.stderr.startswith("pushpop: error: invalid connection string")
    assert "sekrit" not in result.stderr
    assert "Traceback" not in result.stderr


def test_push_and_pop_round_trip_through_pipes(dsn: str) -> None:
    payload = "line one\nline two\n"
    pushed = subprocess.run(
        [sys.executable, "-m", "pushpop.cli", "push", "piped"],
        input=payload.encode(), capture_output=True, env={**os.environ, "DATABASE_URL": dsn},
        timeout=60, check=True,
    )  # fmt: skip
    popped = run_process("pop", "piped", "--json", "--complete", dsn=dsn)
    assert popped.returncode == 0
    message = json.loads(popped.stdout)
    assert message["id"] == pushed.stdout.decode().strip()
    assert message["payload"] == payload


def test_console_script_reports_its_version() -> None:
    script = Path(sys.executable).with_name("pushpop")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"pushpop {pushpop.__version__}"


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)
    assert status == 2
    assert "required: COMMAND" in err


def test_a_new_subcommand_needs_only_a_table_entry(capsys: pytest.CaptureFixture[str]) -> None:
    def hello_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name")

    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name} via {args.dsn}")
        return 0

    parser = cli.build_parser([*cli.COMMANDS, cli.Command("hello", "greet", hello_args, hello)])
    args = parser.parse_args(["--dsn", "x", "hello", "you"])
    assert args.run(args) == 0
    assert capsys.readouterr().out == "hello you via x\n"


def test_push_carries_headers_and_an_expiry_that_pop_shows(
    capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    status, out, err = run(
        capsys, "push", "t", "x", "--dsn", dsn, "--header", "who=ada", "--header", "q=a=b",
        "--expires-in", "1h",
    )  # fmt: skip
    assert (status, err) == (0, "")
    status, out, _ = run(capsys, "pop", "t", "--dsn", dsn, "--json")
    shown = json.loads(out)
    assert shown["headers"] == {"who": "ada", "q": "a=b"}
    assert shown["expires_at"] is not None
    status, out, err = run(capsys, "push", "t", "x", "--dsn", dsn, "--header", "nameless")
    assert status == 2
    assert "invalid header 'nameless': give it as NAME=VALUE" in err
