"""A Citus coordinator and its worker nodes as throwaway clusters, for the distributed tests.

Each node is a :class:`cluster.Cluster` of its own (own temporary directory, free port of
127.0.0.1, unix socket in that directory) started with ``shared_preload_libraries = 'citus'``.
The machine's shared server is never touched. Citus keeps its node list per database, so
:meth:`CitusCluster.create_database` makes a database on every node, creates the extension in
each and registers the workers with the coordinator; :meth:`CitusCluster.add_worker` adds a
node later (for a rebalance) and :meth:`CitusCluster.restart_worker` restarts one.

Without Citus the tests that need it skip, unless ``CI`` is set: then they fail, so CI cannot
pass without them (``make citus`` installs it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import pytest
from cluster import Cluster, ClusterError, find_bindir, run_as
from psycopg import sql

T = TypeVar("T")

HOW_TO_INSTALL = "`make citus` builds and installs it from CITUS_SOURCE (../shared/vendor/citus)"

# Settings every node gets, on top of cluster.py's. Citus talks to its nodes over plain TCP on
# 127.0.0.1 (no TLS to set up); background jobs such as the rebalancer connect back to the
# coordinator by citus.local_hostname, which must be the address the node listens on; shard
# moves copy through logical replication.
NODE_SETTINGS = {
    "shared_preload_libraries": "'citus'",
    "citus.node_conninfo": "'sslmode=disable'",
    "citus.local_hostname": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_worker_processes": "32",
    # The rebalancer's jobs start within this, not the default 5 s.
    "citus.background_task_queue_interval": "'100ms'",
    # Not crash tests: a node's commit need not wait for the disk, which makes the 2PC of a
    # distributed transaction cheap on a shared CI machine. Restarts are clean (``fast``).
    # An online shard move needs synchronous_commit on: ONLINE_MOVES below.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

# What a cluster that moves shards online (logical replication) changes in NODE_SETTINGS. With
# synchronous_commit off, a move loses the last commits made on the source node just before it
# blocks writes: Citus's final catch-up waits for the source's pg_current_wal_lsn(), the WAL
# *write* position, which an asynchronous commit has not reached until the WAL writer writes it
# (up to 3 x wal_writer_delay later), and then switches to the new placement and drops the
# subscription (multi_logical_replication.c, WaitForAllSubscriptionsToCatchUp). With fsync off,
# a synchronous commit costs a write(), not a flush. See "Rebalancing" in docs/scaling.md.
ONLINE_MOVES = {"synchronous_commit": "on"}

# What citus.log_remote_commands adds to each command it reports: the node it was sent to.
_REMOTE_NODE = re.compile(r"on server \S+@(?P<host>[^:\s]+):(?P<port>\d+)")


def _pg_config(bindir: Path) -> str | None:
    beside = bindir / "pg_config"
    return str(beside) if beside.is_file() else shutil.which("pg_config")


def citus_missing(bindir: Path) -> str | None:
    """Why these server binaries cannot load Citus, or None when they can."""
    pg_config = _pg_config(bindir)
    if pg_config is None:
        return f"no pg_config beside {bindir} or on the PATH to find Citus with"
    try:
        out = subprocess.run(
            [pg_config, "--pkglibdir", "--sharedir"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{pg_config} failed: {exc}"
    pkglibdir, sharedir = Path(out[0]), Path(out[1])
    if not (pkglibdir / "citus.so").is_file():
        return f"Citus is not installed: no citus.so in {pkglibdir}; {HOW_TO_INSTALL}"
    if not (sharedir / "extension" / "citus.control").is_file():
        return f"Citus is half installed: no extension/citus.control in {sharedir}"
    return None


def unavailable(reason: str) -> NoReturn:
    """Skips the test, or fails it when ``CI`` is set: CI must never pass without Citus."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"Citus tests cannot run, and CI requires them: {reason}", pytrace=False)
    pytest.skip(f"Citus tests skipped: {reason}")


