"""``python -m pushpop.devdb`` (behind ``make demo``) uses exactly the server the user named.

Each test runs it as a process with an environment of its own: no ``DATABASE_URL``, no libpq
variables, no ``PUSHPOP_EMBEDDED`` unless the test sets them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pushpop import devdb

pytestmark = pytest.mark.slow

# A command that proves it ran, and with which DATABASE_URL.
SHOW_URL = [sys.executable, "-c", "import os; print('ran with', os.environ['DATABASE_URL'])"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that chooses a server, plus ``extra``."""
    chooses = {*devdb.LIBPQ_VARIABLES, "DATABASE_URL", devdb.EMBEDDED_VARIABLE, "PGPASSWORD"}
    return {**{k: v for k, v in os.environ.items() if k not in chooses}, **extra}


def run_devdb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m pushpop.devdb ARGS -- SHOW_URL`` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "pushpop.devdb", *args, "--", *SHOW_URL],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def dead_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def libpq_env(server_conninfo: str) -> dict[str, str]:
    """libpq variables naming the test server (no database)."""
    with psycopg.connect(server_conninfo) as conn:
        info = conn.info
        named = {"PGHOST": info.host, "PGPORT": str(info.port), "PGUSER": info.user}
        if info.password:
            named["PGPASSWORD"] = info.password
        return named


def database_exists(server_conninfo: str, dbname: str) -> bool:
    with psycopg.connect(server_conninfo) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        return found is not None


@pytest.fixture
def scratch_dbname(server_conninfo: str) -> Iterator[str]:
    """A database name unused on the test server, dropped afterwards if something made it."""
    name = f"pushpop_devdb_{os.getpid()}"
    yield name
    with psycopg.connect(server_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_libpq_variables_naming_a_dead_server_fail_without_falling_back(
    server_conninfo: str, scratch_dbname: str
) -> None:
    port = dead_port()
    result = run_devdb(clean_env(PGHOST="127.0.0.1", PGPORT=str(port)), "--dbname", scratch_dbname)
    assert result.returncode == 1
    assert "ran with" not in result.stdout
    assert f"PGHOST=127.0.0.1 PGPORT={port}: that server does not answer" in result.stderr
    assert "PUSHPOP_EMBEDDED=1" in result.stderr
    assert not database_exists(server_conninfo, scratch_dbname)


def test_a_database_url_naming_a_dead_server_fails_without_quoting_its_password() -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{dead_port()}/app"
    result = run_devdb(clean_env(DATABASE_URL=url))
    assert result.returncode == 1
    assert "ran with" not in result.stdout
    assert "DATABASE_URL: that server does not answer" in result.stderr
    assert "s3cret" not in result.stderr


def test_libpq_variables_naming_a_live_server_get_the_example_database_there(
    server_conninfo: str, scratch_dbname: str
) -> None:
    result = run_devdb(clean_env(**libpq_env(server_conninfo)), "--dbname", scratch_dbname)
    assert result.returncode == 0, result.stderr
    assert f"dbname={scratch_dbname}" in result.stdout
    assert database_exists(server_conninfo, scratch_dbname)


def test_pgdatabase_is_used_as_it_is(server_conninfo: str, dsn: str, scratch_dbname: str) -> None:
    with psycopg.connect(dsn) as conn:
        dbname = conn.info.dbname
    env = clean_env(**libpq_env(server_conninfo), PGDATABASE=dbname)
    result = run_devdb(env, "--dbname", scratch_dbname)
    assert result.returncode == 0, result.stderr
    assert f"using database {dbname} on" in result.stderr
    assert f"dbname={dbname}" in result.stdout
    assert not database_exists(server_conninfo, scratch_dbname)


def test_a_live_database_url_is_passed_on_unchanged(dsn: str) -> None:
    result = run_devdb(clean_env(DATABASE_URL=dsn))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ran with {dsn}"


def test_local_server_refuses_to_guess_when_libpq_variables_name_a_dead_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in devdb.LIBPQ_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(devdb.EMBEDDED_VARIABLE, raising=False)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(dead_port()))
    with pytest.raises(devdb.NotAnswering, match="that server does not answer"):
        devdb.local_server()


def test_local_server_leaves_the_choice_to_the_embedded_one_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(devdb.EMBEDDED_VARIABLE, "1")
    monkeypatch.setenv("PGPORT", str(dead_port()))  # not even looked at
    assert devdb.local_server() is None


needs_pgserver = pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None, reason="the embedded server needs pgserver"
)


@needs_pgserver
@pytest.mark.parametrize("how", ["variable", "option"])
def test_the_embedded_server_can_be_forced_and_starts_without_warnings(how: str) -> None:
    # Whatever else is set is ignored; XDG_RUNTIME_DIR unset is what made pgserver warn.
    env = clean_env(DATABASE_URL=f"postgresql://app@127.0.0.1:{dead_port()}/app")
    env.pop("XDG_RUNTIME_DIR", None)
    args = ["--dbname", "pushpop_forced"]
    if how == "variable":
        env[devdb.EMBEDDED_VARIABLE] = "1"
    else:
        args.append("--embedded")
    result = run_devdb(env, *args)
    assert result.returncode == 0, result.stderr
    assert "dbname=pushpop_forced" in result.stdout
    assert "an embedded server" in result.stderr
    assert "Warning" not in result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr
