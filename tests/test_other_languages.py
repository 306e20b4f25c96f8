"""The Node.js and psql examples speak pushpop's SQL API with the Python client on one queue.

A message pushed by Python is completed by Node and the other way round; the Node worker
sleeps until a push with the documented wake-up protocol and takes ``false`` from an
acknowledgement as a lost lease. Without ``node`` or the example's ``npm ci``, the Node tests
skip on a developer's machine and fail under CI (``CI=true``), whose ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

import pushpop
from pushpop.testing import assert_pushed, fast_forward, pushed

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "example" / "node"
PSQL_WORKER = ROOT / "example" / "psql" / "worker.sh"
TIMEOUT = 30.0


def _missing_node() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        return "the example's packages are not installed: `npm ci` in example/node"
    return None


def as_url(dsn: str) -> str:
    """``dsn`` as the postgresql:// URL that node-postgres reads, with the values libpq
    settled on (node-postgres reads no key=value string and has its own defaults)."""
    with psycopg.connect(dsn) as conn:
        info = conn.info
        user, password, host = info.user, info.password, info.host
        port, dbname = info.port, info.dbname
    login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{login}@{quote(host, safe='')}:{port}/{quote(dbname, safe='')}"


def skip_unless_ci(missing: str) -> None:
    """Skips the test, or fails it under CI, where .ci/run installs what the examples need."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"this example must run in CI: {missing}")
    pytest.skip(missing)


@pytest.fixture
def node() -> str:
    """The node executable; skips (fails under CI) when the example cannot run."""
    missing = _missing_node()
    if missing is not None:
        skip_unless_ci(missing)
    found = shutil.which("node")
    assert found is not None
    return found


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn) as c:
        yield c


