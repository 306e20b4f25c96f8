"""Testing an application that uses pushpop: a pytest plugin and helpers on the real SQL.

Installing pushpop registers this module with pytest (entry point ``pytest11``); nothing runs
until a test asks for one of its fixtures:

- ``pushpop_client``: a :class:`pushpop.Client` on a migrated database of the test's own,
  dropped afterwards (a clone of a template database migrated once per session);
- ``pushpop_async_client``: an :class:`pushpop.AsyncClient` on such a database, to open in the
  test's event loop (``async with pushpop_async_client as client:``);
- ``pushpop_dsn``: the conninfo of such a database, for the application's own connections.

The server: ``PUSHPOP_TEST_DSN`` or the ini setting ``pushpop_dsn``; else the local server
(libpq's variables, libpq's defaults or 127.0.0.1:5432); else an embedded, throwaway one
(``pip install 'pushpop[testing]'`` brings it), as :mod:`pushpop.devdb` finds them.

The helpers read the queue table directly (the test's database, where the test connects as
its owner) and change messages only through pushpop's functions, except :func:`fast_forward`,
which moves a topic's clock.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import devdb, migrations
from .async_client import AsyncClient, AsyncMessage
from .client import Client, Message
from .errors import LeaseLost
from .message import MessageBase
from .retry import Retry, decide

__all__ = [
    "Drained",
    "adrain",
    "assert_pushed",
    "drain",
    "fast_forward",
    "pushed",
]

DSN_VARIABLE = "PUSHPOP_TEST_DSN"
DSN_INI = "pushpop_dsn"
# pid in every name: two test runs on one server never touch each other's databases.
_PREFIX = f"pushpop_plugin_{os.getpid()}"
_numbers = itertools.count()

AnyClient = Client | AsyncClient

_COLUMNS = (
    "id, topic, state, state_time, payload, priority, attempts, max_attempts, NULL::uuid, "
    "lease_until, created_at, error, dedup_key, headers, expires_at, ordering_key"
)


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


# Helpers -----------------------------------------------------------------------------------


def _rows(client: AnyClient, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with psycopg.connect(client.conninfo, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def pushed(client: AnyClient, topic: str) -> list[Any]:
    """Every message of ``topic`` in the client's database, in push order, whatever its state.

    On a plugin fixture's database those are the messages pushed during the test. They come
    as the client's messages (``msg.payload`` bytes, ``msg.json()``, ``msg.headers``,
    ``msg.state``), without a lease: nothing can acknowledge them.
    """
    rows = _rows(
        client,
        f"SELECT {_COLUMNS} FROM pushpop.messages WHERE topic = %s ORDER BY seq",
        [topic],
    )
    kind: type[MessageBase[Any]] = AsyncMessage if isinstance(client, AsyncClient) else Message
    return [kind.from_row(client, row) for row in rows]


def _json_of(msg: MessageBase[Any]) -> Any:
    try:
        return msg.json()
    except ValueError:
        return _UNSET


def _describe(msg: MessageBase[Any]) -> str:
    decoded = _json_of(msg)
    body = f"json {decoded!r}" if decoded is not _UNSET else f"payload {msg.payload!r}"
    extra = f", headers {msg.headers!r}" if msg.headers else ""
    return f"{body}{extra} ({msg.state}, attempts {msg.attempts}, id {msg.id})"


def assert_pushed(
    client: AnyClient,
    topic: str,
    *,
    json: Any = _UNSET,
    payload: bytes | None = None,
    headers: dict[str, str] | None = None,
    count: int | None = None,
) -> list[Any]:
    """Asserts that ``topic`` got messages like this one, and returns them.

    A message matches when its payload decodes to ``json`` (or equals ``payload``) and its
    headers include ``headers``. ``count=None``: at least one matches; else exactly ``count``.
    The failure lists what was pushed instead.
    """
    everything = pushed(client, topic)
    matching = [
        m
        for m in everything
        if (json is _UNSET or _json_of(m) == json)
        and (payload is None or m.payload == payload)
        and (headers is None or headers.items() <= m.headers.items())
    ]
    if (len(matching) >= 1) if count is None else (len(matching) == count):
        return matching
    wanted = ", ".join(
        f"{name}={value!r}"
        for name, value in (("json", json), ("payload", payload), ("headers", headers))
        if value is not _UNSET and value is not None
    )
    expected = "at least one message" if count is None else f"{count} message(s)"
    lines = [
        f"expected {expected} pushed to {topic!r}" + (f" with {wanted}" if wanted else "")
        + f", found {len(matching)}."
    ]  # fmt: skip
    if everything:
        lines.append(f"Pushed to {topic!r}:")
        lines += [f"  {n}. {_describe(m)}" for n, m in enumerate(everything, 1)]
    else:
        others = _rows(
            client,
            "SELECT topic, count(*) FROM pushpop.messages GROUP BY topic ORDER BY topic",
            [],
        )
        lines.append(
            f"Nothing was pushed to {topic!r}; "
            + (
                "other topics got: " + ", ".join(f"{t!r} ({n})" for t, n in others)
                if others
                else "no topic got anything."
            )
        )
    raise AssertionError("\n".join(lines))


def fast_forward(client: AnyClient, topic: str, by: timedelta | float | None = None) -> int:
    """Moves ``topic``'s clock forward, without sleeping; returns how many messages it moved.

    ``by=None``: every scheduled or deferred message of the topic becomes due now. A duration
    (a ``timedelta`` or seconds): the topic's messages live that much later: the delays of
    scheduled ones, the leases of pending ones and every expiry come that much closer (a lapsed
    lease comes back with ``client.requeue_expired()``, as a worker would do).
    """
    step = None if by is None else by if isinstance(by, timedelta) else timedelta(seconds=by)
    if step is None:
        query = (
            "UPDATE pushpop.messages SET state_time = least(state_time, now())"
            " WHERE topic = %(topic)s AND state = 'scheduled'"
        )
    else:
        query = (
            "UPDATE pushpop.messages SET"
            " state_time = CASE WHEN state = 'scheduled' THEN state_time - %(by)s"
            " ELSE state_time END,"
            " lease_until = CASE WHEN state = 'pending' THEN lease_until - %(by)s"
            " ELSE lease_until END,"
            " expires_at = expires_at - %(by)s"
            " WHERE topic = %(topic)s AND state IN ('scheduled', 'ready', 'pending')"
        )
    with psycopg.connect(client.conninfo, autocommit=True) as conn:
        return conn.execute(query, {"by": step, "topic": topic}).rowcount


@dataclass(frozen=True)
class Drained:
    """What :func:`drain` did with one delivery.

    ``outcome`` is ``completed``, ``deferred`` (to be retried after ``retry_in``),
    ``discarded`` (its last attempt failed), what the handler itself did with it
    (``completed``, ``deferred``, ``discarded``), or ``lease lost``. ``error`` is what the
    handler raised, if anything.
    """

    message: Any
    outcome: str
    error: BaseException | None = None
    retry_in: timedelta | None = None


_SETTLED = {"completed": "completed", "discarded": "discarded", "ready": "deferred"}


def _pending(msg: MessageBase[Any], error: BaseException | None, retry: Retry) -> Any:
    outcome, _label = decide(msg, error, retry)
    return outcome


def _drained(msg: MessageBase[Any], outcome: Any, error: BaseException | None) -> Drained:
    if outcome is None:
        return Drained(msg, _SETTLED.get(msg.state or "", str(msg.state)), error)
    if outcome.action == "defer":
        return Drained(msg, "deferred", error, outcome.delay)
    return Drained(msg, "completed" if outcome.action == "complete" else "discarded", error)


def drain(
    client: Client,
    topic: str,
    handler: Callable[[Message], Any],
    *,
    max_messages: int = 100,
    retry: Retry | None = None,
) -> list[Drained]:
    """Runs ``handler`` on every ready message of ``topic``, one at a time, in delivery order,
    in this thread; returns what happened to each delivery.

    What a worker would do, without one: a handler that returns completes its message, one
    that raises has it deferred with ``retry``'s backoff (no jitter by default) or discarded
    after its last attempt. Deferred messages wait for their delay (:func:`fast_forward`), so
    a draining ends; ``max_messages`` bounds the deliveries anyway.
    """
    policy = retry if retry is not None else Retry(jitter=0)
    results: list[Drained] = []
    while len(results) < max_messages:
        msg = client.pop(topic)
        if msg is None:
            break
        error: BaseException | None = None
        try:
            handler(msg)
        except Exception as exc:
            error = exc
        outcome = _pending(msg, error, policy)
        try:
            if outcome is not None and outcome.action == "complete":
                msg.complete()
            elif outcome is not None and outcome.action == "defer":
                msg.defer(outcome.delay, outcome.reason)
            elif outcome is not None:
                msg.discard(outcome.reason)
        except LeaseLost:
            results.append(Drained(msg, "lease lost", error))
            continue
        results.append(_drained(msg, outcome, error))
    return results


async def adrain(
    client: AsyncClient,
    topic: str,
    handler: Callable[[AsyncMessage], Awaitable[Any] | Any],
    *,
    max_messages: int = 100,
    retry: Retry | None = None,
) -> list[Drained]:
    """:func:`drain` for an opened :class:`~pushpop.AsyncClient`; ``handler`` may be async."""
    policy = retry if retry is not None else Retry(jitter=0)
    results: list[Drained] = []
    while len(results) < max_messages:
        msg = await client.pop(topic)
        if msg is None:
            break
        error: BaseException | None = None
        try:
            result = handler(msg)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            error = exc
        outcome = _pending(msg, error, policy)
        try:
            if outcome is not None and outcome.action == "complete":
                await msg.complete()
            elif outcome is not None and outcome.action == "defer":
                await msg.defer(outcome.delay, outcome.reason)
            elif outcome is not None:
                await msg.discard(outcome.reason)
        except LeaseLost:
            results.append(Drained(msg, "lease lost", error))
            continue
        results.append(_drained(msg, outcome, error))
    return results


# The plugin ----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        DSN_INI,
        f"conninfo of the PostgreSQL server for pushpop's test databases ({DSN_VARIABLE} wins)",
        default="",
    )


def _find_server(config: pytest.Config, stack: contextlib.ExitStack) -> str:
    explicit = os.environ.get(DSN_VARIABLE) or str(config.getini(DSN_INI) or "")
    if explicit:
        return explicit
    try:
        local = devdb.local_server()
    except devdb.NotAnswering as exc:
        pytest.fail(f"pushpop.testing: {exc}", pytrace=False)
    if local is not None:
        return local
    if importlib.util.find_spec("pgserver") is None:
        pytest.fail(
            f"pushpop.testing: {devdb.HELP} (`pip install 'pushpop[testing]'` brings it)",
            pytrace=False,
        )
    return stack.enter_context(devdb.embedded_server())


def _execute(conninfo: str, statement: sql.Composed) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(statement)


def _drop(conninfo: str, dbname: str) -> None:
    _execute(
        conninfo,
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)),
    )


@pytest.fixture(scope="session")
def pushpop_server(pytestconfig: pytest.Config) -> Iterator[str]:
    """Conninfo of the server that holds pushpop's test databases (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        yield _find_server(pytestconfig, stack)


