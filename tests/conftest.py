"""Shared fixtures: a real PostgreSQL server and one fresh, migrated database per test.

The server comes from, in order: ``PUSHPOP_TEST_DSN``; a server on libpq's defaults or
127.0.0.1:5432; an embedded ``pgserver``; a testcontainers PostgreSQL when Docker answers.
All migrations are applied once, to a template database; each test gets a clone of it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg
import pytest
from async_facade import SyncFacade
from citus import CitusCluster, citus_or_skip
from psycopg.conninfo import make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

import pushpop
from pushpop import devdb, migrations

T = TypeVar("T")

# pid in every name: two suites sharing one server never touch each other's databases.
PREFIX = f"pushpop_test_{os.getpid()}"
_numbers = itertools.count()
# Threads of the fixtures themselves, which outlive single tests by design.
BACKGROUND = "pushpop-tests-databases"


def _docker_answers() -> bool:
    """True when a Docker engine responds (then testcontainers can start a server)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run(
            [docker, "info"], capture_output=True, timeout=10, check=False
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def _testcontainers_server() -> Iterator[str | None]:
    """A throwaway PostgreSQL in Docker, or None when testcontainers is not installed."""
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        yield None
        return
    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield str(container.get_connection_url())


@contextlib.contextmanager
def _quietly(manager: AbstractContextManager[T]) -> Iterator[T]:
    """Enters and exits ``manager`` with warnings ignored.

    The suite turns warnings into errors; a container library's warnings about the
    environment must not stop it from starting.
    """
    with contextlib.ExitStack() as inner:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = inner.enter_context(manager)
        try:
            yield value
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inner.close()


def _find_server(stack: contextlib.ExitStack) -> str | None:
    """The first server that answers; embedded or container servers stop when ``stack`` closes."""
    explicit = os.environ.get("PUSHPOP_TEST_DSN")
    if explicit:
        return explicit
    local = devdb.local_server()
    if local is not None:
        return local
    if importlib.util.find_spec("pgserver") is not None:
        with contextlib.suppress(Exception, SystemExit):
            return stack.enter_context(devdb.embedded_server())
    if _docker_answers():
        return stack.enter_context(_quietly(_testcontainers_server()))
    return None


@pytest.fixture(scope="session")
def server_conninfo() -> Iterator[str]:
    """Conninfo of the server's maintenance database (see the module docstring for the order)."""
    with contextlib.ExitStack() as stack:
        found = _find_server(stack)
        if found is None:
            pytest.exit(
                f"pushpop tests: {devdb.HELP} "
                "With Docker running, `pip install testcontainers` works too.",
                returncode=3,
            )
        yield found


class _Server:
    """How DatabaseJanitor reaches the server, read from a live connection."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        with psycopg.connect(conninfo) as conn:
            info = conn.info
            self.host, self.port, self.user = info.host, info.port, info.user
            self.password: str | None = info.password or None
            self.maintenance_dbname = info.dbname

    def janitor(
        self, dbname: str, *, template: str | None = None, as_template: bool = False
    ) -> DatabaseJanitor:
        """A janitor creating (and later dropping) ``dbname``."""
        return DatabaseJanitor(
            user=self.user, host=self.host, port=self.port, password=self.password,
            dbname=dbname, template_dbname=template, as_template=as_template,
            maintenance_dbname=self.maintenance_dbname,
        )  # fmt: skip

    def dsn(self, dbname: str) -> str:
        """Conninfo of ``dbname`` on this server, with every other setting unchanged."""
        return make_conninfo(self.conninfo, dbname=dbname)


class _Databases:
    """Creates test databases ahead of time and drops used ones, both in the background.

    CREATE DATABASE takes a few hundred milliseconds on a server that syncs to disk; making the
    next database while the current test runs keeps the suite fast.
    """

    def __init__(self, server: _Server, template: str | None, ahead: int = 2) -> None:
        self._server, self._template = server, template
        # Separate threads for each job: a slow DROP never holds up the next CREATE.
        self._makers = ThreadPoolExecutor(ahead, thread_name_prefix=BACKGROUND)
        self._droppers = ThreadPoolExecutor(4, thread_name_prefix=BACKGROUND)
        self._ahead = deque(self._makers.submit(self._create) for _ in range(ahead))
        self._drops: list[Future[None]] = []

    def _create(self) -> DatabaseJanitor:
        janitor = self._server.janitor(f"{PREFIX}_{next(_numbers)}", template=self._template)
        janitor.drop()  # a leftover of a crashed run with the same pid
        janitor.init()
        return janitor

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new database for one test, dropped afterwards; yields its conninfo."""
        janitor = self._ahead.popleft().result()
        self._ahead.append(self._makers.submit(self._create))
        try:
            yield self._server.dsn(janitor.dbname)
        finally:
            self._drops.append(self._droppers.submit(janitor.drop))

    def close(self) -> None:
        """Drops every database made, used or not, and stops the threads."""
        try:
            for made in self._ahead:
                self._drops.append(self._droppers.submit(made.result().drop))
            for dropped in self._drops:
                dropped.result()
        finally:
            self._makers.shutdown()
            self._droppers.shutdown()


@pytest.fixture(scope="session")
def pg_server(server_conninfo: str) -> _Server:
    """The server, as DatabaseJanitor needs it."""
    return _Server(server_conninfo)


@pytest.fixture(scope="session")
def template_dbname(pg_server: _Server) -> Iterator[str]:
    """Name of a template database holding every migration, made once per session."""
    dbname = f"{PREFIX}_template"
    janitor = pg_server.janitor(dbname, as_template=True)
    janitor.drop()
    with janitor:
        migrations.migrate(pg_server.dsn(dbname))
        yield dbname


@pytest.fixture(scope="session")
def migrated_databases(pg_server: _Server, template_dbname: str) -> Iterator[_Databases]:
    """Clones of the template, one per test."""
    databases = _Databases(pg_server, template_dbname)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def empty_databases(pg_server: _Server) -> Iterator[_Databases]:
    """Empty databases, one per test that asks."""
    databases = _Databases(pg_server, None, ahead=1)
    yield databases
    databases.close()


# The rules pushpop's functions keep in the queue table (sql/0005 explains why they are not
# CHECK constraints): rows that break one.
BROKEN_RULES = """
SELECT id, state, lease, topic, max_attempts FROM pushpop.messages AS m
WHERE state NOT IN ('scheduled', 'ready', 'pending', 'blocked', 'completed', 'discarded')
   OR (state = 'pending') <> (lease IS NOT NULL)
   OR (state = 'pending' AND lease_until IS NULL)
   OR length(topic) NOT BETWEEN 1 AND 255
   OR length(ordering_key) NOT BETWEEN 1 AND 255
   OR max_attempts < 1
   -- a blocked message waits behind a live message of its key, never behind nothing
   OR (state = 'blocked' AND NOT EXISTS (
           SELECT FROM pushpop.messages AS h
           WHERE h.topic = m.topic AND h.ordering_key = m.ordering_key
             AND h.state IN ('scheduled', 'ready', 'pending')))
LIMIT 5
"""


@pytest.fixture
def dsn(migrated_databases: _Databases) -> Iterator[str]:
    """Conninfo of this test's own database, with every migration applied. Afterwards, every
    message left there must keep the queue table's rules, whatever the test called."""
    with migrated_databases.database() as conninfo:
        yield conninfo
        with psycopg.connect(conninfo, autocommit=True) as check:
            broken = check.execute(BROKEN_RULES).fetchall()
        assert not broken, f"messages breaking the queue table's rules: {broken}"


@pytest.fixture
def empty_dsn(empty_databases: _Databases) -> Iterator[str]:
    """Conninfo of this test's own empty database (no migrations), for migration tests."""
    with empty_databases.database() as conninfo:
        yield conninfo


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, dsn: str) -> Iterator[Any]:
    """A client of this test's database, closed after the test: the sync Client, then an
    AsyncClient driven through the same sync API (SyncFacade), so one test checks both."""
    if request.param == "sync":
        with pushpop.Client(dsn) as c:
            yield c
    else:
        with SyncFacade(pushpop.AsyncClient(dsn)) as facade:
            yield facade


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to this test's database, to call the SQL functions directly."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    """A Citus coordinator and two workers of this session's own (tests/citus.py), started on
    first use; tests needing it skip without Citus, and fail instead when ``CI`` is set."""
    with citus_or_skip() as started:
        yield started


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fails a test that leaves threads running (an unclosed pool, a worker never joined)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(BACKGROUND)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if leaked:
        pytest.fail(f"threads still running after the test: {sorted(t.name for t in leaked)}")
