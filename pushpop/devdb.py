"""Finds a PostgreSQL to develop against, or starts a throwaway one.

Used by ``make demo``, the tests and the benchmarks; applications never need it. In order:
an explicit DSN (``DATABASE_URL`` or the caller's variable), a server answering on libpq's
defaults or 127.0.0.1:5432, then an embedded server from the ``pgserver`` package.

    python -m pushpop.devdb [--dbname NAME] -- COMMAND ...

runs COMMAND with ``DATABASE_URL`` pointing at that database (created if missing), and stops
an embedded server afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

CANDIDATES = ("", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
HELP = (
    "no PostgreSQL found. Set DATABASE_URL (or PUSHPOP_TEST_DSN for the tests), start a server "
    "on 127.0.0.1:5432, or `pip install pgserver` for an embedded one."
)


def _answers(conninfo: str) -> bool:
    try:
        psycopg.connect(conninfo, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def local_server() -> str | None:
    """The conninfo of a server answering on libpq's defaults or 127.0.0.1:5432, if any."""
    for candidate in CANDIDATES:
        if _answers(candidate):
            return candidate
    return None


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Starts a throwaway embedded PostgreSQL (pgserver) and yields its conninfo."""
    try:
        import pgserver
    except ImportError:
        raise SystemExit(f"pushpop.devdb: {HELP}") from None
    with tempfile.TemporaryDirectory(prefix="pushpop-pg-") as datadir:
        server: Any = pgserver.get_server(datadir, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


@contextlib.contextmanager
def server(explicit: str | None = None) -> Iterator[str]:
    """Yields the conninfo of a usable server: explicit, local, or embedded (stopped at exit)."""
    if explicit:
        yield explicit
        return
    local = local_server()
    if local is not None:
        yield local
        return
    with embedded_server() as uri:
        yield uri


def ensure_database(conninfo: str, dbname: str) -> str:
    """Creates ``dbname`` on the server if it does not exist; returns a conninfo pointing at it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return make_conninfo(conninfo, dbname=dbname)


def main(argv: list[str] | None = None) -> int:
    """Runs a command against a development database (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m pushpop.devdb", description=__doc__)
    parser.add_argument("--dbname", default="pushpop_example", help="database to use or create")
    parser.add_argument("command", nargs="+", help="command to run, after --")
    args = parser.parse_args(argv)
    with server(os.environ.get("DATABASE_URL")) as conninfo:
        if os.environ.get("DATABASE_URL"):
            target = conninfo
        else:
            target = ensure_database(conninfo, args.dbname)
        where = {k: v for k, v in conninfo_to_dict(target).items() if k != "password"}
        print(f"pushpop.devdb: using {make_conninfo('', **where)}", file=sys.stderr)
        return subprocess.call(args.command, env={**os.environ, "DATABASE_URL": target})


if __name__ == "__main__":
    sys.exit(main())
