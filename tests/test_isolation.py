"""What one role cannot do to another: squat the install, block it or its maintenance, stall
consumers, forge wake-ups, or touch the topics, deliveries and registry entries of another
application. Real roles, real logins, real workers."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from roles import Logins, made
from waiting import wait_for

import pushpop
from pushpop import MigrationError, migrations

Conn = psycopg.Connection[tuple[Any, ...]]
APP = ["pushpop_producer", "pushpop_consumer"]


@pytest.fixture(scope="module")
def logins(server_conninfo: str, template_dbname: str) -> Iterator[Logins]:
    """Two applications, an administrator, and a role with no pushpop role at all."""
    kinds = {"a": APP, "b": APP, "admin": ["pushpop_admin"], "stranger": []}
    with made(server_conninfo, kinds) as logins:
        yield logins


def one(conn: Conn, query: Any, params: list[Any] | None = None) -> Any:
    """The first column of the first row."""
    row = conn.execute(query, params or []).fetchone()
    assert row is not None
    return row[0]


# --- The install ----------------------------------------------------------------------------


def test_migrate_refuses_a_schema_another_role_made_before_the_install(
    logins: Logins, empty_dsn: str
) -> None:
    squatter = logins.names["stranger"]
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        database = sql.Identifier(su.info.dbname)
        su.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, sql.Identifier(squatter))
        )
        try:
            with logins.connect(empty_dsn, "stranger") as trap:
                trap.execute("CREATE SCHEMA pushpop")
                trap.execute(
                    "CREATE TABLE pushpop.schema_migrations (version integer PRIMARY KEY,"
                    " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                trap.execute(
                    sql.SQL(
                        "CREATE FUNCTION pushpop.elevate() RETURNS trigger LANGUAGE plpgsql AS"
                        " $$BEGIN ALTER ROLE {} SUPERUSER; RETURN NEW; END$$"
                    ).format(sql.Identifier(squatter))
                )
                trap.execute(
                    "CREATE TRIGGER elevate BEFORE INSERT ON pushpop.schema_migrations"
                    " FOR EACH ROW EXECUTE FUNCTION pushpop.elevate()"
                )
            with pytest.raises(MigrationError, match=f"schema pushpop belongs to {squatter}"):
                migrations.migrate(empty_dsn)
            assert one(su, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [squatter]) is False
            owner = "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pushpop'"
            assert one(su, owner) == squatter  # adopted nothing, changed nothing
            assert one(su, "SELECT count(*) FROM pushpop.schema_migrations") == 0
        finally:
            su.execute("DROP SCHEMA IF EXISTS pushpop CASCADE")
            su.execute(
                sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(
                    database, sql.Identifier(squatter)
                )
            )


def test_a_role_holding_every_advisory_lock_pushpop_once_used_blocks_no_install(
    logins: Logins, empty_dsn: str
) -> None:
    with logins.connect(empty_dsn, "stranger") as stranger:
        for key in (31654335925481328, 31654335925481329):
            assert one(stranger, "SELECT pg_try_advisory_lock(%s)", [key]) is True
        assert migrations.migrate(empty_dsn) != []
        with psycopg.connect(empty_dsn, autocommit=True) as owner:
            assert one(owner, "SELECT pushpop.lead_maintenance(gen_random_uuid())") is True
            assert one(owner, "SELECT pushpop.set_max_payload_bytes(2048)") == 2048


def test_changing_a_setting_during_a_migration_fails_clearly_instead_of_waiting(
    dsn: str,
) -> None:
    with psycopg.connect(dsn) as migrator, psycopg.connect(dsn, autocommit=True) as admin:
        migrator.execute("LOCK TABLE pushpop.schema_migrations IN EXCLUSIVE MODE")
        with pytest.raises(pg_errors.LockNotAvailable, match="a migration or another change"):
            admin.execute("SELECT pushpop.set_max_payload_bytes(2048)")
        migrator.rollback()
        assert one(admin, "SELECT pushpop.set_max_payload_bytes(2048)") == 2048


def test_migrations_leave_an_operators_own_objects_in_the_schema_as_they_were(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as operator:
        operator.execute(
            "CREATE FUNCTION pushpop.my_report() RETURNS bigint LANGUAGE sql"
            " AS 'SELECT count(*) FROM pushpop.messages'"
        )
        operator.execute("CREATE TABLE pushpop.my_notes (body text)")
        operator.execute("GRANT SELECT ON pushpop.my_notes TO PUBLIC")
        facts = (
            "SELECT p.prosecdef, p.proacl IS NULL,"
            " has_table_privilege('public', 'pushpop.my_notes', 'SELECT')"
            " FROM pg_proc AS p WHERE p.oid = 'pushpop.my_report()'::regprocedure"
        )
        before = operator.execute(facts).fetchone()
        assert before == (False, True, True)
        operator.execute("DELETE FROM pushpop.schema_functions")  # every function file again
        assert migrations.migrate(dsn) != []
        assert operator.execute(facts).fetchone() == before


# --- Wake-ups -------------------------------------------------------------------------------


def test_a_producers_open_transaction_never_stalls_a_consumer_asking_for_a_wake_up(
    dsn: str,
) -> None:
    consumer_id = uuid4()
    with (
        psycopg.connect(dsn, autocommit=True) as consumer,
        psycopg.connect(dsn) as producer,
    ):
        consumer.execute("SET lock_timeout = '5s'")  # a stall fails the test, never hangs it
        consumer.execute("SELECT pushpop.wait_for_push(%s, '{jobs}')", [consumer_id])
        producer.execute("SELECT pushpop.push('jobs', 'x')")  # wakes the consumer, uncommitted
        consumer.execute("SELECT pushpop.wait_for_push(%s, '{jobs,other}')", [consumer_id])
        assert one(consumer, "SELECT pushpop.worker_stopped(%s)", [consumer_id]) is False
        consumer.execute("SELECT pushpop.wait_for_push(%s, '{jobs}')", [consumer_id])
        producer.commit()
        # The producer's commit woke the first registration; the latest one still waits.
        assert one(consumer, "SELECT count(*) FROM pushpop.waiting") == 1
        assert one(consumer, "SELECT pushpop.wake('{jobs}')") == 1


# --- Topic grants ---------------------------------------------------------------------------


@pytest.fixture
def granted(logins: Logins, dsn: str) -> Iterator[Conn]:
    """Application a may use the topics a.*, b only b.jobs; the administrator's connection."""
    with logins.connect(dsn, "admin") as admin:
        for kind, pattern in (("a", "a.*"), ("b", "b.jobs")):
            added = "SELECT pushpop.grant_topics(%s::regrole, ARRAY[%s])"
            assert one(admin, added, [logins.names[kind], pattern]) == 2
        yield admin


