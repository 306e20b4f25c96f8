"""Least privilege: each pushpop role may call exactly its functions, and nobody touches a table.

Logs in as real roles (LOGIN roles made for this run, each granted one pushpop role, dropped at
the end) and checks the catalog too, so a function added later without its SECURITY DEFINER,
pinned search_path and grants fails here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import psycopg
import pytest
from async_facade import SyncFacade
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo
from roles import Logins, made
from waiting import wait_for

import pushpop
from pushpop import migrations
from pushpop.errors import PayloadTooLarge, PermissionDenied

if TYPE_CHECKING:
    from typing import LiteralString

Conn = psycopg.Connection[tuple[Any, ...]]

PINNED = "search_path=pg_catalog, pg_temp"
PRODUCER = {"push", "push_many", "max_payload_bytes", "max_header_bytes", "schema_version"}
WORKER = {
    "pop", "complete", "discard", "defer", "extend", "find", "stats", "worker_heartbeat",
    "worker_stopped", "workers", "complete_many", "wait_for_push", "schema_version", "browse",
    "throughput", "maintenance_leader",
}  # fmt: skip
MAINTAINER = {
    "schema_version", "requeue_expired", "cleanup", "prune_workers", "lead_maintenance",
    "resign_maintenance", "run_schedules",
}  # fmt: skip
# pushpop_consumer belongs to pushpop_maintainer unless an operator revokes it.
CONSUMER = WORKER | MAINTAINER
ADMIN = PRODUCER | CONSUMER | {
    "purge", "set_max_payload_bytes", "set_max_header_bytes", "grant_topics", "revoke_topics",
    "stop_topic_grants", "topic_grants", "pause", "resume", "retry", "retry_discarded", "cancel",
    "schedule", "unschedule", "schedules", "subscribe", "unsubscribe", "subscriptions",
}  # fmt: skip
INTERNAL = {  # called inside functions
    "require", "require_topic", "lock_down", "wake", "define_setting", "topic_grants_in_use",
    "may", "require_grant", "topics_paused", "require_headers", "cron_field", "cron_parse",
    "cron_day_matches", "cron_next", "every_next", "every_tick", "subscriptions_in_use",
    "subscription_patterns_in_use", "require_pattern", "subscribers_of", "require_ordering_key",
    "enqueue", "unblock", "unblock_next", "distributed", "route_of", "new_lease", "lease_route",
    "pop_at",
}  # fmt: skip
OWNER_ONLY = {"distribute"}  # the schema's owner shards the queue; no pushpop role may
MAY_CALL = {
    "pushpop_producer": PRODUCER,
    "pushpop_consumer": CONSUMER,
    "pushpop_maintainer": MAINTAINER,
    "pushpop_admin": ADMIN,
}
# The LOGIN role of each kind holds this pushpop role ("nobody" holds none).
KINDS = {"producer": "pushpop_producer", "consumer": "pushpop_consumer", "admin": "pushpop_admin"}
TABLES = {  # each table, and a column to name in UPDATE
    "messages": "topic",
    "workers": "host",
    "waiting": "topic",
    "schema_migrations": "name",
    "schema_functions": "checksum",
    "topic_grants": "pattern",
    "maintenance_leader": "worker",
    "schedules": "name",
    "subscriptions": "subscriber",
}


@pytest.fixture(scope="module")
def logins(server_conninfo: str, template_dbname: str) -> Iterator[Logins]:
    """The LOGIN roles; the template's migration has created the pushpop roles already."""
    kinds = {kind: [role] for kind, role in KINDS.items()} | {"nobody": []}
    with made(server_conninfo, kinds) as logins:
        yield logins


def connect_as(logins: Logins, dsn: str, kind: str) -> contextlib.AbstractContextManager[Conn]:
    """An autocommit connection to ``dsn`` as the role of ``kind``."""
    return logins.connect(dsn, kind)


