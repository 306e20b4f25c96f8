"""Throwaway PostgreSQL clusters that a test may restart, crash, replicate and promote.

Each :class:`Cluster` lives in a temporary directory of its own, listens on a free port of
127.0.0.1 with trust authentication, and runs with ``fsync`` and ``synchronous_commit`` on,
so crashes behave as in production. The machine's shared server is never touched. Binaries
come from ``PUSHPOP_PG_BINDIR``, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin`` or the
``pgserver`` package. PostgreSQL refuses to run as root: under root every command runs as the
``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

NEEDED = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
HOW_TO_FIX = (
    "the fault tests start PostgreSQL clusters of their own and need its server binaries "
    "(initdb, pg_ctl, postgres, pg_basebackup): install the PostgreSQL server package, set "
    "PUSHPOP_PG_BINDIR to the folder holding them, or `pip install pgserver`; under root, "
    "an OS user named `postgres` must exist too"
)


class ClusterError(Exception):
    """A throwaway cluster could not be set up or driven; the message says why."""


def _has_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NEEDED)


def _version_key(folder: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder))


def candidate_bindirs() -> list[Path]:
    """Folders that may hold the server binaries, in order of preference."""
    found: list[Path] = []
    if explicit := os.environ.get("PUSHPOP_PG_BINDIR"):
        found.append(Path(explicit))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            found.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    found.extend(Path(v) for v in versions)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        found.append(Path(spec.origin).parent / "pginstall" / "bin")
    return found


def find_bindir() -> Path:
    """The first folder holding every binary in NEEDED; ClusterError if there is none."""
    for folder in candidate_bindirs():
        if _has_binaries(folder):
            return folder
    raise ClusterError(f"no PostgreSQL server binaries found: {HOW_TO_FIX}")


def run_as() -> tuple[list[str], str | None]:
    """The command prefix that runs a binary as an OS user PostgreSQL accepts, and that user.

    (None for the user means the current one, when it is not root.)
    """
    if os.geteuid() != 0:
        return [], None
    try:
        ids = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(f"running as root without a `postgres` OS user: {HOW_TO_FIX}") from None
    if runuser := shutil.which("runuser"):
        return [runuser, "-u", "postgres", "--"], "postgres"
    if setpriv := shutil.which("setpriv"):
        as_postgres = [f"--reuid={ids.pw_uid}", f"--regid={ids.pw_gid}", "--init-groups"]
        return [setpriv, *as_postgres], "postgres"
    raise ClusterError("running as root, but neither runuser nor setpriv is available")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """One PostgreSQL cluster in ``root`` (data, log and socket), on ``port`` of 127.0.0.1."""

    def __init__(self, root: Path, bindir: Path, name: str) -> None:
        self.root, self.bindir, self.name = root, bindir, name
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.port = free_port()
        self.prefix, self.user = run_as()

    # -- making one -------------------------------------------------------------------------

    @classmethod
    def create(cls, bindir: Path, name: str = "primary") -> Cluster:
        """initdb a new cluster (not started yet) in a fresh temporary directory."""
        root = Path(tempfile.mkdtemp(prefix=f"pushpop-{name}-"))
        cluster = cls(root, bindir, name)
        try:
            cluster._own(root)
            cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--locale=C")  # fmt: skip
            cluster._write_settings()
        except BaseException:
            cluster.remove()
            raise
        return cluster

    def standby(self, name: str = "standby") -> Cluster:
        """A streaming standby of this (running) cluster, cloned with ``pg_basebackup -R``.

        It connects with ``application_name=NAME``, the name ``synchronous_standby_names``
        lists; not started yet.
        """
        root = Path(tempfile.mkdtemp(prefix=f"pushpop-{name}-"))
        replica = Cluster(root, self.bindir, name)
        try:
            replica._own(root)
            source = f"host=127.0.0.1 port={self.port} user=postgres application_name={name}"
            replica._run("pg_basebackup", "-d", source, "-D", str(replica.data), "-R",
                         "-X", "stream", "-c", "fast")  # fmt: skip
            replica._write_settings()
        except BaseException:
            replica.remove()
            raise
        return replica

    def _own(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user)

    def _write_settings(self) -> None:
        """Settings of this cluster; appended last, so they win over the cloned ones."""
        self.set(
            listen_addresses="'127.0.0.1'",
            port=str(self.port),
            unix_socket_directories=f"'{self.root}'",
            fsync="on",
            synchronous_commit="on",
            full_page_writes="on",
            max_connections="200",
            shared_buffers="64MB",
            wal_level="replica",
            max_wal_senders="5",
            logging_collector="off",
            log_line_prefix="'%m [%p] '",
        )

    def set(self, **settings: str) -> None:
        """Appends settings to postgresql.conf (values as written there: quote strings)."""
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(lines)

    def allow_first(self, hba_line: str) -> None:
        """Puts a pg_hba.conf line before the trust lines (``reload()`` to apply it)."""
        hba = self.data / "pg_hba.conf"
        hba.write_text(hba_line + "\n" + hba.read_text(encoding="utf-8"), encoding="utf-8")

    # -- driving it ---------------------------------------------------------------------------

    def _run(self, binary: str, *args: str, timeout: float = 120) -> str:
        command = [*self.prefix, str(self.bindir / binary), *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False,
                cwd=self.root,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{binary} {' '.join(args)}: no answer in {timeout}s") from exc
        if done.returncode != 0:
            raise ClusterError(
                f"{binary} {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}"
            )
        return done.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", *args)

    def start(self) -> None:
        """Starts the server; returns once it accepts connections."""
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``immediate`` is a crash: recovery runs at the next start)."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``: stops in ``mode``, starts again, returns once it accepts."""
        self._pg_ctl("restart", "-m", mode)

    def promote(self) -> None:
        """Turns a standby into a primary; returns once it accepts writes."""
        self._pg_ctl("promote")

    def reload(self) -> None:
        """Makes the server read its configuration files again."""
        self._pg_ctl("reload")

    def running(self) -> bool:
        """Whether a postmaster runs on this data directory."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text(encoding="utf-8").split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, OSError):
            return False
        return True

    def remove(self) -> None:
        """Crashes the server if it runs and deletes everything; safe to call twice."""
        if self.running():
            with contextlib.suppress(ClusterError):
                self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "stop", "-m",
                          "immediate")  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    # -- talking to it ------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", **extra: str) -> str:
        """Conninfo of ``dbname`` on this cluster over TCP, as the superuser."""
        params = {"host": "127.0.0.1", "port": str(self.port), "user": "postgres",
                  "dbname": dbname, "connect_timeout": "5", **extra}  # fmt: skip
        return " ".join(f"{key}={value}" for key, value in params.items())

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit connection."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server log, to explain a failure."""
        if not self.logfile.exists():
            return ""
        text = self.logfile.read_text(encoding="utf-8", errors="replace").splitlines()
        return "server log:\n" + "\n".join(text[-lines:])


@contextlib.contextmanager
def throwaway(bindir: Path, name: str = "primary") -> Iterator[Cluster]:
    """A started cluster, crashed and deleted on exit whatever happened."""
    cluster = Cluster.create(bindir, name)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def wait_until_streaming(primary: Cluster, standby_name: str, timeout: float = 30) -> None:
    """Waits until ``standby_name`` replicates synchronously from ``primary``."""
    deadline = time.monotonic() + timeout
    with primary.connect() as conn:
        while True:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                [standby_name],
            ).fetchone()
            if row is not None and row[0] == "sync":
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"standby {standby_name} is not a synchronous one: {row}")
            time.sleep(0.05)