@pytest.fixture(scope="session")
def pushpop_template(pushpop_server: str) -> Iterator[str]:
    """Name of a database migrated once per session, which each test's database copies."""
    name = f"{_PREFIX}_template"
    _drop(pushpop_server, name)
    _execute(pushpop_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrations.migrate(make_conninfo(pushpop_server, dbname=name))
        yield name
    finally:
        _drop(pushpop_server, name)


@pytest.fixture
def pushpop_dsn(pushpop_server: str, pushpop_template: str) -> Iterator[str]:
    """Conninfo of a migrated database of this test's own, dropped after it."""
    name = f"{_PREFIX}_{next(_numbers)}"
    _drop(pushpop_server, name)
    _execute(
        pushpop_server,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(pushpop_template)
        ),
    )
    try:
        yield make_conninfo(pushpop_server, dbname=name)
    finally:
        _drop(pushpop_server, name)


@pytest.fixture
def pushpop_client(pushpop_dsn: str) -> Iterator[Client]:
    """A :class:`pushpop.Client` on this test's database, closed after the test."""
    with Client(pushpop_dsn) as client:
        yield client


@pytest.fixture
def pushpop_async_client(pushpop_dsn: str) -> AsyncClient:
    """An :class:`pushpop.AsyncClient` on this test's database, not yet open: an async pool
    belongs to one event loop, so the test opens it in its own, with ``async with``."""
    return AsyncClient(pushpop_dsn)
