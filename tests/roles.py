"""LOGIN roles made for a test run, each granted some pushpop roles, dropped at the end."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

Conn = psycopg.Connection[tuple[Any, ...]]


class Logins:
    """LOGIN roles of this run, one per kind, and conninfos that log in as them."""

    def __init__(self, conninfo: str, kinds: Mapping[str, Sequence[str]]) -> None:
        self.conninfo = conninfo
        self.kinds = dict(kinds)
        self.password = secrets.token_urlsafe(16)
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.names = {kind: f"pushpop_test_{tag}_{kind}" for kind in self.kinds}

    def create(self) -> None:
        """Creates the roles; each is granted the pushpop roles of its kind."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for kind, name in self.names.items():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(name), sql.Literal(self.password)
                    )
                )
                for granted in self.kinds[kind]:
                    conn.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(granted), sql.Identifier(name)
                        )
                    )

    def drop(self) -> None:
        """Drops the roles, and whatever they own in the databases they made it in."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for name in self.names.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def dsn(self, dsn: str, kind: str) -> str:
        """``dsn``, logging in as the role of ``kind``."""
        return make_conninfo(dsn, user=self.names[kind], password=self.password)

    @contextlib.contextmanager
    def connect(self, dsn: str, kind: str) -> Iterator[Conn]:
        """An autocommit connection to ``dsn`` as the role of ``kind``."""
        with psycopg.connect(self.dsn(dsn, kind), autocommit=True) as conn:
            yield conn


@contextlib.contextmanager
def made(conninfo: str, kinds: Mapping[str, Sequence[str]]) -> Iterator[Logins]:
    """The roles of ``kinds`` for the length of a ``with`` block."""
    logins = Logins(conninfo, kinds)
    try:
        logins.create()
        yield logins
    finally:
        logins.drop()
