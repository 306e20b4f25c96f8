"""The code blocks of README.md and docs/*.md run as printed, against a real database.

Every ```python, ```sh, ```console and ```sql block runs in a fresh, migrated database
(``DATABASE_URL``), from the repository's root, with the ``pushpop`` command of this Python on
the ``PATH``: Python with this interpreter, sh with ``bash -e`` (so every command must
succeed), console as its ``$ `` lines, SQL with ``psql -v ON_ERROR_STOP=1``. In Python, a
comment ``# prints TEXT`` must match a line of the output. An HTML comment on the line before
a block changes what happens to it:

- ``<!-- not run: REASON -->``: not run (it installs software, needs servers or roles the tests
  do not have, or opens a shell); Python must still compile and sh still parse.
- ``<!-- runs until stopped: REASON -->``: a worker; it must still run after a few seconds, and
  exit with status 0 on Ctrl-C (SIGINT).

Blocks in other languages (```text for output and logs) are never run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # where this environment's `pushpop` command lives
RUNNABLE = {"python", "sh", "console", "sql"}
README_LIMIT = 20 * 1024
BASH = shutil.which("bash") or "/bin/bash"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(?P<kind>not run|runs until stopped):\s*(?P<reason>\S.*?)\s*-->$")
_ANY_MARKER = re.compile(r"^<!--.*-->$")
_PRINTS = re.compile(r"#\s*prints\s+(?P<text>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, and the marker on the line before it, if any."""

    page: Path
    line: int  # of the opening fence, counting from 1
    lang: str
    code: str
    marker: str | None  # "not run", "runs until stopped", or None
    reason: str | None
    stray_marker: str | None  # an HTML comment before the block that is not a known marker

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}:{self.lang or 'plain'}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = len(fence["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = _MARKER.match(before)
        stray = before if _ANY_MARKER.match(before) and marker is None else None
        found.append(
            Block(
                page, i + 1, fence["lang"], "\n".join(body) + "\n",
                marker["kind"] if marker else None, marker["reason"] if marker else None, stray,
            )
        )  # fmt: skip
        i = j + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
TO_RUN = [b for b in ALL if b.lang in RUNNABLE and b.marker is None]
UNTIL_STOPPED = [b for b in ALL if b.marker == "runs until stopped"]
NOT_RUN = [b for b in ALL if b.marker == "not run"]


def names(selection: list[Block]) -> list[str]:
    """Readable test ids: page, line, language."""
    return [b.name for b in selection]


def environment(dsn: str) -> dict[str, str]:
    """The environment a reader has: DATABASE_URL set and the `pushpop` command on the PATH."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }


def command(block: Block, tmp_path: Path, dsn: str) -> list[str]:
    """The argument list that runs ``block`` as a reader would."""
    if block.lang == "python":
        script = tmp_path / "block.py"
        script.write_text(block.code, encoding="utf-8")
        return [sys.executable, str(script)]
    if block.lang in ("sh", "console"):
        if re.search(r"\bpsql\b", block.code) and shutil.which("psql") is None:
            pytest.skip("psql is not installed")
        code = block.code
        if block.lang == "console":
            code = "\n".join(ln[2:] for ln in code.splitlines() if ln.startswith("$ ")) + "\n"
        return [BASH, "-e", "-o", "pipefail", "-c", code]
    assert block.lang == "sql"
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    script = tmp_path / "block.sql"
    script.write_text(block.code, encoding="utf-8")
    return [psql, "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), dsn]


@pytest.mark.slow
@pytest.mark.parametrize("block", TO_RUN, ids=names(TO_RUN))
def test_block_runs_as_printed(block: Block, dsn: str, tmp_path: Path) -> None:
    result = subprocess.run(
        command(block, tmp_path, dsn), cwd=ROOT, env=environment(dsn),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
    if block.lang == "python":
        printed = [line.strip() for line in result.stdout.splitlines()]
        for promise in _PRINTS.finditer(block.code):
            assert promise["text"] in printed, f"{block.name} did not print {promise['text']!r}"


@pytest.mark.slow
@pytest.mark.parametrize("block", UNTIL_STOPPED, ids=names(UNTIL_STOPPED))
def test_block_runs_until_ctrl_c_then_exits_cleanly(block: Block, dsn: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        command(block, tmp_path, dsn), cwd=ROOT, env=environment(dsn),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert running, f"{block.name} stopped by itself:\n{out}\n{err}"
    assert proc.returncode == 0, f"{block.name} exited {proc.returncode}:\n{out}\n{err}"
    assert "Traceback" not in err, err


@pytest.mark.parametrize("block", NOT_RUN, ids=names(NOT_RUN))
def test_block_not_run_still_parses(block: Block) -> None:
    """Blocks the tests cannot run (the FastAPI example among them) are at least valid code."""
    if block.lang == "python":
        compile(block.code, block.name, "exec")
    elif block.lang in ("sh", "console"):
        result = subprocess.run(
            [BASH, "-n", "-c", block.code], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def test_markers_are_known_and_sit_on_blocks_that_would_run() -> None:
    """A misspelt marker would let a block go unrun, and a marker on a ```text block means
    nothing: both are mistakes."""
    assert [b.name for b in ALL if b.stray_marker] == []
    assert [b.name for b in ALL if b.marker and b.lang not in RUNNABLE] == []


def test_shell_blocks_hold_no_optional_brackets() -> None:
    """`[--json]` in a block a reader pastes is a syntax they must edit out first."""
    optional = re.compile(r"\[--?[\w-]")
    offending = [
        f"{b.name}: {line.strip()}"
        for b in ALL
        if b.lang in ("sh", "console")
        for line in b.code.splitlines()
        if optional.search(line)
    ]
    assert offending == []


def test_every_page_has_blocks_that_run() -> None:
    """A parser that found nothing would pass every test above."""
    assert {b.page for b in TO_RUN} >= {README, ROOT / "docs" / "python.md"}


def test_readme_stays_under_20_kib() -> None:
    assert len(README.read_bytes()) <= README_LIMIT


def test_readme_links_to_files_that_exist() -> None:
    """The README's relative links (to docs/ pages) work on GitHub and in a clone."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links to no page of docs/"
    assert [link for link in relative if not (ROOT / link).exists()] == []


def readme_section(title: str) -> str:
    """The text of one ``## title`` section of the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_command_line_block_runs_every_subcommand() -> None:
    result = subprocess.run(
        [str(BIN / "pushpop"), "--help"], capture_output=True, text=True, check=True
    )
    listed = re.findall(r"^ {4}(\w+) {2,}", result.stdout, re.MULTILINE)
    assert "worker" in listed
    used = set(re.findall(r"\bpushpop (\w+)", readme_section("Command line")))
    assert set(listed) - used == set()


def test_readme_pop_on_an_empty_topic_is_described_as_it_behaves(dsn: str) -> None:
    result = subprocess.run(
        [str(BIN / "pushpop"), "pop", "emails"], env=environment(dsn),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "")
    said = result.stderr.strip()
    assert said == "pushpop: no message ready in 'emails'"
    assert f"`{said}` on stderr" in readme_section("Command line")


def routines(dsn: str, *, granted: bool) -> set[str]:
    """Names of the routines in schema pushpop: those granted to a pushpop role, or all."""
    query = """
        SELECT DISTINCT p.proname FROM pg_proc AS p
        WHERE p.pronamespace = 'pushpop'::regnamespace
          AND (NOT %(granted)s OR EXISTS (
                SELECT FROM aclexplode(p.proacl) AS a
                WHERE a.grantee::regrole::text LIKE 'pushpop\\_%%'))
    """
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute(query, {"granted": granted})}


def test_readme_sql_table_names_every_function_a_role_may_call(dsn: str) -> None:
    section = readme_section("SQL API")
    missing = sorted(n for n in routines(dsn, granted=True) if f"`{n}(" not in section)
    assert missing == []


def test_sql_page_names_every_routine_of_the_schema(dsn: str) -> None:
    page = (ROOT / "docs" / "sql.md").read_text(encoding="utf-8")
    missing = sorted(n for n in routines(dsn, granted=False) if f"`{n}" not in page)
    assert missing == []