def test_without_topic_grants_every_consumer_may_use_every_topic(logins: Logins, dsn: str) -> None:
    with logins.connect(dsn, "a") as a, logins.connect(dsn, "b") as b:
        id = one(a, "SELECT pushpop.push('b.jobs', 'x')")
        assert one(b, "SELECT id FROM pushpop.pop('b.jobs')") == id


def test_with_topic_grants_an_application_uses_only_its_own_topics(
    logins: Logins, dsn: str, granted: Conn
) -> None:
    with logins.connect(dsn, "a") as a, logins.connect(dsn, "b") as b:
        mine = one(a, "SELECT pushpop.push('a.mail', 'for a')")
        theirs = one(b, "SELECT pushpop.push('b.jobs', 'for b')")
        for conn, statement in (
            (a, "SELECT pushpop.push('b.jobs', 'x')"),
            (a, "SELECT pushpop.push_many('b.jobs', '{x}')"),
            (a, "SELECT * FROM pushpop.pop('b.jobs')"),
            (b, "SELECT * FROM pushpop.pop('a.mail')"),
            (b, "SELECT pushpop.push('b.other', 'x')"),
            (b, "SELECT pushpop.wait_for_push(gen_random_uuid(), '{b.jobs,a.mail}')"),
            (b, "SELECT pushpop.worker_heartbeat(gen_random_uuid(), 'h', 1, '{a.mail}', 1)"),
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege, match="may not"):
                conn.execute(statement)
        assert a.execute("SELECT * FROM pushpop.find(%s)", [theirs]).fetchall() == []
        assert [r[0] for r in b.execute("SELECT topic FROM pushpop.stats()")] == ["b.jobs"]
        assert one(b, "SELECT id FROM pushpop.pop('b.jobs')") == theirs
        assert one(a, "SELECT id FROM pushpop.pop('a.mail')") == mine
        assert [r[0] for r in granted.execute("SELECT topic FROM pushpop.stats()")] == [
            "a.mail", "b.jobs",
        ]  # fmt: skip


