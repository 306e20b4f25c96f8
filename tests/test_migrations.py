"""Installing and upgrading: `pushpop migrate`, psql running sql/install.sql, the upgrade from
the pre-release layout, and the committed schema snapshot."""

from __future__ import annotations

import difflib
import importlib.util
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from schema_snapshot import SNAPSHOT, snapshot

from pushpop import MigrationError, migrations

if TYPE_CHECKING:
    from typing import LiteralString

Conn = psycopg.Connection[tuple[Any, ...]]
PRERELEASE = Path(__file__).resolve().parent / "old_layouts" / "prerelease"
FUNCTION_FILES = [migrations.relative(path) for path in migrations.function_files()]
NUMBERED = [migrations.relative(m.path) for m in migrations.available()]
NEXT = len(NUMBERED) + 1  # the version a new numbered file takes


def recorded(dsn: str) -> list[tuple[Any, ...]]:
    """(version, name) of pushpop.schema_migrations, in version order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT version, name FROM pushpop.schema_migrations ORDER BY version"
        ).fetchall()


def find_psql() -> str:
    """psql from PATH, else the one bundled with pgserver."""
    found = shutil.which("psql")
    if found:
        return found
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    pytest.fail("these tests run psql: install PostgreSQL's client (or pgserver)")


def psql(dsn: str, path: Path) -> tuple[int, str]:
    """Runs ``psql -v ON_ERROR_STOP=1 -f path`` as a user would; its exit code and stderr."""
    result = subprocess.run(
        [find_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, result.stderr


def copy_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of sql/ that the runner uses instead, for tests that change a file."""
    copy = tmp_path / "sql"
    shutil.copytree(migrations.sql_dir(), copy)
    monkeypatch.setattr(migrations, "sql_dir", lambda: copy)
    return copy


# --- Installing ------------------------------------------------------------------------------


def test_migrate_installs_the_baseline_and_every_function_file(empty_dsn: str) -> None:
    applied = migrations.migrate(empty_dsn)
    assert applied == [*NUMBERED, *FUNCTION_FILES]
    assert recorded(empty_dsn) == [(m.version, m.name) for m in migrations.available()]


def test_migrate_again_applies_nothing_and_changes_nothing(empty_dsn: str) -> None:
    migrations.migrate(empty_dsn)
    schema, rows = snapshot(empty_dsn), recorded(empty_dsn)
    assert migrations.migrate(empty_dsn) == []
    assert (snapshot(empty_dsn), recorded(empty_dsn)) == (schema, rows)


