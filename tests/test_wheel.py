"""The built wheel works on its own: installed in a fresh venv, it migrates from its SQL files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from pushpop import migrations

REPO = Path(__file__).resolve().parent.parent


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a command outside the repository, without anything pointing back into it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the repository, once per module."""
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)], out)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("pushpop-*.whl")
    return found


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv with the wheel (and its dependencies) installed.

    The venv has no pip of its own: this interpreter's pip installs into it, which is faster.
    """
    venv = tmp_path_factory.mktemp("venv")
    created = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv)
    assert created.returncode == 0, created.stderr
    python = str(venv / "bin" / "python")
    installed = run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", str(wheel)], venv
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv / "bin"


def applied_versions(dsn: str) -> list[int]:
    """Versions recorded in pushpop.schema_migrations."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version FROM pushpop.schema_migrations ORDER BY version")
        return [row[0] for row in rows]


def shipped_versions() -> list[int]:
    """Versions of the repository's migration files."""
    return [m.version for m in migrations.available()]


def test_wheel_carries_every_sql_file(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(migrations.sql_dir().rglob("*.sql"))
    assert len(shipped) > 10
    for path in shipped:
        assert f"pushpop/sql/{migrations.relative(path)}" in names


def test_installed_wheel_migrates_from_its_own_sql_files(
    venv_bin: Path, empty_dsn: str, tmp_path: Path
) -> None:
    script = (
        "import sys, pushpop.migrations as m\n"
        "print(m.sql_dir())\n"
        "print(','.join(m.migrate(sys.argv[1])))\n"
    )
    result = run([str(venv_bin / "python"), "-c", script, empty_dsn], tmp_path)
    assert result.returncode == 0, result.stderr
    sql_dir, applied = result.stdout.splitlines()
    assert Path(sql_dir).is_relative_to(venv_bin.parent)
    assert "site-packages" in Path(sql_dir).parts
    expected = [migrations.relative(m.path) for m in migrations.available()]
    expected += [migrations.relative(path) for path in migrations.function_files()]
    assert applied == ",".join(expected)
    assert applied_versions(empty_dsn) == shipped_versions()


def test_installed_cli_migrates_an_empty_database(
    venv_bin: Path, empty_dsn: str, tmp_path: Path
) -> None:
    first = run([str(venv_bin / "pushpop"), "migrate", "--dsn", empty_dsn], tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert applied_versions(empty_dsn) == shipped_versions()
    again = run([str(venv_bin / "pushpop"), "migrate", "--dsn", empty_dsn], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert applied_versions(empty_dsn) == shipped_versions()
