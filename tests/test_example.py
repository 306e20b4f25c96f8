"""example/main.py runs end to end against a real database and leaves the queue as it says;
the handlers of example/tasks.py, which the README's tour names, run under ``pushpop worker``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import pushpop

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "main.py"
PUSHPOP_CLI = str(Path(sys.executable).parent / "pushpop")
TOPIC = "example.animals"


def run_example(dsn: str) -> subprocess.CompletedProcess[str]:
    """Runs the example as its own process with DATABASE_URL pointing at ``dsn``."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, env={**os.environ, "DATABASE_URL": dsn},
        timeout=60, check=False,
    )  # fmt: skip


def pushed_ids(stdout: str) -> dict[str, str]:
    """The id of each pushed text, read from the example's ``pushed 'text' as id`` lines."""
    return dict(re.findall(r"^pushed '([^']+)' as (\S+)$", stdout, re.MULTILINE))


def test_example_completes_the_wanted_message_and_defers_the_others(
    dsn: str, client: pushpop.Client
) -> None:
    result = run_example(dsn)
    assert result.returncode == 0, result.stderr
    assert "got our message: 'dogs are the best'" in result.stdout
    assert result.stdout.count("deferred it") == 2

    ids = pushed_ids(result.stdout)
    assert set(ids) == {"birds are the best", "cats are the best", "dogs are the best"}
    dogs = client.find(ids["dogs are the best"])
    assert dogs is not None
    assert (dogs.state, dogs.attempts) == ("completed", 1)
    for text in ("birds are the best", "cats are the best"):
        other = client.find(ids[text])
        assert other is not None
        assert other.state_time is not None
        assert other.created_at is not None
        assert (other.state, other.attempts, other.error) == ("ready", 1, "not a dog")
        assert other.state_time - other.created_at >= timedelta(seconds=5)  # deferred 5 s


def test_example_can_run_again_on_the_same_database(dsn: str, client: pushpop.Client) -> None:
    assert run_example(dsn).returncode == 0
    second = run_example(dsn)
    assert second.returncode == 0, second.stderr
    [topic] = [s for s in client.stats() if s.topic == TOPIC]
    counts = (topic.ready + topic.scheduled, topic.pending, topic.completed, topic.discarded)
    assert counts == (2, 0, 1, 0)  # only the second run's three messages are left


def test_example_migrates_a_database_that_has_never_seen_pushpop(empty_dsn: str) -> None:
    result = run_example(empty_dsn)
    assert result.returncode == 0, result.stderr
    assert "got our message: 'dogs are the best'" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("handler", "topic", "good", "says"),
    [
        (
            "example.tasks:send_email",
            "emails",
            b'{"to": "ada@example.com", "subject": "Hello"}',
            "sending 'Hello' to ada@example.com",
        ),
        (
            "example.tasks:send_welcome",
            "welcome-emails",
            b'{"email": "ada@example.com"}',
            "sending 'Welcome!' to ada@example.com",
        ),
    ],
)
def test_the_tour_handlers_complete_good_messages_and_discard_bad_ones(
    dsn: str, handler: str, topic: str, good: bytes, says: str
) -> None:
    """What the README's `pushpop worker example.tasks:...` does, run from the repository's
    root as the README runs it: a message the handler understands is completed, one it raises
    on is discarded after its last attempt; Ctrl-C stops the worker with status 0."""
    with pushpop.Client(dsn) as client:
        good_id = client.push(topic, good)
        bad_id = client.push(topic, b"not json", max_attempts=1)
        worker = subprocess.Popen(
            [PUSHPOP_CLI, "worker", handler, "--topic", topic],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": dsn},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = [getattr(client.find(i), "state", None) for i in (good_id, bad_id)]
                if states == ["completed", "discarded"]:
                    break
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGINT)
            out, err = worker.communicate(timeout=60)
        assert states == ["completed", "discarded"], err
    assert worker.returncode == 0, err
    assert says in out