def one(conn: Conn, query: LiteralString, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


def routines(conn: Conn) -> list[tuple[str, str, bool, list[str] | None]]:
    """Every routine of the schema: name, signature, SECURITY DEFINER, proconfig."""
    return conn.execute(
        "SELECT p.proname, p.oid::regprocedure::text, p.prosecdef, p.proconfig"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pushpop'::regnamespace ORDER BY 2"
    ).fetchall()


# --- The catalog ----------------------------------------------------------------------------


@pytest.fixture(params=["as migrated", "after set_max_payload_bytes"])
def catalog(request: pytest.FixtureRequest, conn: Conn) -> Conn:
    """The owner's connection to a migrated database, as migrated or after the payload limit
    changed (set_max_payload_bytes redefines pushpop.max_payload_bytes)."""
    if request.param != "as migrated":
        assert one(conn, "SELECT pushpop.set_max_payload_bytes(10)") == 10
    return conn


def test_every_routine_runs_as_its_owner_with_a_pinned_search_path(catalog: Conn) -> None:
    found = routines(catalog)
    assert len(found) >= len(ADMIN | INTERNAL | OWNER_ONLY)
    unpinned = [s for _, s, definer, config in found if not definer or PINNED not in (config or [])]
    assert unpinned == [], "declare it SECURITY DEFINER SET search_path = pg_catalog, pg_temp"


def test_public_may_execute_no_routine(catalog: Conn) -> None:
    open_to_public = catalog.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pushpop'::regnamespace AND (p.proacl IS NULL"
        "   OR EXISTS (SELECT FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0))"
    ).fetchall()
    assert open_to_public == [], "CALL pushpop.lock_down(...) in sql/functions/90_security.sql"


def test_each_pushpop_role_may_execute_exactly_its_functions(catalog: Conn) -> None:
    for name, signature, _, _ in routines(catalog):
        known = ADMIN | INTERNAL | OWNER_ONLY
        assert name in known, f"new routine {signature}: decide who may call it"
        for role, allowed in MAY_CALL.items():
            may = one(
                catalog, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", [role, signature]
            )
            assert may == (name in allowed), f"{role} on {signature}"


def test_no_role_but_the_owner_holds_any_privilege_on_a_table_or_sequence(conn: Conn) -> None:
    granted = conn.execute(
        "SELECT c.relname, a.grantee::regrole::text, a.privilege_type FROM pg_class AS c,"
        " aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a"
        " WHERE c.relnamespace = 'pushpop'::regnamespace AND c.relkind IN ('r', 'S')"
        "   AND a.grantee <> c.relowner"
    ).fetchall()
    assert granted == []


# --- Logged in as each role -----------------------------------------------------------------


Setup = Callable[[Conn], list[Any]]


def nothing(owner: Conn) -> list[Any]:
    """No set-up, no parameters."""
    return []


def ready(topic: str) -> Setup:
    """A message ready on ``topic``; the call gets the topic."""

    def setup(owner: Conn) -> list[Any]:
        owner.execute("SELECT pushpop.push(%s, 'secret')", [topic])
        return [topic]

    return setup


def ready_id(topic: str) -> Setup:
    """A message ready on ``topic``; the call gets its id."""

    def setup(owner: Conn) -> list[Any]:
        return [one(owner, "SELECT pushpop.push(%s, 'secret')", [topic])]

    return setup


def leased(topic: str, lease_for: str = "5 minutes") -> Setup:
    """A message popped by the owner; the call gets its id and lease."""

    def setup(owner: Conn) -> list[Any]:
        owner.execute("SELECT pushpop.push(%s, 'secret')", [topic])
        row = owner.execute(
            "SELECT id, lease FROM pushpop.pop(%s, %s::interval)", [topic, lease_for]
        ).fetchone()
        assert row is not None
        return list(row)

    return setup


def expired(owner: Conn) -> list[Any]:
    """A message whose lease has run out."""
    leased("expired", "1 microsecond")(owner)
    return []


def finished(owner: Conn) -> list[Any]:
    """A completed message."""
    owner.execute("SELECT pushpop.complete(%s, %s)", leased("finished")(owner))
    return []


def worker(owner: Conn) -> list[Any]:
    """A registered worker; the call gets its id."""
    id = uuid4()
    owner.execute("SELECT pushpop.worker_heartbeat(%s, 'h', 1, '{t}', 1)", [id])
    return [id]


