"""What a new user runs into first: a database without pushpop, a wrong database name, a closed
client. Each says what is wrong at once, instead of retrying what no retry mends."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from async_facade import SyncFacade
from psycopg.conninfo import make_conninfo

import pushpop

NOT_INSTALLED = "pushpop is not installed in this database: run `pushpop migrate`"


@pytest.fixture(params=["sync", "async"])
def bare_client(request: pytest.FixtureRequest, empty_dsn: str) -> Iterator[Any]:
    """A client (sync, or async through the sync API) of a database without pushpop."""
    if request.param == "sync":
        with pushpop.Client(empty_dsn) as c:
            yield c
    else:
        with SyncFacade(pushpop.AsyncClient(empty_dsn)) as facade:
            yield facade


def test_a_call_on_a_database_without_pushpop_says_to_run_migrate(bare_client: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: bare_client.push("t", b"x"),
        lambda: bare_client.pop("t"),
        lambda: bare_client.stats(),
        lambda: bare_client.workers(),
    ]
    for call in calls:
        with pytest.raises(pushpop.NotInstalled, match=NOT_INSTALLED) as raised:
            call()
        assert isinstance(raised.value, pushpop.DatabaseError)
        assert not isinstance(raised.value, pushpop.Unavailable)  # nothing to wait for
    bare_client.migrate()
    assert bare_client.stats() == []


def test_a_worker_on_a_database_without_pushpop_stops_with_not_installed(empty_dsn: str) -> None:
    with pushpop.Client(empty_dsn) as client:
        worker = pushpop.Worker(client, "jobs", lambda msg: None)
        started = time.monotonic()
        with pytest.raises(pushpop.NotInstalled, match=NOT_INSTALLED):
            worker.run()
        assert time.monotonic() - started < 10


def test_an_async_worker_on_a_database_without_pushpop_stops_with_not_installed(
    empty_dsn: str,
) -> None:
    async def scenario() -> None:
        async with pushpop.AsyncClient(empty_dsn) as client:

            async def handler(msg: pushpop.AsyncMessage) -> None:
                pass

            with pytest.raises(pushpop.NotInstalled, match=NOT_INSTALLED):
                await asyncio.wait_for(client.work("jobs", handler), 10)

    asyncio.run(scenario())


def test_the_worker_command_on_a_database_without_pushpop_exits_1_saying_so(
    empty_dsn: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_dsn}
    done = subprocess.run(
        [sys.executable, "-m", "pushpop.cli", "worker", "json:loads", "--topic", "jobs"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"pushpop: error: {NOT_INSTALLED}")
    assert "reconnecting" not in done.stderr


def missing_database(dsn: str) -> str:
    return make_conninfo(dsn, dbname=f"pushpop_no_such_database_{os.getpid()}")


def open_client(flavour: str, dsn: str) -> None:
    """Opens a client of ``flavour`` on ``dsn`` and closes it."""
    if flavour == "sync":
        pushpop.Client(dsn).close()
    else:

        async def open_and_close() -> None:
            async with pushpop.AsyncClient(dsn):
                pass

        asyncio.run(open_and_close())


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_database_that_does_not_exist_fails_at_once_and_quietly(
    dsn: str, flavour: str, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = missing_database(dsn)
    started = time.monotonic()
    with pytest.raises(pushpop.DatabaseError, match="does not exist") as raised:
        open_client(flavour, wrong)
    assert time.monotonic() - started < 5
    assert "cannot connect to the database" in str(raised.value)
    assert not isinstance(raised.value, pushpop.Unavailable)  # no retry mends it
    assert capfd.readouterr().err == ""


def free_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


QUIET = """
import sys, pushpop
client = pushpop.Client(sys.argv[1], timeout=2)
try:
    client.stats()
except pushpop.Unavailable as exc:
    print("raised", type(exc).__name__)
client.close()
"""


def test_a_down_server_is_waited_for_without_a_word_unless_logging_is_configured() -> None:
    down = f"host=127.0.0.1 port={free_port()} connect_timeout=1"
    done = subprocess.run(
        [sys.executable, "-c", QUIET, down],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "raised Unavailable\n", "")


def test_a_closed_client_raises_client_closed_which_no_retry_mends(client: pushpop.Client) -> None:
    client.push("t", b"x")
    msg = client.pop("t")
    assert msg is not None
    client.close()
    for call in (lambda: client.push("t", b"y"), client.stats, msg.complete):
        with pytest.raises(pushpop.ClientClosed, match="is closed"):
            call()
    assert not issubclass(pushpop.ClientClosed, pushpop.Unavailable)
    assert issubclass(pushpop.ClientClosed, pushpop.Error)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            "INSERT INTO pushpop.schema_migrations (version, name) VALUES (99, 'later')",
            "newer than this pushpop knows \\(\\d+\\): upgrade the pushpop package",
        ),
        (
            "DELETE FROM pushpop.schema_migrations"
            " WHERE version = (SELECT max(version) FROM pushpop.schema_migrations)",
            "older than this pushpop's \\(\\d+\\): run `pushpop migrate`",
        ),
    ],
)
def test_a_client_warns_when_the_schema_is_not_the_one_its_package_installs(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture, change: str, words: str
) -> None:
    with pushpop.Client(dsn):
        pass
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    conn.execute(change)
    opens: list[Callable[[], Any]] = [
        lambda: pushpop.Client(dsn),
        lambda: SyncFacade(pushpop.AsyncClient(dsn)),
    ]
    for open_client in opens:
        caplog.clear()
        with open_client():
            pass
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1
        assert re.search(words, warned[0])