def test_concurrent_first_installs_both_succeed_and_apply_each_file_once(empty_dsn: str) -> None:
    start = threading.Barrier(3)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(migrations.migrate(empty_dsn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(map(len, results)) == [0, 0, len(NUMBERED) + len(FUNCTION_FILES)]
    assert recorded(empty_dsn) == [(m.version, m.name) for m in migrations.available()]


def test_install_sql_with_psql_builds_what_migrate_builds(empty_dsn: str, dsn: str) -> None:
    code, stderr = psql(empty_dsn, migrations.sql_dir() / "install.sql")
    assert (code, stderr) == (0, "")
    assert snapshot(empty_dsn) == snapshot(dsn)
    # migrate cannot tell psql's function files are current, so it applies them once more.
    assert migrations.migrate(empty_dsn) == FUNCTION_FILES
    assert migrations.migrate(empty_dsn) == []


def test_install_sql_run_again_upgrades_nothing_and_changes_nothing(dsn: str) -> None:
    before = snapshot(dsn)
    assert psql(dsn, migrations.sql_dir() / "install.sql") == (0, "")
    assert snapshot(dsn) == before


def test_install_sql_names_every_numbered_migration_and_every_function_file_in_order() -> None:
    text = (migrations.sql_dir() / "install.sql").read_text(encoding="utf-8")
    included = re.findall(r"^\\ir (\S+)$", text, flags=re.MULTILINE)
    expected = ["prelude.sql", "upgrade/prerelease.sql"]
    expected += [migrations.relative(m.path) for m in migrations.available()] + FUNCTION_FILES
    assert included == expected
    for migration in migrations.available():
        guard = f"WHERE version = {migration.version}) AS pending \\gset"
        assert guard in text, f"install.sql applies {migration.path.name} only when it is pending"


def test_every_function_has_a_comment_for_callers_in_any_language(conn: Conn) -> None:
    uncommented = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pushpop'::regnamespace"
        "   AND obj_description(p.oid, 'pg_proc') IS NULL"
    ).fetchall()
    assert uncommented == []


def test_each_function_is_declared_in_exactly_one_file() -> None:
    declared: dict[str, list[str]] = {}
    for path in [*migrations.function_files(), *(m.path for m in migrations.available())]:
        text = path.read_text(encoding="utf-8")
        for name in re.findall(
            r"^CREATE (?:OR REPLACE )?(?:FUNCTION|PROCEDURE) (pushpop\.\w+)", text, re.M
        ):
            declared.setdefault(name, []).append(migrations.relative(path))
    assert declared, "no function found"
    assert {name: files for name, files in declared.items() if len(files) > 1} == {}


# --- Upgrading -------------------------------------------------------------------------------


def test_changed_function_files_are_applied_again_in_the_same_transaction(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_sql(tmp_path, monkeypatch)
    stats = copy / "functions" / "50_inspect.sql"
    stats.write_text(
        stats.read_text().replace("One row per topic:", "Per topic:"), encoding="utf-8"
    )
    assert migrations.migrate(dsn) == FUNCTION_FILES
    with psycopg.connect(dsn) as conn:
        comment = conn.execute(
            "SELECT obj_description('pushpop.stats()'::regprocedure, 'pg_proc')"
        ).fetchone()
    assert comment is not None
    assert comment[0].startswith("Per topic:")
    assert migrations.migrate(dsn) == []


def test_a_new_numbered_migration_is_applied_once_and_recorded(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_sql(tmp_path, monkeypatch)
    before = recorded(dsn)
    (copy / "migrations" / f"{NEXT:04d}_notes.sql").write_text(
        f"INSERT INTO pushpop.schema_migrations (version, name) VALUES ({NEXT}, 'notes');\n"
        "CREATE TABLE pushpop.notes (body text);\n"
    )
    assert migrations.migrate(dsn) == [f"migrations/{NEXT:04d}_notes.sql"]
    assert recorded(dsn) == [*before, (NEXT, "notes")]
    assert migrations.migrate(dsn) == []


def test_a_failing_step_raises_naming_its_file_and_leaves_nothing_of_the_run(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_sql(tmp_path, monkeypatch)
    (copy / "migrations" / f"{NEXT:04d}_broken.sql").write_text(
        f"INSERT INTO pushpop.schema_migrations (version, name) VALUES ({NEXT}, 'broken');\n"
        "CREATE TABLE pushpop.half_done (id int);\nSELECT 1 / 0;\n"
    )
    for _ in range(2):  # nothing was left locked: a second run fails the same way
        with pytest.raises(MigrationError, match=f"migrations/{NEXT:04d}_broken.sql failed: div"):
            migrations.migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:  # not even the baseline: one transaction
        assert conn.execute("SELECT to_regnamespace('pushpop')").fetchone() == (None,)


def test_a_migration_that_does_not_record_itself_is_refused(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_sql(tmp_path, monkeypatch)
    (copy / "migrations" / f"{NEXT:04d}_silent.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=f"{NEXT:04d}_silent.sql did not record itself"):
        migrations.migrate(empty_dsn)


def test_migration_files_numbered_with_a_gap_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_sql(tmp_path, monkeypatch)
    (copy / "migrations" / f"{NEXT + 1:04d}_later.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="without gaps"):
        migrations.available()


def test_a_schema_newer_than_the_package_is_never_migrated_down(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pushpop.schema_migrations (version, name) VALUES (99, 'later')")
        before = snapshot(dsn)
    with pytest.raises(MigrationError, match="migration 99, newer than this pushpop knows"):
        migrations.migrate(dsn)
    assert snapshot(dsn) == before


# --- The pre-release layout ------------------------------------------------------------------


def build_prerelease(dsn: str, upto: int = 8) -> None:
    """A database made by the pre-release files 0001..upto, applied with psql as users did."""
    for path in sorted(PRERELEASE.glob("*.sql"))[:upto]:
        code, stderr = psql(dsn, path)
        assert code == 0, stderr


# Messages in every state, as the pre-release functions made them; each row is
# (label, SQL that makes it and returns its id).
EVERY_STATE: list[tuple[str, LiteralString]] = [
    ("ready", "SELECT pushpop.push('t', 'ready', priority => 3, dedup_key => 'k1')"),
    ("scheduled", "SELECT pushpop.push('t', 'later', delay => '1 hour')"),
    ("held", "SELECT id FROM pushpop.pop('held', '1 hour')"),
    ("lapsed", "SELECT id FROM pushpop.pop('lapsed', '1 microsecond')"),
    ("completed", "SELECT id FROM pushpop.pop('done') AS p WHERE pushpop.complete(p.id, p.lease)"),
    (
        "discarded",
        "SELECT id FROM pushpop.pop('gone') AS p WHERE pushpop.discard(p.id, p.lease, 'no')",
    ),
]
ROW: LiteralString = (
    "SELECT id, topic, state, state_time, created_at, priority, attempts, max_attempts, lease,"
    " dedup_key, error, payload, lease_until FROM pushpop.messages ORDER BY id"
)


def fill_prerelease(conn: Conn) -> dict[str, Any]:
    """Messages in every state, a payload limit, a worker and a waiting consumer; their ids."""
    for topic in ("held", "lapsed", "done", "gone"):
        conn.execute("SELECT pushpop.push(%s, 'x')", [topic])
    ids = {}
    for label, query in EVERY_STATE:
        row = conn.execute(query).fetchone()
        assert row is not None, label
        ids[label] = row[0]
    conn.execute("SELECT pushpop.set_max_payload_bytes(4321)")
    conn.execute(
        "SELECT pushpop.worker_heartbeat(gen_random_uuid(), 'h', 1, '{t}', 2),"
        " pushpop.wait_for_push(gen_random_uuid(), '{t}')"
    )
    return ids


@pytest.mark.parametrize("runner", ["pushpop migrate", "psql install.sql"])
def test_a_prerelease_database_upgrades_keeping_every_message_setting_and_worker(
    empty_dsn: str, dsn: str, runner: str
) -> None:
    build_prerelease(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        ids = fill_prerelease(conn)
        messages = conn.execute(ROW).fetchall()
        lease = conn.execute(
            "SELECT lease FROM pushpop.messages WHERE id = %s", [ids["held"]]
        ).fetchone()
        if runner == "pushpop migrate":
            upgrade = ["upgrade/prerelease.sql", *NUMBERED[1:], *FUNCTION_FILES]
            assert migrations.migrate(empty_dsn) == upgrade
        else:
            assert psql(empty_dsn, migrations.sql_dir() / "install.sql") == (0, "")
        assert conn.execute(ROW).fetchall() == messages
        assert conn.execute("SELECT pushpop.max_payload_bytes()").fetchone() == (4321,)
        conn.execute("SELECT pushpop.set_max_payload_bytes(1048576)")  # the new install's
        assert snapshot(empty_dsn) == snapshot(dsn)  # the very schema a new install has
        assert conn.execute("SELECT count(*) FROM pushpop.workers()").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pushpop.waiting").fetchone() == (1,)
        # Deliveries made before the upgrade are still fenced by their leases.
        assert lease is not None
        found = conn.execute(
            "SELECT state, lease_until > now() FROM pushpop.find(%s)", [ids["held"]]
        ).fetchone()
        assert found == ("pending", True)
        assert conn.execute("SELECT pushpop.requeue_expired()").fetchone() == (1,)
        assert conn.execute(
            "SELECT pushpop.complete_many(ARRAY[%s, %s]::uuid[], ARRAY[%s, %s]::uuid[])",
            [ids["held"], ids["held"], lease[0], ids["held"]],
        ).fetchone() == ([True, False],)  # fmt: skip
        popped = conn.execute("SELECT id FROM pushpop.pop('lapsed')").fetchone()
        assert popped == (ids["lapsed"],)
    assert recorded(empty_dsn) == [(m.version, m.name) for m in migrations.available()]


def test_a_database_with_only_some_prerelease_migrations_is_refused_untouched(
    empty_dsn: str,
) -> None:
    build_prerelease(empty_dsn, upto=5)
    before = snapshot(empty_dsn)
    with pytest.raises(
        MigrationError, match=r"only some of the pre-release migrations \(missing \{6,7,8\}\)"
    ):
        migrations.migrate(empty_dsn)
    assert snapshot(empty_dsn) == before


# --- The committed snapshot --------------------------------------------------------------


def test_the_schema_matches_the_committed_snapshot(dsn: str) -> None:
    expected = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    actual = snapshot(dsn)
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                "sql/schema.snapshot.sql (committed)",
                "schema from the SQL files",
            )
        )
        pytest.fail(
            "the SQL files build a schema other than sql/schema.snapshot.sql: if the change "
            "is intended, run `make snapshot` (python tests/schema_snapshot.py) and commit "
            f"the file.\n{diff[:6000]}",
            pytrace=False,
        )