def eq(expected: Any) -> Callable[[Any], bool]:
    """The call's value is ``expected``."""
    return lambda value: bool(value == expected)


def at_least(low: int) -> Callable[[Any], bool]:
    """The call's value is at least ``low``."""
    return lambda value: bool(value >= low)


def discarded_id(topic: str) -> Setup:
    """A message of ``topic`` that was cancelled; the call gets its id."""

    def setup(owner: Conn) -> list[Any]:
        id = one(owner, "SELECT pushpop.push(%s, 'secret')", [topic])
        assert one(owner, "SELECT pushpop.cancel(%s)", [id]) is True
        return [id]

    return setup


SUBSCRIBE_AND_UNSUBSCRIBE: LiteralString = (
    "SELECT pushpop.subscribe('orders.>', 'audit') AND pushpop.unsubscribe('orders.>', 'audit')"
)
SCHEDULE_AND_UNSCHEDULE: LiteralString = (
    "SELECT pushpop.unschedule(s.name) FROM (SELECT 'nightly' AS name) AS s,"
    " LATERAL pushpop.schedule(s.name, 't', 'x', cron => '0 3 * * *')"
)
LEAD_AND_RESIGN: LiteralString = (
    "SELECT CASE WHEN pushpop.lead_maintenance(w.id) THEN pushpop.resign_maintenance(w.id) END"
    " FROM (SELECT gen_random_uuid() AS id) AS w"
)

