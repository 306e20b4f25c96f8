"""``pushpop worker`` and ``pushpop workers`` from the command line."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import PUSHPOP_CLI, Journal, Spawner
from waiting import wait_for

import pushpop
from pushpop import cli


@pytest.fixture
def spawn(dsn: str, tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(dsn, Journal(tmp_path / "journal.txt"))
    yield spawner
    spawner.close()


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn) as c:
        yield c


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_the_worker_logs_one_json_line_per_message_outcome(
    sync_client: pushpop.Client, spawn: Spawner
) -> None:
    ok = sync_client.push("jobs", json={"sleep": 0})
    proc = spawn.cli("handlers:record", "jobs", "--log-format", "json")
    wait_for(lambda: any(r.get("message_id") == str(ok) for r in json_lines(proc.lines)))
    bad = sync_client.push("fails", b"x", max_attempts=1)
    other = spawn.cli("handlers:fail", "fails", "--log-format", "json")
    wait_for(lambda: any(r.get("message_id") == str(bad) for r in json_lines(other.lines)))
    for p in (proc, other):
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.output()

    (done,) = [r for r in json_lines(proc.lines) if r.get("message_id") == str(ok)]
    assert (done["topic"], done["attempt"], done["outcome"]) == ("jobs", 1, "completed")
    assert done["duration_ms"] >= 0
    assert done["level"] == "INFO"
    (failed,) = [r for r in json_lines(other.lines) if r.get("message_id") == str(bad)]
    assert failed["outcome"].startswith("failed, discarded: RuntimeError: attempt 1 failed")


def test_workers_lists_the_live_workers(
    sync_client: pushpop.Client, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    worker = pushpop.Worker(sync_client, ["emails", "sms"], lambda m: None, concurrency=2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(sync_client.workers, what="registration")
        assert cli.main(["workers", "--dsn", dsn]) == 0
        table = capsys.readouterr().out
        assert str(worker.id) in table
        assert "emails,sms" in table
        assert cli.main(["workers", "--json", "--dsn", dsn]) == 0
        (info,) = json.loads(capsys.readouterr().out)
        assert (info["id"], info["topics"], info["concurrency"]) == (
            str(worker.id), ["emails", "sms"], 2,
        )  # fmt: skip
    finally:
        worker.stop()
        thread.join(30)
    assert cli.main(["workers", "--dsn", dsn]) == 0
    assert capsys.readouterr().out == "no live workers\n"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no_colon", "module:function"),
        ("no_such_module_here:run", "cannot import 'no_such_module_here'"),
        ("json:no_such_function", "has no function 'no_such_function'"),
    ],
)
def test_a_bad_handler_is_one_clear_error_line(
    capsys: pytest.CaptureFixture[str], dsn: str, spec: str, problem: str
) -> None:
    assert cli.main(["worker", spec, "--topic", "t", "--dsn", dsn]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("pushpop: error: ")
    assert problem in err


def test_the_console_script_exists() -> None:
    assert Path(PUSHPOP_CLI).exists()
