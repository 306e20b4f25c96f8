"""pushpop.testing: the pytest plugin applications get with pushpop, and its helpers.

The plugin is run the way an application runs it: pytest in a process of its own, loading
it through the installed package's entry point. The helpers run here on the suite's databases.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

import pushpop
from pushpop.testing import assert_pushed, drain, fast_forward, pushed

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TESTS = ROOT / "example" / "test_signup.py"


def run_pytest(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """pytest in a process of its own, as an application's test run."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def no_postgres_configured() -> dict[str, str]:
    """This environment without any setting that names a PostgreSQL server."""
    names = {"DATABASE_URL", "PUSHPOP_TEST_DSN", "PUSHPOP_EMBEDDED"}
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("PG")}


def plugin_databases(conninfo: str) -> set[str]:
    """The plugin's databases on the server, made by any process but this one."""
    mine = f"pushpop_plugin_{os.getpid()}_"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pushpop\\_plugin\\_%'"
        ).fetchall()
    return {name for (name,) in rows if not name.startswith(mine)}


@pytest.fixture
def sync_client(dsn: str) -> Iterator[pushpop.Client]:
    with pushpop.Client(dsn) as c:
        yield c


def test_the_example_tests_pass_through_the_installed_plugin_and_leave_no_database(
    server_conninfo: str,
) -> None:
    before = plugin_databases(server_conninfo)
    env = {**no_postgres_configured(), "PUSHPOP_TEST_DSN": server_conninfo}
    result = run_pytest([str(EXAMPLE_TESTS)], ROOT, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert plugin_databases(server_conninfo) <= before


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pgserver") is None, reason="needs pgserver")
def test_the_plugin_runs_the_example_on_an_embedded_server_when_no_postgres_is_configured() -> None:
    env = {**no_postgres_configured(), "PUSHPOP_EMBEDDED": "1"}
    result = run_pytest([str(EXAMPLE_TESTS)], ROOT, env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_a_test_that_asks_for_no_pushpop_fixture_gets_none_and_touches_no_server(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    # A server that cannot answer: the run passes only if the plugin never connects.
    env = {**no_postgres_configured(), "PUSHPOP_TEST_DSN": "host=127.0.0.1 port=1"}
    result = run_pytest(["--fixtures-per-test", "test_plain.py"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plugins: " in result.stdout  # pytest names the plugins, pushpop among them
    assert "pushpop_" not in result.stdout  # but no fixture of it is used
    listed = run_pytest(["--fixtures", "test_plain.py"], tmp_path, env)
    for name in ("pushpop_client", "pushpop_async_client", "pushpop_dsn"):
        assert name in listed.stdout
    assert plain_passes(run_pytest(["test_plain.py"], tmp_path, env))


def plain_passes(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "1 passed" in result.stdout


def test_each_test_gets_a_migrated_database_of_its_own(
    pushpop_client: pushpop.Client, pushpop_dsn: str, dsn: str
) -> None:
    assert pushpop_client.conninfo == pushpop_dsn != dsn
    assert pushpop_client.stats() == []
    pushpop_client.push("t", b"x")
    assert [s.topic for s in pushpop_client.stats()] == ["t"]


def test_pushed_lists_a_topics_messages_in_push_order_without_their_leases(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("t", json={"n": 1}, headers={"k": "v"})
    sync_client.push("t", b"\x00raw", priority=5)
    sync_client.push("other", b"not this one")
    assert sync_client.pop("t") is not None

    messages = pushed(sync_client, "t")
    assert [m.payload for m in messages] == [b'{"n":1}', b"\x00raw"]
    assert messages[0].json() == {"n": 1}
    assert messages[0].headers == {"k": "v"}
    assert [m.state for m in messages] == ["ready", "pending"]
    assert [m.lease for m in messages] == [None, None]


def test_assert_pushed_matches_json_payload_headers_and_an_exact_count(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("t", json={"n": 1}, headers={"k": "v", "other": "x"})
    sync_client.push("t", json={"n": 1})
    sync_client.push("t", b"raw")

    assert len(assert_pushed(sync_client, "t", json={"n": 1}, count=2)) == 2
    assert len(assert_pushed(sync_client, "t", json={"n": 1}, headers={"k": "v"})) == 1
    assert len(assert_pushed(sync_client, "t", payload=b"raw", count=1)) == 1
    assert len(assert_pushed(sync_client, "t", count=3)) == 3
    with pytest.raises(AssertionError, match="expected 1 message"):
        assert_pushed(sync_client, "t", json={"n": 1}, count=1)


def test_assert_pushed_fails_listing_what_was_pushed_instead(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("emails", json={"to": "bob@example.com"})
    sync_client.push("emails", b"\xff")

    with pytest.raises(AssertionError) as failure:
        assert_pushed(sync_client, "emails", json={"to": "ada@example.com"})
    text = str(failure.value)
    assert (
        "expected at least one message pushed to 'emails' with json={'to': 'ada@example.com'}"
        in (text)
    )
    assert "1. json {'to': 'bob@example.com'} (ready, attempts 0" in text
    assert "2. payload b'\\xff' (ready" in text


def test_assert_pushed_on_an_empty_topic_names_the_topics_that_got_messages(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("mails", b"x")
    with pytest.raises(
        AssertionError, match=r"Nothing was pushed to 'emails'; other topics got: 'mails' \(1\)"
    ):
        assert_pushed(sync_client, "emails")


def test_drain_handles_messages_in_delivery_order_and_reports_each_outcome(
    sync_client: pushpop.Client,
) -> None:
    for n, priority in ((1, 0), (2, 9), (3, 0), (4, 0)):
        sync_client.push("t", json={"n": n}, priority=priority, max_attempts=1 if n == 3 else 5)
    seen: list[int] = []

    def handler(msg: pushpop.Message) -> None:
        n = msg.json()["n"]
        seen.append(n)
        if n == 4:
            msg.defer(60, reason="by the handler")
        elif n != 2:
            raise RuntimeError(f"no {n}")

    drained = drain(sync_client, "t", handler)
    assert seen == [2, 1, 3, 4]
    assert [d.outcome for d in drained] == ["completed", "deferred", "discarded", "deferred"]
    assert drained[1].retry_in == timedelta(seconds=1)  # Retry's first step, without jitter
    assert str(drained[2].error) == "no 3"
    assert drain(sync_client, "t", handler) == []  # the deferred ones wait for their delay


def test_drain_stops_after_max_messages(sync_client: pushpop.Client) -> None:
    sync_client.push_many("t", [b"a", b"b", b"c"])
    assert [d.message.payload for d in drain(sync_client, "t", print, max_messages=2)] == [
        b"a",
        b"b",
    ]
    assert [m.state for m in pushed(sync_client, "t")] == ["completed", "completed", "ready"]


def test_fast_forward_makes_a_topics_scheduled_messages_due_and_leaves_others_alone(
    sync_client: pushpop.Client,
) -> None:
    soon = sync_client.push("t", b"soon", delay=timedelta(hours=1))
    sync_client.push("elsewhere", b"later", delay=timedelta(hours=1))
    assert sync_client.pop("t") is None

    assert fast_forward(sync_client, "t") == 1
    popped = sync_client.pop("t")
    assert popped is not None
    assert popped.id == soon
    assert sync_client.pop("elsewhere") is None


def test_fast_forward_by_a_duration_moves_delays_leases_and_expiries(
    sync_client: pushpop.Client,
) -> None:
    sync_client.push("t", b"in two hours", delay=timedelta(hours=2))
    sync_client.push("t", b"in ten minutes", delay=timedelta(minutes=10))
    leased_id = sync_client.push("t", b"leased")
    sync_client.push("t", b"expiring", expires_in=timedelta(minutes=5))
    leased = sync_client.pop("t", lease=timedelta(minutes=5))
    assert leased is not None
    assert leased.id == leased_id

    assert fast_forward(sync_client, "t", timedelta(minutes=30)) == 4
    assert sync_client.requeue_expired() == 2  # the lapsed lease, and the expired message
    found = sync_client.find(leased_id)
    assert found is not None
    assert found.state == "ready"
    assert [m.payload for m in sync_client.pop_many("t", 10)] == [b"in ten minutes", b"leased"]
    with pytest.raises(pushpop.LeaseLost):
        leased.complete()