# Every routine: the owner's set-up (which returns the call's parameters), the call made as
# the role, and what the first column of its reply is when the call did its documented job.
CALLS: dict[str, tuple[Setup, LiteralString, Callable[[Any], bool]]] = {
    "push": (nothing, "SELECT pushpop.push('t', 'x')", lambda value: isinstance(value, UUID)),
    "push_many": (nothing, "SELECT count(*) FROM pushpop.push_many('t', '{a,b}'::bytea[])", eq(2)),
    "max_payload_bytes": (nothing, "SELECT pushpop.max_payload_bytes()", eq(1048576)),
    "max_header_bytes": (nothing, "SELECT pushpop.max_header_bytes()", eq(8192)),
    "throughput": (finished, "SELECT sum(completed) FROM pushpop.throughput()", at_least(1)),
    "maintenance_leader": (nothing, "SELECT pushpop.maintenance_leader() IS NULL", eq(True)),
    "set_max_header_bytes": (nothing, "SELECT pushpop.set_max_header_bytes(8192)", eq(8192)),
    "topics_paused": (nothing, "SELECT pushpop.topics_paused()", eq(False)),
    "require_headers": (nothing, "SELECT 1 FROM pushpop.require_headers('{}')", eq(1)),
    # A topic paused and resumed at once: the next role's call finds it running.
    "pause": (nothing, "SELECT pushpop.pause('paused') AND pushpop.resume('paused')", eq(True)),
    "resume": (nothing, "SELECT pushpop.pause('paused') AND pushpop.resume('paused')", eq(True)),
    "schema_version": (nothing, "SELECT pushpop.schema_version()", at_least(1)),
    "pop": (ready("pop"), "SELECT payload FROM pushpop.pop(%s)", eq(b"secret")),
    "complete": (leased("complete"), "SELECT pushpop.complete(%s, %s)", eq(True)),
    "complete_many": (
        leased("complete_many"),
        "SELECT pushpop.complete_many(ARRAY[%s::uuid], ARRAY[%s::uuid])",
        eq([True]),
    ),
    "discard": (leased("discard"), "SELECT pushpop.discard(%s, %s)", eq(True)),
    "defer": (leased("defer"), "SELECT pushpop.defer(%s, %s)", eq(True)),
    "extend": (leased("extend"), "SELECT pushpop.extend(%s, %s)", eq(True)),
    "find": (ready_id("find"), "SELECT payload FROM pushpop.find(%s)", eq(b"secret")),
    "requeue_expired": (expired, "SELECT pushpop.requeue_expired()", at_least(1)),
    "cleanup": (finished, "SELECT pushpop.cleanup('0')", at_least(1)),
    "stats": (ready("stats"), "SELECT count(*) FROM pushpop.stats() WHERE topic = %s", eq(1)),
    "worker_heartbeat": (
        nothing,
        "SELECT 1 FROM pushpop.worker_heartbeat(gen_random_uuid(), 'h', 1, '{t}', 1)",
        eq(1),
    ),
    "worker_stopped": (  # a worker stops its own registration
        lambda owner: [uuid4()],
        "SELECT pushpop.worker_stopped(w.id) FROM (SELECT %s::uuid AS id) AS w,"
        " LATERAL pushpop.worker_heartbeat(w.id, 'h', 1, '{t}', 1)",
        eq(True),
    ),
    "workers": (worker, "SELECT count(*) FROM pushpop.workers() WHERE id = %s", eq(1)),
    "prune_workers": (nothing, "SELECT pushpop.prune_workers('1 minute')", at_least(0)),
    "wait_for_push": (
        nothing,
        "SELECT 1 FROM pushpop.wait_for_push(gen_random_uuid(), '{t}')",
        eq(1),
    ),
    "purge": (ready("purge"), "SELECT pushpop.purge(%s)", eq(1)),
    "set_max_payload_bytes": (nothing, "SELECT pushpop.set_max_payload_bytes(2048)", eq(2048)),
    "require": (nothing, "SELECT 1 FROM pushpop.require(true, 'x')", eq(1)),
    "require_topic": (nothing, "SELECT 1 FROM pushpop.require_topic('t')", eq(1)),
    "lock_down": (nothing, "CALL pushpop.lock_down('pushpop.workers(interval)')", eq(None)),
    "define_setting": (nothing, "CALL pushpop.define_setting('x', 'integer', '1')", eq(None)),
    "topic_grants_in_use": (nothing, "SELECT pushpop.topic_grants_in_use()", eq(False)),
    "may": (nothing, "SELECT pushpop.may('pop', 't')", eq(True)),
    "require_grant": (nothing, "SELECT 1 FROM pushpop.require_grant('pop', 't')", eq(1)),
    # A leader resigns at once: the next role's call finds the lead free.
    "lead_maintenance": (nothing, LEAD_AND_RESIGN, eq(True)),
    "resign_maintenance": (nothing, LEAD_AND_RESIGN, eq(True)),
    "grant_topics": (
        nothing,
        "SELECT pushpop.grant_topics('pushpop_admin', '{t}', '{pop}')",
        eq(1),
    ),
    "revoke_topics": (nothing, "SELECT pushpop.revoke_topics('pushpop_admin')", at_least(0)),
    "stop_topic_grants": (nothing, "SELECT pushpop.stop_topic_grants()", at_least(0)),
    "topic_grants": (nothing, "SELECT count(*) FROM pushpop.topic_grants()", at_least(0)),
    "wake": (nothing, "SELECT pushpop.wake('{t}')", eq(0)),
    "browse": (ready("browse"), "SELECT payload FROM pushpop.browse(%s)", eq(b"secret")),
    "retry": (discarded_id("retry"), "SELECT pushpop.retry(%s)", eq(True)),
    "retry_discarded": (
        lambda owner: discarded_id("redrive")(owner)[:0],
        "SELECT pushpop.retry_discarded('redrive')",
        eq(1),
    ),
    "cancel": (ready_id("cancel"), "SELECT pushpop.cancel(%s)", eq(True)),
    # A schedule made and deleted at once: the next role's call finds none.
    "schedule": (nothing, SCHEDULE_AND_UNSCHEDULE, eq(True)),
    "unschedule": (nothing, SCHEDULE_AND_UNSCHEDULE, eq(True)),
    "schedules": (nothing, "SELECT count(*) FROM pushpop.schedules()", at_least(0)),
    "run_schedules": (nothing, "SELECT pushpop.run_schedules()", at_least(0)),
    # A subscription made and removed at once: the next role's call finds none.
    "subscribe": (nothing, SUBSCRIBE_AND_UNSUBSCRIBE, eq(True)),
    "unsubscribe": (nothing, SUBSCRIBE_AND_UNSUBSCRIBE, eq(True)),
    "subscriptions": (nothing, "SELECT count(*) FROM pushpop.subscriptions()", eq(0)),
    "subscriptions_in_use": (nothing, "SELECT pushpop.subscriptions_in_use()", eq(False)),
    "subscription_patterns_in_use": (
        nothing,
        "SELECT pushpop.subscription_patterns_in_use()",
        eq(False),
    ),
    "require_pattern": (nothing, "SELECT 1 FROM pushpop.require_pattern('a.*', 'x', true)", eq(1)),
    "subscribers_of": (nothing, "SELECT pushpop.subscribers_of('t')", eq(None)),
    "require_ordering_key": (nothing, "SELECT 1 FROM pushpop.require_ordering_key('k')", eq(1)),
    "enqueue": (
        nothing,
        "SELECT pushpop.enqueue('t', 'x', '0', 0, gen_random_uuid(), NULL, 25, NULL, NULL, 'k',"
        " NULL)",
        lambda value: isinstance(value, UUID),
    ),
    "unblock": (nothing, "SELECT 1 FROM pushpop.unblock('{t}', '{k}')", eq(1)),
    "unblock_next": (nothing, "SELECT 1 FROM pushpop.unblock_next('t', 'k')", eq(1)),
    "cron_field": (nothing, "SELECT pushpop.cron_field('*/30', 'minute', 0, 59)", eq(1 | 1 << 30)),
    "cron_parse": (nothing, "SELECT cardinality(pushpop.cron_parse('* * * * *'))", eq(7)),
    "cron_day_matches": (
        nothing,
        "SELECT pushpop.cron_day_matches(pushpop.cron_parse('* * * * *'), '2026-01-01')",
        eq(True),
    ),
    "cron_next": (
        nothing,
        "SELECT pushpop.cron_next('0 0 * * *', '2026-01-01 12:00+00', 'UTC')::text",
        eq("2026-01-02 00:00:00+00"),
    ),
    "every_next": (
        nothing,
        "SELECT pushpop.every_next('2026-01-01 00:00+00', '1 hour', 'UTC', '2026-01-01 00:30+00')"
        "::text",
        eq("2026-01-01 01:00:00+00"),
    ),
    "every_tick": (
        nothing,
        "SELECT pushpop.every_tick('2026-01-01 00:00+00', '1 hour', 'UTC', false, 2)::text",
        eq("2026-01-01 02:00:00+00"),
    ),
}


