"""Migrations: the runner, psql applying the same files, and the committed schema snapshot."""

from __future__ import annotations

import difflib
import importlib.util
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


def recorded(dsn: str) -> list[tuple[Any, ...]]:
    """The rows of pushpop.schema_migrations, in version order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT * FROM pushpop.schema_migrations ORDER BY version").fetchall()


def versions() -> list[int]:
    """Every migration version the package ships."""
    return [m.version for m in migrations.available()]


def find_psql() -> str | None:
    """psql from PATH, else the one bundled with pgserver, else None."""
    found = shutil.which("psql")
    if found:
        return found
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.exists() else None


def apply_like_psql(dsn: str, path: Path) -> tuple[int, str]:
    """Runs ``psql -v ON_ERROR_STOP=1 -f path``; its exit code and stderr.

    Without psql, sends the file's text as psql would: one autocommit session running
    the file's own BEGIN ... COMMIT, stopping at the first error.
    """
    psql = find_psql()
    if psql is not None:
        result = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return result.returncode, result.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(path.read_bytes())
        except psycopg.Error as exc:
            return 3, str(exc)
    return 0, ""


def test_migrate_applies_every_file_to_an_empty_database_and_records_it(empty_dsn: str) -> None:
    applied = migrations.migrate(empty_dsn)
    assert [m.version for m in applied] == versions() != []
    expected = [(m.version, m.name) for m in migrations.available()]
    assert [(row[0], row[1]) for row in recorded(empty_dsn)] == expected


def test_migrate_again_applies_nothing_and_changes_nothing(empty_dsn: str) -> None:
    migrations.migrate(empty_dsn)
    schema, rows = snapshot(empty_dsn), recorded(empty_dsn)
    assert migrations.migrate(empty_dsn) == []
    assert (snapshot(empty_dsn), recorded(empty_dsn)) == (schema, rows)


def test_concurrent_migrators_both_succeed_and_apply_each_file_once(empty_dsn: str) -> None:
    start = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append([m.version for m in migrations.migrate(empty_dsn)])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(v for applied in results for v in applied) == versions()
    assert [row[0] for row in recorded(empty_dsn)] == versions()


def test_files_applied_with_psql_are_recognised_by_migrate(empty_dsn: str, dsn: str) -> None:
    for migration in migrations.available():
        code, stderr = apply_like_psql(empty_dsn, migration.path)
        assert code == 0, stderr
    assert migrations.migrate(empty_dsn) == []
    assert snapshot(empty_dsn) == snapshot(dsn)  # psql and migrate build the same schema


def test_migrate_applies_only_the_files_psql_has_not(empty_dsn: str) -> None:
    first, *rest = migrations.available()
    assert apply_like_psql(empty_dsn, first.path)[0] == 0
    assert migrations.migrate(empty_dsn) == rest


def test_reapplying_a_file_with_psql_fails_as_already_applied(empty_dsn: str) -> None:
    migrations.migrate(empty_dsn)
    schema, rows = snapshot(empty_dsn), recorded(empty_dsn)
    for migration in migrations.available():
        code, stderr = apply_like_psql(empty_dsn, migration.path)
        assert code != 0
        assert "already applied" in stderr
    assert (snapshot(empty_dsn), recorded(empty_dsn)) == (schema, rows)


def test_a_failing_migration_raises_and_leaves_nothing_of_itself(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations.available()
    for migration in shipped:
        shutil.copy(migration.path, tmp_path)
    broken = len(shipped) + 1
    (tmp_path / f"{broken:04d}_broken.sql").write_text(
        f"BEGIN;\nCALL pushpop.record_migration({broken}, 'broken');\n"
        "CREATE TABLE pushpop.half_done (id int);\nSELECT 1 / 0;\nCOMMIT;\n"
    )
    monkeypatch.setattr(migrations, "sql_dir", lambda: tmp_path)
    for _ in range(2):  # the lock was released: a second run fails the same way
        with pytest.raises(MigrationError, match=f"{broken:04d}_broken.sql"):
            migrations.migrate(empty_dsn)
    assert [row[0] for row in recorded(empty_dsn)] == versions()[: len(shipped)]
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('pushpop.half_done')").fetchone() == (None,)


def test_migration_files_numbered_with_a_gap_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_core.sql").write_text("SELECT 1;\n")
    (tmp_path / "0003_later.sql").write_text("SELECT 1;\n")
    monkeypatch.setattr(migrations, "sql_dir", lambda: tmp_path)
    with pytest.raises(MigrationError, match="without gaps"):
        migrations.available()


def apply_before(dsn: str, version: int) -> None:
    """Applies, as psql would, every migration older than ``version``: a database to upgrade."""
    for migration in migrations.available():
        if migration.version < version:
            assert apply_like_psql(dsn, migration.path)[0] == 0


def test_upgrading_to_0006_keeps_the_lease_deadlines_of_messages_in_flight(
    empty_dsn: str,
) -> None:
    apply_before(empty_dsn, 6)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:

        def one(query: LiteralString, param: object) -> tuple[Any, ...]:
            row = conn.execute(query, [param]).fetchone()
            assert row is not None
            return row

        for _ in range(2):
            conn.execute("SELECT pushpop.push('t', 'x')")
        pop = "SELECT id, state_time FROM pushpop.pop('t', %s::interval)"
        held, lapsed = one(pop, "1 hour"), one(pop, "1 microsecond")
        migrations.migrate(empty_dsn)
        found = "SELECT state, state_time FROM pushpop.find(%s)"
        assert one(found, held[0]) == ("pending", held[1])
        assert conn.execute("SELECT pushpop.requeue_expired()").fetchone() == (1,)
        assert one(found, lapsed[0])[0] == "ready"


def test_upgrading_to_0007_keeps_the_payload_limit(empty_dsn: str) -> None:
    apply_before(empty_dsn, 7)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("SELECT pushpop.set_max_payload_bytes(1234)")
        migrations.migrate(empty_dsn)
        assert conn.execute("SELECT pushpop.max_payload_bytes()").fetchone() == (1234,)
        conn.execute("SELECT pushpop.push('t', %s)", [b"x" * 1234])
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT pushpop.push('t', %s)", [b"x" * 1235])


def test_schema_matches_the_committed_snapshot(dsn: str) -> None:
    expected = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    actual = snapshot(dsn)
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                "sql/schema.snapshot.sql (committed)",
                "schema from the migrations",
            )
        )
        pytest.fail(
            "the migrations build a schema other than sql/schema.snapshot.sql: if the change "
            "is intended, run `make snapshot` (python tests/schema_snapshot.py) and commit "
            f"the file.\n{diff[:6000]}",
            pytrace=False,
        )
