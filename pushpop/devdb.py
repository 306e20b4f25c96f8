"""Finds the PostgreSQL to develop against, or starts a throwaway one.

Used by ``make demo``, the tests and the benchmarks; applications never need it. The server:

1. ``PUSHPOP_EMBEDDED=1`` (or ``--embedded``): an embedded, throwaway server (the ``pgserver``
   package), whatever else is set;
2. else ``DATABASE_URL``, when set: that database, exactly;
3. else libpq's own variables, when any of them is set (``PGHOST``, ``PGPORT``, ``PGDATABASE``,
   ``PGUSER``, ``PGSERVICE``, ...): the server they name;
4. else a server on libpq's defaults or 127.0.0.1:5432, and failing that an embedded one.

A server named in 2 or 3 that does not answer is an error: nothing falls back to another
server, where ``make demo`` would create a database and pushpop's server-wide roles.

    python -m pushpop.devdb [--embedded] [--dbname NAME] -- COMMAND ...

runs COMMAND with ``DATABASE_URL`` pointing at that database (created if missing, except in
2, or in 3 when ``PGDATABASE`` or ``PGSERVICE`` names one), and stops an embedded server
afterwards. ``python -m pushpop.devdb -- $SHELL`` opens a shell with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# libpq's environment variables that choose a server, a database or a login. When one is set,
# the user has said where to connect, and only that server is tried.
LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
# Where a server usually answers when nothing says otherwise: libpq's defaults, then TCP.
CANDIDATES = ("", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
EMBEDDED_VARIABLE = "PUSHPOP_EMBEDDED"
HELP = (
    "no PostgreSQL found. Set DATABASE_URL (or PUSHPOP_TEST_DSN for the tests) or libpq's "
    "PGHOST, PGPORT, ... variables, start a server on 127.0.0.1:5432, or `pip install pgserver` "
    "for an embedded one."
)


class NotAnswering(RuntimeError):
    """The server that DATABASE_URL or libpq's variables name does not answer."""


def embedded_requested() -> bool:
    """Whether ``PUSHPOP_EMBEDDED`` asks for the embedded server (any value but "", 0, no)."""
    value = os.environ.get(EMBEDDED_VARIABLE, "").strip().lower()
    return value not in ("", "0", "no", "false", "off")


def libpq_variables() -> dict[str, str]:
    """Those of :data:`LIBPQ_VARIABLES` that are set, and their values."""
    return {name: os.environ[name] for name in LIBPQ_VARIABLES if os.environ.get(name)}


def describe(conninfo: str) -> str:
    """Where ``conninfo`` leads, e.g. ``database pushpop_example on 127.0.0.1:5432 as postgres``
    (never the password)."""
    with psycopg.connect(conninfo, connect_timeout=3) as conn:
        info = conn.info
        return f"database {info.dbname} on {info.host}:{info.port} as {info.user}"