def everything(owner: Conn) -> list[Any]:
    """All the state a call could change: every table, and the payload limit."""
    return [
        owner.execute(
            sql.SQL("SELECT * FROM pushpop.{} ORDER BY 1").format(sql.Identifier(table))
        ).fetchall()
        for table in TABLES
    ] + [one(owner, "SELECT pushpop.max_payload_bytes()")]


def allowed_calls(logins: Logins, dsn: str, kind: str, owner: Conn) -> set[str]:
    """Makes every call as the role of ``kind``; the names of those it was allowed.

    A refused call must have changed nothing; an allowed one must have done its job.
    """
    allowed = set()
    with connect_as(logins, dsn, kind) as role:
        for name, (setup, query, did_its_job) in CALLS.items():
            params = setup(owner)
            before = everything(owner)
            try:
                cursor = role.execute(query, params)
            except pg_errors.InsufficientPrivilege:
                assert everything(owner) == before, f"{kind} was refused {name} but it acted"
                continue
            row = cursor.fetchone() if cursor.description else None
            assert did_its_job(row[0] if row else None), f"{kind} called {name}: {row}"
            allowed.add(name)
    return allowed


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("producer", PRODUCER), ("consumer", CONSUMER), ("admin", ADMIN), ("nobody", set())],
)
def test_each_role_can_make_exactly_its_calls(
    logins: Logins, dsn: str, conn: Conn, kind: str, expected: set[str]
) -> None:
    assert allowed_calls(logins, dsn, kind, conn) == expected