def test_a_revoked_topic_grant_is_refused_at_once_and_stopping_grants_opens_every_topic(
    logins: Logins, dsn: str, granted: Conn
) -> None:
    with logins.connect(dsn, "b") as b:
        b.execute("SELECT pushpop.push('b.jobs', 'x')")
        assert one(granted, "SELECT pushpop.revoke_topics(%s::regrole)", [logins.names["b"]]) == 2
        with pytest.raises(pg_errors.InsufficientPrivilege):
            b.execute("SELECT pushpop.push('b.jobs', 'x')")
        assert one(granted, "SELECT pushpop.stop_topic_grants()") == 2
        b.execute("SELECT pushpop.push('a.mail', 'x')")


def test_only_an_administrator_grants_topics(logins: Logins, dsn: str) -> None:
    with logins.connect(dsn, "a") as a, pytest.raises(pg_errors.InsufficientPrivilege):
        a.execute("SELECT pushpop.grant_topics(current_user::regrole, '{b.*}')")


@pytest.mark.parametrize(
    ("patterns", "privileges", "problem"),
    [
        ("{}", "{pop}", "patterns must not be empty"),
        ("{a*b}", "{pop}", "pattern 'a\\*b' must be a topic, or a prefix ending in \\*"),
        ("{a}", "{read}", "privilege 'read' must be push or pop"),
    ],
)
def test_a_bad_topic_grant_is_refused_naming_the_problem(
    conn: Conn, patterns: str, privileges: str, problem: str
) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match=problem):
        conn.execute(
            "SELECT pushpop.grant_topics('pushpop_admin', %s::text[], %s::text[])",
            [patterns, privileges],
        )
    assert one(conn, "SELECT pushpop.topic_grants_in_use()") is False


# --- Deliveries and the registry ------------------------------------------------------------


def test_no_one_but_the_consumer_that_popped_a_message_learns_its_lease(
    logins: Logins, dsn: str
) -> None:
    with logins.connect(dsn, "a") as a, logins.connect(dsn, "b") as b:
        id = one(a, "SELECT pushpop.push('jobs', 'x')")
        assert isinstance(one(a, "SELECT lease FROM pushpop.pop('jobs')"), UUID)
        assert one(b, "SELECT lease FROM pushpop.find(%s)", [id]) is None
        assert one(b, "SELECT pushpop.extend(%s, %s, '100 years')", [id, uuid4()]) is False


def test_a_worker_registration_belongs_to_the_role_that_made_it(logins: Logins, dsn: str) -> None:
    worker = uuid4()
    beat = "SELECT pushpop.worker_heartbeat(%s, 'h', 1, '{jobs}', 1)"
    with logins.connect(dsn, "a") as a, logins.connect(dsn, "b") as b:
        a.execute(beat, [worker])
        with pytest.raises(pg_errors.InsufficientPrivilege, match="registered by another role"):
            b.execute(beat, [worker])
        assert one(b, "SELECT pushpop.worker_stopped(%s)", [worker]) is False
        assert one(a, "SELECT count(*) FROM pushpop.workers() WHERE id = %s", [worker]) == 1
        a.execute(beat, [worker])
        assert one(a, "SELECT pushpop.worker_stopped(%s)", [worker]) is True


@pytest.mark.parametrize(
    ("topics", "problem"),
    [
        ("{}", "topics must not be empty"),
        ("{NULL}", "topic must be 1 to 255 characters, got NULL"),
        ('{""}', "topic must be 1 to 255 characters, got 0 characters"),
        ("{" + "x" * 256 + "}", "topic must be 1 to 255 characters, got 256 characters"),
    ],
)
def test_a_worker_registers_only_topics_it_could_pop(conn: Conn, topics: str, problem: str) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match=problem):
        conn.execute(
            "SELECT pushpop.worker_heartbeat(gen_random_uuid(), 'h', 1, %s::text[], 1)", [topics]
        )
    assert one(conn, "SELECT count(*) FROM pushpop.workers()") == 0


