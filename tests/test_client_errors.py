"""Bad arguments and database errors, as the Python client reports them.

Every bad argument raises a pushpop error naming it, leaves the queue as it was, and leaves
the client usable; a database-side error keeps the psycopg error as its cause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from async_facade import SyncFacade
from psycopg import errors as pg_errors
from roles import Logins, made

import pushpop

Conn = psycopg.Connection[tuple[Any, ...]]
# Deliberately wrong calls: the client is typed Any so the checker lets them through.
Call = Callable[[Any], object]

VALUE, TYPE = pushpop.InvalidArgument, pushpop.InvalidType

BAD_ARGUMENTS: list[tuple[str, Call, type[pushpop.Error], str]] = [
    ("empty topic", lambda c: c.push("", b"x"), VALUE, "topic must"),
    ("256-char topic", lambda c: c.push("a" * 256, b"x"), VALUE, "topic must"),
    ("None topic", lambda c: c.push(None, b"x"), TYPE, "topic must"),
    ("NUL in topic", lambda c: c.push("a\x00b", b"x"), VALUE, "topic must"),
    ("no payload", lambda c: c.push("t"), TYPE, "payload"),
    ("None payload", lambda c: c.push("t", None), TYPE, "payload"),
    ("str payload", lambda c: c.push("t", "text"), TYPE, ".encode()"),
    ("str payload hint", lambda c: c.push("t", "text"), TYPE, "json="),
    ("int payload", lambda c: c.push("t", 5), TYPE, "payload must"),
    ("payload and json", lambda c: c.push("t", b"x", json={}), TYPE, "json"),
    ("unencodable json", lambda c: c.push("t", json=object()), TYPE, "json"),
    ("NaN in json", lambda c: c.push("t", json=[float("nan")]), VALUE, "json"),
    ("lone surrogate in json", lambda c: c.push("t", json="\ud800"), VALUE, "json"),
    ("negative delay", lambda c: c.push("t", b"x", delay=-1), VALUE, "delay must"),
    ("NaN delay", lambda c: c.push("t", b"x", delay=float("nan")), VALUE, "delay must"),
    ("str delay", lambda c: c.push("t", b"x", delay="1"), TYPE, "delay must"),
    ("bool priority", lambda c: c.push("t", b"x", priority=True), TYPE, "priority must"),
    ("huge priority", lambda c: c.push("t", b"x", priority=2**31), VALUE, "priority must"),
    ("zero max_attempts", lambda c: c.push("t", b"x", max_attempts=0), VALUE, "max_attempts must"),
    ("empty dedup_key", lambda c: c.push("t", b"x", dedup_key=""), VALUE, "dedup_key must"),
    ("non-UUID id", lambda c: c.push("t", b"x", id="nope"), VALUE, "id must"),
    ("int id", lambda c: c.push("t", b"x", id=1), TYPE, "id must"),
    ("push_many bytes", lambda c: c.push_many("t", b"ab"), TYPE, "payloads"),
    ("push_many None element", lambda c: c.push_many("t", [b"a", None]), TYPE, "payloads[1] must"),
    ("push_many str element", lambda c: c.push_many("t", ["a"]), TYPE, ".encode()"),
    ("push_many str element, no json=", lambda c: c.push_many("t", ["a"]), TYPE, "json.dumps("),
    ("push_many negative delay", lambda c: c.push_many("t", [b"a"], delay=-5), VALUE, "delay must"),
    ("push_many empty topic", lambda c: c.push_many("", [b"a"]), VALUE, "topic must"),
    ("pop empty topic", lambda c: c.pop(""), VALUE, "topic must"),
    ("pop negative lease", lambda c: c.pop("t", lease=-1), VALUE, "lease must"),
    ("pop zero lease", lambda c: c.pop("t", lease=0), VALUE, "lease must"),
    ("pop_many zero", lambda c: c.pop_many("t", 0), VALUE, "n must"),
    ("pop_many float", lambda c: c.pop_many("t", 1.5), TYPE, "n must"),
    ("find non-UUID", lambda c: c.find("nope"), VALUE, "id must"),
    ("cleanup negative grace", lambda c: c.cleanup(grace=-1), VALUE, "grace must"),
    ("purge empty topic", lambda c: c.purge(""), VALUE, "topic must"),
]


@pytest.fixture
def populated(client: pushpop.Client) -> pushpop.Message:
    """A queue holding a ready, a delayed and a pending message (the pending one yielded)."""
    client.push("t", b"ready")
    client.push("t", b"later", delay=3600)
    pending = client.pop("t")
    assert pending is not None
    client.push("t", b"ready too")
    return pending


def table(conn: Conn) -> list[tuple[Any, ...]]:
    """Every stored message, every column."""
    return conn.execute("SELECT * FROM pushpop.messages ORDER BY seq").fetchall()


def test_every_bad_argument_raises_naming_it_and_changes_nothing(
    client: pushpop.Client, conn: Conn, populated: pushpop.Message, subtests: pytest.Subtests
) -> None:
    for name, call, error, mentions in BAD_ARGUMENTS:
        with subtests.test(name):
            stats, rows = client.stats(), table(conn)  # per case: one failure does not cascade
            with pytest.raises(error) as raised:
                call(client)
            assert mentions in str(raised.value)
            assert (client.stats(), table(conn)) == (stats, rows)
    assert client.pop("t") is not None  # still usable


BAD_ACKNOWLEDGEMENTS: list[tuple[str, Callable[[Any], object], str]] = [
    ("defer negative delay", lambda m: m.defer(-1), "delay must"),
    ("defer int reason", lambda m: m.defer(0, reason=3), "reason must"),
    ("extend zero lease", lambda m: m.extend(0), "lease must"),
    ("discard bytes reason", lambda m: m.discard(reason=b"x"), "reason must"),
]


def test_every_bad_acknowledgement_argument_raises_and_keeps_the_lease(
    conn: Conn, populated: pushpop.Message, subtests: pytest.Subtests
) -> None:
    for name, acknowledge, mentions in BAD_ACKNOWLEDGEMENTS:
        with subtests.test(name):
            rows = table(conn)
            with pytest.raises((VALUE, TYPE)) as raised:
                acknowledge(populated)
            assert mentions in str(raised.value)
            assert table(conn) == rows
    populated.complete()


def test_invalid_argument_and_invalid_type_are_also_value_and_type_errors() -> None:
    assert issubclass(pushpop.InvalidArgument, ValueError)
    assert issubclass(pushpop.InvalidType, TypeError)
    for error in (pushpop.InvalidArgument, pushpop.InvalidType, pushpop.LeaseLost):
        assert issubclass(error, pushpop.Error)


def test_a_database_error_keeps_its_psycopg_cause(client: pushpop.Client, conn: Conn) -> None:
    conn.execute("DROP FUNCTION pushpop.push")
    with pytest.raises(pushpop.DatabaseError) as raised:
        client.push("t", b"x")
    assert isinstance(raised.value.__cause__, pg_errors.UndefinedFunction)
    assert "pushpop.push" in str(raised.value)
    assert client.pop("t") is None  # the other functions still work


def test_an_error_on_the_callers_connection_keeps_its_cause(dsn: str) -> None:
    with pushpop.Client(dsn) as client, psycopg.connect(dsn) as own:
        with pytest.raises(psycopg.errors.DivisionByZero):
            own.execute("SELECT 1 / 0")
        with pytest.raises(pushpop.DatabaseError) as raised:
            client.push("t", b"x", conn=own)
        assert isinstance(raised.value.__cause__, pg_errors.InFailedSqlTransaction)
        own.rollback()
        client.push("t", b"x", conn=own)
        own.commit()
        assert client.pop("t") is not None


def test_a_sql_argument_check_becomes_invalid_argument_with_its_cause(
    client: pushpop.Client, conn: Conn
) -> None:
    # Raise the SQL functions' own argument error from inside purge, as a newer server-side
    # check would, and see the client translate it.
    conn.execute(
        "CREATE OR REPLACE FUNCTION pushpop.require_topic(topic text) RETURNS void"
        " LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'pushpop: topic is refused' USING ERRCODE = 'invalid_parameter_value';"
        " END $$"
    )
    with pytest.raises(pushpop.InvalidArgument, match="topic is refused") as raised:
        client.purge("t")
    assert isinstance(raised.value.__cause__, pg_errors.InvalidParameterValue)


@pytest.fixture(scope="module")
def logins(server_conninfo: str, template_dbname: str) -> Iterator[Logins]:
    """A LOGIN role holding only pushpop_producer, and one holding only pushpop_consumer."""
    kinds = {"producer": ["pushpop_producer"], "consumer": ["pushpop_consumer"]}
    with made(server_conninfo, kinds) as logins:
        yield logins


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_refused_call_names_the_one_role_that_grants_it(
    logins: Logins, dsn: str, flavour: str
) -> None:
    def client_as(kind: str) -> Any:
        login = logins.dsn(dsn, kind)
        return (
            pushpop.Client(login) if flavour == "sync" else SyncFacade(pushpop.AsyncClient(login))
        )

    refused: list[tuple[str, Call, str]] = [
        ("consumer", lambda c: c.push("t", b"x"), "needs pushpop_producer, or pushpop_admin:"),
        ("producer", lambda c: c.pop("t"), "needs pushpop_consumer, or pushpop_admin:"),
        ("producer", lambda c: c.requeue_expired(), "needs pushpop_maintainer, or pushpop_admin:"),
        ("consumer", lambda c: c.purge("t"), "needs pushpop_admin:"),
    ]
    for kind, call, needs in refused:
        with client_as(kind) as client, pytest.raises(pushpop.PermissionDenied) as raised:
            call(client)
        assert needs in str(raised.value)
        assert isinstance(raised.value.__cause__, pg_errors.InsufficientPrivilege)