@pytest.mark.parametrize("kind", [*KINDS, "nobody"])
def test_no_role_can_read_or_write_a_table_directly(logins: Logins, dsn: str, kind: str) -> None:
    with connect_as(logins, dsn, kind) as role:
        for table, column in TABLES.items():
            name, col = sql.Identifier("pushpop", table), sql.Identifier(column)
            for statement in (
                sql.SQL("SELECT * FROM {}").format(name),
                sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
                sql.SQL("UPDATE {} SET {} = {}").format(name, col, col),
                sql.SQL("DELETE FROM {}").format(name),
                sql.SQL("TRUNCATE {}").format(name),
            ):
                with pytest.raises(pg_errors.InsufficientPrivilege):
                    role.execute(statement)


def test_the_callers_search_path_cannot_change_what_a_function_does(
    logins: Logins, dsn: str, conn: Conn
) -> None:
    # A schema searched before pg_catalog, with a look-alike of a function push calls.
    conn.execute("CREATE SCHEMA decoy")
    conn.execute(
        "CREATE FUNCTION decoy.gen_random_uuid() RETURNS uuid LANGUAGE sql"
        " AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$"
    )
    conn.execute("GRANT USAGE ON SCHEMA decoy TO PUBLIC")
    options = "-c search_path=decoy,pg_catalog,pushpop"
    with psycopg.connect(logins.dsn(dsn, "admin"), autocommit=True, options=options) as role:
        assert one(role, "SELECT gen_random_uuid()") == UUID(int=0)  # the decoy is in reach
        ids = {one(role, "SELECT push('t', 'x')") for _ in range(2)}
    assert len(ids) == 2
    assert UUID(int=0) not in ids


# --- The Python clients ---------------------------------------------------------------------


@contextlib.contextmanager
def client_as(logins: Logins, dsn: str, kind: str, flavour: str) -> Iterator[Any]:
    """A Client, or an AsyncClient behind the sync facade, logged in as ``kind``."""
    conninfo = logins.dsn(dsn, kind)
    if flavour == "sync":
        with pushpop.Client(conninfo) as client:
            yield client
    else:
        with SyncFacade(pushpop.AsyncClient(conninfo)) as facade:
            yield facade


FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])


@FLAVOURS
def test_a_producer_client_pushes_but_cannot_pop_read_or_purge(
    logins: Logins, dsn: str, conn: Conn, flavour: str
) -> None:
    with client_as(logins, dsn, "producer", flavour) as producer:
        id = producer.push("t", b"x")
        assert producer.push_many("t", [b"a", b"b"]) != []
        refusals: list[tuple[Callable[[], object], str]] = [
            (lambda: producer.pop("t"), "pushpop_consumer"),
            (lambda: producer.find(id), "pushpop_consumer"),
            (lambda: producer.stats(), "pushpop_consumer"),
            (lambda: producer.purge("t"), "pushpop_admin"),
        ]
        for refused, lacking in refusals:
            with pytest.raises(PermissionDenied, match="permission denied for function") as exc:
                refused()
            assert isinstance(exc.value, pushpop.DatabaseError)
            assert isinstance(exc.value.__cause__, pg_errors.InsufficientPrivilege)
            assert f"needs {lacking}" in str(exc.value)  # names the one role that grants it
        producer.push("t", b"still usable")
    assert one(conn, "SELECT ready FROM pushpop.stats() WHERE topic = 't'") == 4


@FLAVOURS
def test_a_consumer_client_pops_and_acknowledges_but_cannot_push_or_purge(
    logins: Logins, dsn: str, conn: Conn, flavour: str
) -> None:
    for payload in (b"one", b"two", b"three"):
        conn.execute("SELECT pushpop.push('t', %s)", [payload])
    with client_as(logins, dsn, "consumer", flavour) as consumer:
        first, second, third = consumer.pop_many("t", 3)
        first.complete()
        second.defer(3600, reason="later")
        third.discard("no")
        assert consumer.find(first.id).state == "completed"
        assert [s.topic for s in consumer.stats()] == ["t"]
        with pytest.raises(PermissionDenied):
            consumer.push("t", b"x")
        with pytest.raises(PermissionDenied):
            consumer.purge("t")
        assert consumer.requeue_expired() == 0
        assert consumer.workers() == []
    assert one(conn, "SELECT count(*) FROM pushpop.messages") == 3