def test_one_worker_at_a_time_leads_maintenance_until_it_resigns_or_its_lease_runs_out(
    conn: Conn,
) -> None:
    first, second = uuid4(), uuid4()
    lead = "SELECT pushpop.lead_maintenance(%s, %s::interval)"
    assert one(conn, lead, [first, "1 hour"]) is True
    assert one(conn, lead, [second, "1 hour"]) is False
    assert one(conn, lead, [first, "1 hour"]) is True  # renewed
    assert one(conn, "SELECT pushpop.resign_maintenance(%s)", [first]) is True
    assert one(conn, lead, [second, "1 microsecond"]) is True
    assert one(conn, lead, [first, "1 hour"]) is True  # the second's lease ran out


def test_concurrent_claims_of_the_lead_elect_exactly_one(dsn: str) -> None:
    start = threading.Barrier(4)
    results: list[bool] = []

    def claim() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            start.wait()
            results.append(one(conn, "SELECT pushpop.lead_maintenance(gen_random_uuid())"))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    with contextlib.ExitStack() as stack:
        for thread in threads:
            thread.start()
            stack.callback(thread.join, 30)
    assert sorted(results) == [False, False, False, True]


# --- Workers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def running(worker: pushpop.Worker[pushpop.Message]) -> Iterator[None]:
    """The worker runs in a thread for the length of the block, and is stopped after it."""
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(30)


def test_a_stranger_holding_advisory_locks_cannot_stop_a_worker_from_requeueing(
    logins: Logins, dsn: str, conn: Conn
) -> None:
    with logins.connect(dsn, "stranger") as stranger:
        for key in (31654335925481328, 31654335925481329):
            assert one(stranger, "SELECT pg_try_advisory_lock(%s)", [key]) is True
        conn.execute("SELECT pushpop.push('jobs', 'x')")
        abandoned = one(conn, "SELECT id FROM pushpop.pop('jobs', '1 millisecond')")
        done: list[UUID] = []
        with pushpop.Client(dsn) as client:
            worker = pushpop.Worker(
                client, "jobs", lambda msg: done.append(msg.id), requeue_interval=0.05
            )
            with running(worker):
                wait_for(lambda: done == [abandoned], what="the lapsed lease, requeued")
                assert worker.is_leader


def test_a_worker_whose_role_may_not_maintain_says_so_once_and_keeps_working(
    logins: Logins, dsn: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    # Everything a worker calls, but none of pushpop_maintainer's functions: granted in this
    # database only, so the server-wide roles stay as they are.
    name = sql.Identifier(logins.names["stranger"])
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pushpop TO {}").format(name))
    for routine in (
        "pop(text, interval, integer)", "complete_many(uuid[], uuid[])",
        "wait_for_push(uuid, text[])", "worker_heartbeat(uuid, text, integer, text[], integer)",
        "worker_stopped(uuid)", "schema_version()",
    ):  # fmt: skip
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION pushpop.{} TO {}").format(sql.SQL(routine), name)
        )
    try:
        caplog.set_level(logging.INFO, logger="pushpop")
        conn.execute("SELECT pushpop.push('jobs', 'x')")
        done: list[bytes] = []
        with pushpop.Client(logins.dsn(dsn, "stranger")) as client:
            worker = pushpop.Worker(
                client, "jobs", lambda msg: done.append(msg.payload), requeue_interval=0.05
            )
            with running(worker):
                wait_for(lambda: done == [b"x"], what="the handler")
                refused = "may not run maintenance (its role lacks pushpop_maintainer)"
                wait_for(lambda: refused in caplog.text, what="the warning")
                conn.execute("SELECT pushpop.push('jobs', 'y')")
                wait_for(lambda: done == [b"x", b"y"], what="the second message")
        assert caplog.text.count(refused) == 1
        assert not worker.is_leader
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(name))


def test_a_forged_notification_only_makes_a_worker_look_for_work(
    logins: Logins, dsn: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushpop")
    done: list[bytes] = []
    with pushpop.Client(dsn) as client:
        worker = pushpop.Worker(client, "jobs", lambda msg: done.append(msg.payload))
        with running(worker), logins.connect(dsn, "stranger") as stranger:
            wait_for(lambda: client.workers(), what="the worker's registration")
            for _ in range(3):
                stranger.execute("NOTIFY pushpop, 'jobs'")
            conn.execute("SELECT pushpop.push('jobs', 'real')")
            wait_for(lambda: done == [b"real"], what="the real message")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