def _problem(conninfo: str) -> str | None:
    """Why a connection to ``conninfo`` fails, or None when the server answers."""
    try:
        psycopg.connect(conninfo, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        try:
            password = conninfo_to_dict(conninfo).get("password")
        except psycopg.Error:
            return "a malformed connection string"  # libpq's complaint may quote a password
        return reason.replace(str(password), "***") if password else reason
    return None


def _answers(conninfo: str) -> bool:
    return _problem(conninfo) is None


def _libpq_maintenance() -> str:
    """The conninfo to reach the server libpq's variables name: their database if they name
    one, else ``postgres`` (the database a login as the OS user's name may lack)."""
    named = libpq_variables()
    return "" if "PGDATABASE" in named or "PGSERVICE" in named else "dbname=postgres"


def _require(conninfo: str, named_by: str) -> str:
    """``conninfo`` if its server answers; else raises :class:`NotAnswering` saying why."""
    problem = _problem(conninfo)
    if problem is not None:
        raise NotAnswering(
            f"{named_by}: that server does not answer ({problem}). pushpop does not fall back "
            f"to another server: correct or unset it, or set {EMBEDDED_VARIABLE}=1 for an "
            "embedded, throwaway one."
        )
    return conninfo


def _libpq_named_by() -> str:
    """The libpq variables that are set, as ``PGHOST=db PGPORT=5433``."""
    return " ".join(f"{k}={v}" for k, v in libpq_variables().items())


def local_server() -> str | None:
    """The conninfo of the server to use when no DSN is given, or None to use an embedded one.

    With ``PUSHPOP_EMBEDDED`` set: None. With any of libpq's variables set: the server they
    name, raising :class:`NotAnswering` if it does not answer. Otherwise: a server answering on
    libpq's defaults or 127.0.0.1:5432, if any.
    """
    if embedded_requested():
        return None
    if libpq_variables():
        return _require(_libpq_maintenance(), _libpq_named_by())
    for candidate in CANDIDATES:
        if _answers(candidate):
            return candidate
    return None


def _import_pgserver() -> Any:
    """The ``pgserver`` module, imported without its complaint about ``XDG_RUNTIME_DIR``.

    pgserver keeps a lock file in the user's runtime directory; platformdirs falls back to one
    under /tmp when the variable is unset, and warns about it at import, which tells a user
    of ``make demo`` nothing they can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import pgserver
    return pgserver


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Starts a throwaway embedded PostgreSQL (pgserver) and yields its conninfo.

    What pgserver warns about the machine while starting and stopping is kept quiet: a test run
    that turns warnings into errors must not fail on it."""
    try:
        pgserver = _import_pgserver()
    except ImportError:
        raise SystemExit(
            "pushpop.devdb: the embedded server needs the pgserver package: "
            "`pip install pgserver` (`make venv` installs it into .venv)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="pushpop-pg-") as datadir:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server: Any = pgserver.get_server(datadir, cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()


@contextlib.contextmanager
def server(explicit: str | None = None, *, embedded: bool | None = None) -> Iterator[str]:
    """Yields the conninfo of the server to use (see the module docstring for the order).

    ``explicit`` is a DSN the caller was given (``DATABASE_URL``, ``--dsn``); ``embedded``
    defaults to ``PUSHPOP_EMBEDDED``. An embedded server is stopped when the block ends.
    """
    if embedded is None:
        embedded = embedded_requested()
    if not embedded:
        if explicit:
            yield _require(explicit, "the DSN given")
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


@contextlib.contextmanager
def target_database(dbname: str, *, embedded: bool | None = None) -> Iterator[tuple[str, str]]:
    """Yields (conninfo of the database to use, what chose it), as the module docstring says."""
    if embedded is None:
        embedded = embedded_requested()
    if embedded:
        with embedded_server() as uri:
            yield ensure_database(uri, dbname), "an embedded server, stopped afterwards"
        return
    url = os.environ.get("DATABASE_URL")
    if url:
        yield _require(url, "DATABASE_URL"), "DATABASE_URL"
        return
    named = libpq_variables()
    if named:
        maintenance = _require(_libpq_maintenance(), _libpq_named_by())
        if "PGDATABASE" in named or "PGSERVICE" in named:
            with psycopg.connect(maintenance, connect_timeout=3) as conn:
                named_database = make_conninfo(maintenance, dbname=conn.info.dbname)
            yield named_database, _libpq_named_by()
        else:
            yield ensure_database(maintenance, dbname), _libpq_named_by()
        return
    local = local_server()
    if local is not None:
        yield ensure_database(local, dbname), "the local server"
        return
    with embedded_server() as uri:
        yield ensure_database(uri, dbname), "an embedded server (none answered locally)"


def main(argv: list[str] | None = None) -> int:
    """Runs a command against a development database (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m pushpop.devdb",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dbname", default="pushpop_example", help="database to use or create")
    parser.add_argument(
        "--embedded",
        action="store_true",
        default=None,
        help=f"use an embedded, throwaway server whatever is set (also: {EMBEDDED_VARIABLE}=1)",
    )
    parser.add_argument("command", nargs="+", help="command to run, after --")
    args = parser.parse_args(argv)
    try:
        with target_database(args.dbname, embedded=args.embedded) as (conninfo, chosen_by):
            print(f"pushpop.devdb: using {describe(conninfo)} ({chosen_by})", file=sys.stderr)
            return subprocess.call(args.command, env={**os.environ, "DATABASE_URL": conninfo})
    except NotAnswering as exc:
        print(f"pushpop.devdb: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