@FLAVOURS
def test_an_admin_client_can_purge_and_change_the_payload_limit(
    logins: Logins, dsn: str, flavour: str
) -> None:
    with (
        client_as(logins, dsn, "admin", flavour) as admin,
        connect_as(logins, dsn, "admin") as sql_,
    ):
        admin.push("t", b"x" * 100)
        assert one(sql_, "SELECT pushpop.set_max_payload_bytes(10)") == 10
        with pytest.raises(PayloadTooLarge, match="100 bytes, more than the limit of 10 bytes"):
            admin.push("t", b"x" * 100)
        assert admin.purge("t") == 1
        assert admin.pop("t") is None


def test_a_worker_needs_only_pushpop_consumer(
    logins: Logins, dsn: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushpop")
    conn.execute("SELECT pushpop.push('jobs', 'work')")
    abandoned = leased("abandoned", "50 milliseconds")(conn)[0]  # a consumer that vanished
    done: list[bytes] = []
    with pushpop.Client(logins.dsn(dsn, "consumer"), max_size=4) as client:
        worker = pushpop.Worker(
            client, "jobs", lambda msg: done.append(msg.payload),
            poll_interval=0.05, requeue_interval=0.05, cleanup_interval=0.05, cleanup_grace=0,
        )  # fmt: skip
        with contextlib.ExitStack() as stack:
            thread = threading.Thread(target=worker.run, name="test-worker")
            thread.start()
            stack.callback(thread.join, 30)
            stack.callback(worker.stop)
            wait_for(lambda: done == [b"work"], what="the handler")
            wait_for(lambda: client.workers(), what="the heartbeat")
            state = "SELECT state FROM pushpop.find(%s)"
            wait_for(lambda: conn.execute(state, [abandoned]).fetchone() == ("ready",),
                     what="requeue_expired")  # fmt: skip
            finished = "SELECT count(*) FROM pushpop.messages WHERE state = 'completed'"
            wait_for(lambda: one(conn, finished) == 0, what="cleanup")
        assert client.workers() == []  # unregistered on stop
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []


# --- Migrations and roles -------------------------------------------------------------------


def grants(conninfo: str) -> list[tuple[Any, ...]]:
    """Which pushpop role may execute which routine."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT p.oid::regprocedure::text, r.rolname"
            " FROM pg_proc AS p, pg_roles AS r"
            " WHERE p.pronamespace = 'pushpop'::regnamespace AND r.rolname LIKE 'pushpop\\_%%'"
            "   AND has_function_privilege(r.oid, p.oid, 'EXECUTE') ORDER BY 1, 2"
        ).fetchall()


def test_migrating_a_second_database_reuses_the_roles_that_exist(
    logins: Logins, empty_dsn: str, dsn: str
) -> None:
    with psycopg.connect(empty_dsn) as conn:
        existing = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname IN"
            " ('pushpop_producer', 'pushpop_consumer', 'pushpop_admin')"
        ).fetchone()
    assert existing == (3,)  # made by the migration of the first database
    assert "migrations/0001_baseline.sql" in migrations.migrate(empty_dsn)
    assert grants(empty_dsn) == grants(dsn) != []
    with connect_as(logins, empty_dsn, "producer") as producer:
        assert isinstance(one(producer, "SELECT pushpop.push('t', 'x')"), UUID)


def test_an_owner_without_createrole_installs_pushpop_once_the_roles_exist(
    logins: Logins, empty_dsn: str
) -> None:
    owner = f"{logins.names['nobody']}_owner"
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        dbname = su.info.dbname
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(logins.password)
            )
        )
        try:
            su.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                )
            )
            migrations.migrate(make_conninfo(empty_dsn, user=owner, password=logins.password))
            owners = su.execute(
                "SELECT DISTINCT proowner::regrole::text FROM pg_proc"
                " WHERE pronamespace = 'pushpop'::regnamespace"
            ).fetchall()
            assert owners == [(owner,)]
            with connect_as(logins, empty_dsn, "producer") as producer:
                producer.execute("SELECT pushpop.push('t', 'x')")  # runs as the owner
            with connect_as(logins, empty_dsn, "consumer") as consumer:
                assert one(consumer, "SELECT payload FROM pushpop.pop('t')") == b"x"
        finally:
            su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(owner)))
            su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))
