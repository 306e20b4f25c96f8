"""The defaults pushpop's Python spells once are the ones its SQL functions declare.

The SQL is the source: each default is read from the database (``information_schema.parameters``
gives one row per argument of ``pg_proc``, with its default's text), evaluated there, and held
against ``pushpop.constants`` and the signatures that use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pushpop
from pushpop import constants

Conn = psycopg.Connection[tuple[Any, ...]]

DEFAULTS = """
SELECT p.parameter_name, p.parameter_default
FROM information_schema.parameters AS p
JOIN pg_catalog.pg_proc AS f ON p.specific_name = f.proname || '_' || f.oid
WHERE p.specific_schema = 'pushpop' AND f.proname = %s AND p.parameter_mode = 'IN'
  AND p.parameter_default IS NOT NULL
"""

# (SQL function, argument) -> the Python value it must equal.
SQL_DEFAULTS: dict[tuple[str, str], Any] = {
    ("push", "priority"): constants.PRIORITY,
    ("push", "max_attempts"): constants.MAX_ATTEMPTS,
    ("push_many", "priority"): constants.PRIORITY,
    ("pop", "lease_for"): constants.LEASE,
    ("extend", "lease_for"): constants.LEASE,
    ("cleanup", "grace"): constants.CLEANUP_GRACE,
    ("workers", "stale_after"): constants.STALE_AFTER,
    ("prune_workers", "stale_after"): constants.STALE_AFTER,
    ("lead_maintenance", "lease_for"): constants.LEAD_LEASE,
}

# The Python signatures that offer a default of SQL_DEFAULTS: (callable, parameter, key).
SIGNATURES: list[tuple[Callable[..., Any], str, tuple[str, str]]] = [
    (client.push, "priority", ("push", "priority"))
    for client in (pushpop.Client, pushpop.AsyncClient)
] + [
    (pushpop.Client.push, "max_attempts", ("push", "max_attempts")),
    (pushpop.AsyncClient.push, "max_attempts", ("push", "max_attempts")),
    (pushpop.Client.new_message, "max_attempts", ("push", "max_attempts")),
    (pushpop.AsyncClient.new_message, "max_attempts", ("push", "max_attempts")),
    (pushpop.Client.push_many, "priority", ("push_many", "priority")),
    (pushpop.AsyncClient.push_many, "priority", ("push_many", "priority")),
    (pushpop.Client.pop, "lease", ("pop", "lease_for")),
    (pushpop.AsyncClient.pop_many, "lease", ("pop", "lease_for")),
    (pushpop.Message.extend, "lease", ("extend", "lease_for")),
    (pushpop.AsyncMessage.extend, "lease", ("extend", "lease_for")),
    (pushpop.Client.cleanup, "grace", ("cleanup", "grace")),
    (pushpop.AsyncClient.cleanup, "grace", ("cleanup", "grace")),
    (pushpop.Worker, "lease", ("pop", "lease_for")),
    (pushpop.Worker, "cleanup_grace", ("cleanup", "grace")),
    (pushpop.Client.work, "cleanup_grace", ("cleanup", "grace")),
]


def sql_defaults(conn: Conn, function: str) -> dict[str, Any]:
    """The defaults ``pushpop.<function>`` declares, by argument, as the database evaluates them."""
    found = {}
    for name, text in conn.execute(DEFAULTS, [function]).fetchall():
        row = conn.execute(("SELECT " + text).encode()).fetchone()
        assert row is not None
        found[name] = row[0]
    return found


def test_the_python_defaults_are_the_ones_the_sql_functions_declare(conn: Conn) -> None:
    for (function, argument), python in SQL_DEFAULTS.items():
        declared = sql_defaults(conn, function)
        assert argument in declared, f"pushpop.{function} declares no default for {argument}"
        assert declared[argument] == python, (function, argument)


@pytest.mark.parametrize(("function", "parameter", "key"), SIGNATURES)
def test_the_client_and_worker_signatures_default_to_the_sql_defaults(
    function: Callable[..., Any], parameter: str, key: tuple[str, str]
) -> None:
    default = inspect.signature(function).parameters[parameter].default
    wanted = SQL_DEFAULTS[key]
    if isinstance(wanted, timedelta) and not isinstance(default, timedelta):
        default = timedelta(seconds=default)
    assert default == wanted