class NodeWorker:
    """``node worker.js`` running, its JSON event lines read as they come."""

    def __init__(self, node: str, dsn: str, *args: str) -> None:
        env = {**os.environ, "DATABASE_URL": as_url(dsn)}
        self.process = subprocess.Popen(
            [node, "worker.js", *args], cwd=NODE_DIR, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, name="node-worker-reader")
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def expect(self, event: str) -> dict[str, Any]:
        """The next event, which must be ``event``."""
        try:
            got = self.events.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the Node worker said nothing for {TIMEOUT} s; expected {event!r}")
        assert got is not None, f"the Node worker ended: {self.stop()}"
        assert got["event"] == event, got
        return got

    def step(self) -> None:
        """Lets a ``--step`` worker acknowledge its message."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self) -> str:
        """Stops the worker (SIGTERM) and returns what it wrote to standard error."""
        if self.process.poll() is None:
            self.process.terminate()
        _, err = self.process.communicate(timeout=TIMEOUT)
        self.reader.join(TIMEOUT)
        return err


@pytest.fixture
def start_worker(node: str, dsn: str) -> Iterator[Any]:
    started: list[NodeWorker] = []

    def start(*args: str) -> NodeWorker:
        started.append(NodeWorker(node, dsn, *args))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def run_node(node: str, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [node, *args], cwd=NODE_DIR, env={**os.environ, "DATABASE_URL": as_url(dsn)},
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_a_message_pushed_by_python_wakes_the_sleeping_node_worker_which_completes_it(
    start_worker: Any, sync_client: pushpop.Client
) -> None:
    # A poll interval far longer than the test: only the NOTIFY can wake the worker in time.
    worker = start_worker("orders", "--poll-ms", "600000")
    worker.expect("sleeping")

    order = sync_client.push("orders", json={"order": 7}, headers={"from": "python"})
    popped = worker.expect("popped")
    completed = worker.expect("completed")
    assert popped["id"] == completed["id"] == str(order)
    assert completed["value"] == {"order": 7}
    found = sync_client.find(order)
    assert found is not None
    assert (found.state, found.attempts) == ("completed", 1)
    worker.expect("sleeping")  # and back to sleep, registered again


def test_messages_pushed_by_node_are_completed_by_python(
    node: str, dsn: str, sync_client: pushpop.Client
) -> None:
    result = run_node(node, dsn, "producer.js", "orders", '{"order": 1}', '{"order": 2}')
    ids = result.stdout.split()

    assert [str(m.id) for m in assert_pushed(sync_client, "orders", count=2)] == ids
    messages = sync_client.pop_many("orders", 10)
    assert [m.json() for m in messages] == [{"order": 1}, {"order": 2}]
    sync_client.complete_many(messages)
    assert {m.state for m in pushed(sync_client, "orders")} == {"completed"}


def test_the_node_worker_defers_a_failed_message_and_completes_its_retry(
    start_worker: Any, sync_client: pushpop.Client
) -> None:
    failing = sync_client.push("orders", json={"fail": True})

    first = start_worker("orders", "--until-idle")
    first.expect("popped")
    assert first.expect("deferred")["reason"] == "failing the first attempt, as asked"
    first.expect("stopped")
    [waiting] = pushped = pushed(sync_client, "orders")
    assert pushped[0].id == failing
    assert waiting.state_time is not None
    assert waiting.created_at is not None
    assert waiting.state_time - waiting.created_at > timedelta(minutes=59)  # an hour later

    fast_forward(sync_client, "orders")
    second = start_worker("orders", "--until-idle")
    assert second.expect("popped")["attempts"] == 2
    second.expect("completed")
    found = sync_client.find(failing)
    assert found is not None
    assert (found.state, found.attempts, found.error) == (
        "completed",
        2,
        "failing the first attempt, as asked",
    )


def test_the_node_worker_takes_false_from_complete_as_a_lost_lease(
    start_worker: Any, sync_client: pushpop.Client
) -> None:
    order = sync_client.push("orders", json={"order": 3})
    worker = start_worker("orders", "--step", "--poll-ms", "600000")
    assert worker.expect("popped")["id"] == str(order)

    # Its lease lapses while the handler runs, and Python gets the message.
    fast_forward(sync_client, "orders", timedelta(hours=1))
    assert sync_client.requeue_expired() == 1
    mine = sync_client.pop("orders")
    assert mine is not None
    assert mine.id == order

    worker.step()
    lost = worker.expect("lease lost")
    assert (lost["id"], lost["outcome"]) == (str(order), "completed")
    mine.complete()  # still Python's to complete: Node changed nothing
    found = sync_client.find(order)
    assert found is not None
    assert (found.state, found.attempts) == ("completed", 2)


def run_psql_worker(dsn: str, *command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(PSQL_WORKER), "jobs", *command],
        env={**os.environ, "DATABASE_URL": dsn, "UNTIL_IDLE": "1"},
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_the_psql_worker_completes_what_its_command_accepts_and_retries_the_rest(
    dsn: str, sync_client: pushpop.Client, tmp_path: Path
) -> None:
    if shutil.which("psql") is None:
        skip_unless_ci("psql is not installed")
    good = sync_client.push("jobs", json={"ok": True})
    bad = sync_client.push("jobs", b"\x00 not for the command", max_attempts=2)
    seen = tmp_path / "seen"
    # The command: keeps each payload it is given, and accepts only JSON.
    command = ["sh", "-c", f'tee -a {seen} | grep -q "^{{" && echo >> {seen}']

    first = run_psql_worker(dsn, *command)
    assert first.stdout.splitlines() == [
        f"{good} completed",
        f"{bad} deferred after exit status 1",
    ]
    assert seen.read_bytes().startswith(b'{"ok":true}\n\x00 not for the command')
    found = sync_client.find(bad)
    assert found is not None
    assert (found.state, found.error) == ("ready", "sh -c " + command[2] + " failed")

    fast_forward(sync_client, "jobs")
    second = run_psql_worker(dsn, *command)
    assert second.stdout.splitlines() == [f"{bad} discarded on its last attempt"]
    states = {m.id: m.state for m in pushed(sync_client, "jobs")}
    assert states == {good: "completed", bad: "discarded"}