def _parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Runs jobs on threads (initdb and start wait on subprocesses); their results in order."""
    with ThreadPoolExecutor(max(1, len(jobs))) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


def _node(bindir: Path, name: str, settings: dict[str, str] | None = None) -> Cluster:
    """A new, not yet started cluster set up to run Citus; ``settings`` override
    NODE_SETTINGS."""
    node = Cluster.create(bindir, name)
    node.set(**{**NODE_SETTINGS, **(settings or {})})
    return node


class CitusCluster:
    """A coordinator and its workers, each a throwaway cluster on 127.0.0.1."""

    def __init__(
        self,
        bindir: Path,
        coordinator: Cluster,
        workers: list[Cluster],
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir, self.coordinator, self.workers = bindir, coordinator, workers
        self.settings = dict(settings or {})
        self.databases: list[str] = []

    # -- making one -------------------------------------------------------------------------

    @classmethod
    def start(
        cls, bindir: Path, workers: int = 2, settings: dict[str, str] | None = None
    ) -> CitusCluster:
        """Creates and starts a coordinator and ``workers`` worker nodes, in parallel;
        ``settings`` override NODE_SETTINGS on every node, the ones added later too."""
        names = ["citus-coordinator", *(f"citus-worker{n + 1}" for n in range(workers))]
        with ThreadPoolExecutor(len(names)) as pool:
            creating = [pool.submit(_node, bindir, name, settings) for name in names]
        made = [f.result() for f in creating if f.exception() is None]
        try:
            for f in creating:
                f.result()  # the first initdb that failed, if any
            _parallel([node.start for node in made])
        except BaseException:
            _parallel([node.remove for node in made])
            raise
        return cls(bindir, made[0], made[1:], settings)

    @property
    def nodes(self) -> list[Cluster]:
        """Every node, the coordinator first."""
        return [self.coordinator, *self.workers]

    def create_database(self, dbname: str) -> str:
        """Makes ``dbname`` on every node with Citus in it and the workers registered.

        Returns the coordinator's conninfo for it: the one address clients use.
        """
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
        for node in self.nodes:
            with node.connect() as conn:
                conn.execute(statement)
        _parallel([functools.partial(self._create_extension, node, dbname) for node in self.nodes])
        with self.coordinator.connect(dbname) as conn:
            conn.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', %s)", [self.coordinator.port]
            )
            for worker in self.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", [worker.port])
        self.databases.append(dbname)
        return self.coordinator.dsn(dbname)

    def drop_database(self, dbname: str) -> None:
        """Drops ``dbname`` from every node, whoever is still connected to it."""
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        statement = drop.format(sql.Identifier(dbname))
        for node in self.nodes:
            if node.running():
                with node.connect() as conn:
                    # Citus's maintenance daemon may connect again between FORCE's kill and
                    # the drop; the next attempt kills it too.
                    for attempt in range(5):
                        try:
                            conn.execute(statement)
                            break
                        except psycopg.errors.ObjectInUse:
                            if attempt == 4:
                                raise
        if dbname in self.databases:
            self.databases.remove(dbname)

    def freeze_as_template(self, dbname: str) -> None:
        """Makes ``dbname`` a template on every node: no connections, so it can be copied.

        Citus keeps a maintenance connection to each of its databases; it goes too.
        """
        for node in self.nodes:
            with node.connect() as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                        sql.Identifier(dbname)
                    )
                )
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [dbname],
                )

    def clone_database(self, template: str, dbname: str) -> str:
        """Copies a frozen template on every node under one new name: the copies form a
        distributed database of their own, with its shards and metadata, in a fraction of a
        second. Returns the coordinator's conninfo for it."""
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(dbname), sql.Identifier(template)
        )
        for node in self.nodes:
            with node.connect() as conn:
                conn.execute(statement)
        self.databases.append(dbname)
        return self.coordinator.dsn(dbname)

    @staticmethod
    def _create_extension(node: Cluster, dbname: str) -> None:
        with node.connect(dbname) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS citus")

    def add_worker(self) -> Cluster:
        """Starts one more worker node and registers it in every database made so far.

        It holds no shards until they are moved to it (``citus_rebalance_start``).
        """
        node = _node(self.bindir, f"citus-worker{len(self.workers) + 1}", self.settings)
        try:
            node.start()
            for dbname in self.databases:
                with node.connect() as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                self._create_extension(node, dbname)
                with self.coordinator.connect(dbname) as conn:
                    conn.execute("SELECT citus_add_node('127.0.0.1', %s)", [node.port])
        except BaseException:
            node.remove()
            raise
        self.workers.append(node)
        return node

    def restart_worker(self, index: int, mode: str = "fast") -> None:
        """Restarts worker ``index`` (``immediate`` is a crash); returns once it accepts again."""
        self.workers[index].restart(mode)

    def remove(self) -> None:
        """Stops every node and deletes its files; safe to call twice."""
        _parallel([node.remove for node in self.nodes])

    # -- looking at it ------------------------------------------------------------------------

    def worker_of_port(self, port: int) -> int | None:
        """The index in ``workers`` of the node on ``port``; None for the coordinator."""
        for index, worker in enumerate(self.workers):
            if worker.port == port:
                return index
        if port == self.coordinator.port:
            return None
        raise ClusterError(f"no node of this Citus cluster listens on port {port}")


def shard_ports(conn: psycopg.Connection[Any], table: str) -> dict[int, int]:
    """Where each shard of a distributed table lives: shard id -> port of its node."""
    rows = conn.execute(
        "SELECT shardid, nodeport FROM citus_shards WHERE table_name = %s::regclass", [table]
    ).fetchall()
    return {int(shard): int(port) for shard, port in rows}


def remote_commands(
    conn: psycopg.Connection[Any], statement: Any, params: Sequence[Any] = ()
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Runs one statement with ``citus.log_remote_commands`` on.

    Returns its rows and each command the coordinator sent on, as (port of the node, command).
    """
    sent: list[tuple[int, str]] = []

    def note(diagnostic: psycopg.errors.Diagnostic) -> None:
        message, detail = diagnostic.message_primary or "", diagnostic.message_detail or ""
        found = _REMOTE_NODE.search(detail)
        if message.startswith("issuing ") and found:
            sent.append((int(found["port"]), message.removeprefix("issuing ")))

    conn.add_notice_handler(note)
    try:
        conn.execute("SET citus.log_remote_commands = on")
        conn.execute("SET client_min_messages = notice")
        rows = conn.execute(statement, params).fetchall()
    finally:
        conn.execute("RESET citus.log_remote_commands")
        conn.execute("RESET client_min_messages")
        conn.remove_notice_handler(note)
    return rows, sent


@contextlib.contextmanager
def citus_or_skip(
    workers: int = 2, settings: dict[str, str] | None = None
) -> Iterator[CitusCluster]:
    """A started Citus cluster, removed on exit; skips (fails under ``CI``) without Citus.
    ``settings`` override NODE_SETTINGS (ONLINE_MOVES for a cluster that rebalances)."""
    try:
        bindir = find_bindir()
        run_as()
    except ClusterError as exc:
        unavailable(str(exc))
    if (reason := citus_missing(bindir)) is not None:
        unavailable(reason)
    started = CitusCluster.start(bindir, workers, settings)
    try:
        yield started
    finally:
        started.remove()
