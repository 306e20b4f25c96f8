"""``python -m benchmarks.citus``: push and pop + complete on one server and on Citus, one run.

Three setups side by side, each started here as throwaway clusters on free ports (the shared
server is never touched): one plain PostgreSQL server, a Citus coordinator with one worker node,
and one with two. Each round measures every setup in turn: 4 producer threads push for a fixed
time, then 4 consumer threads pop and complete, all through :class:`pushpop.Client`, across 16
topics. The CPU that each node's processes spend is read from ``/proc`` around each phase, which
gives the CPU per call behind the model of a real cluster. One extra round per Citus setup runs
the same calls with ``citus.log_remote_commands`` on and counts, call by call, the worker nodes
each one reached.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pushpop import Client, migrations

# The cluster helpers of the test suite (tests/cluster.py, tests/citus.py): the same nodes the
# Citus tests run on.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from citus import NODE_SETTINGS, CitusCluster, citus_missing
from cluster import Cluster, ClusterError, find_bindir, run_as

TOPICS = [f"topic-{n:02d}" for n in range(16)]
THREADS = 4
SHARDS = 32
DBNAME = "bench_citus"
# The plain server runs with the Citus nodes' durability settings, so only Citus differs.
DURABILITY = {
    key: NODE_SETTINGS[key] for key in ("fsync", "synchronous_commit", "full_page_writes")
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    """How long and how often: seconds per phase and rounds per setup."""

    seconds: float = 5.0
    rounds: int = 5
    routing_calls: int = 400


QUICK = Config(seconds=2.0, rounds=3, routing_calls=160)


# -- nodes and their CPU --------------------------------------------------------------------------


def node_cpu(node: Cluster) -> float:
    """CPU seconds spent so far by a node's postmaster, its live children and reaped ones."""
    pid = int((node.data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is in the postmaster's children's time now
        # fields[0] is the state (stat's 3rd field): ppid is [1], utime..cstime are [11:15].
        if entry.name == str(pid):
            total += sum(int(f) for f in fields[11:15])
        elif fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


@dataclass
class Setup:
    """One thing measured: its name, the conninfo clients use, and its nodes by role."""

    name: str
    dsn: str
    coordinator: Cluster
    workers: list[Cluster]

    def cpu(self) -> list[float]:
        """CPU seconds so far of the coordinator (or the one server), then of each worker."""
        return [node_cpu(node) for node in [self.coordinator, *self.workers]]


def plain_server(bindir: Path, stack: ExitStack) -> Setup:
    """One PostgreSQL server with pushpop migrated: the baseline."""
    server = Cluster.create(bindir, "bench-plain")
    stack.callback(server.remove)
    server.set(**DURABILITY)
    server.start()
    with server.connect() as conn:
        conn.autocommit = True
        conn.execute(f"CREATE DATABASE {DBNAME}")
    dsn = server.dsn(DBNAME)
    migrations.migrate(dsn)
    return Setup("one server", dsn, server, [])


def citus_setup(bindir: Path, workers: int, stack: ExitStack) -> Setup:
    """A coordinator and ``workers`` worker nodes with pushpop migrated and distributed."""
    cluster = CitusCluster.start(bindir, workers)
    stack.callback(cluster.remove)
    dsn = cluster.create_database(DBNAME)
    migrations.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pushpop.distribute(shard_count => %s)", [SHARDS])
    label = f"Citus, {workers} worker node{'s' if workers > 1 else ''}"
    return Setup(label, dsn, cluster.coordinator, cluster.workers)


# -- the load -------------------------------------------------------------------------------------


def run_threads(work: Callable[[int, threading.Event], int], seconds: float) -> tuple[int, float]:
    """Runs ``work(index, stop)`` on THREADS threads for ``seconds``; total count, elapsed."""
    stop, counts = threading.Event(), [0] * THREADS
    ready = threading.Barrier(THREADS + 1)

    def run(index: int) -> None:
        ready.wait()
        counts[index] = work(index, stop)

    threads = [threading.Thread(target=run, args=(i,), name=f"bench-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - started


@contextmanager
def clients(dsn: str) -> Iterator[list[Client]]:
    """One client per thread, each with its one connection made already."""
    with ExitStack() as stack:
        made = [stack.enter_context(Client(dsn, min_size=1, max_size=1)) for _ in range(THREADS)]
        for client in made:
            client.find("00000000-0000-4000-8000-000000000000")  # connected before timing
        yield made


def producing(made: list[Client]) -> Callable[[int, threading.Event], int]:
    """Each thread pushes one message at a time, to the 16 topics in turn."""

    def work(index: int, stop: threading.Event) -> int:
        client, n = made[index], 0
        while not stop.is_set():
            client.push(TOPICS[(index * 4 + n) % len(TOPICS)], b"x")
            n += 1
        return n

    return work


def consuming(made: list[Client], dry: list[int]) -> Callable[[int, threading.Event], int]:
    """Each thread pops one message and completes it, from the 16 topics in turn."""

    def work(index: int, stop: threading.Event) -> int:
        client, n, empty = made[index], 0, 0
        for turn in itertools.count():
            if stop.is_set():
                break
            msg = client.pop(TOPICS[(index * 4 + turn) % len(TOPICS)])
            if msg is None:
                empty += 1
                continue
            msg.complete()
            n += 1
        dry[index] = empty
        return n

    return work


@dataclass
class Phase:
    """One phase of one round: calls per second and CPU seconds per call of each node."""

    rate: float
    cpu_per_call: list[float]


@dataclass
class Result:
    """Every round of one setup, and the routing count of its extra round."""

    setup: Setup
    push: list[Phase] = field(default_factory=list)
    pop: list[Phase] = field(default_factory=list)
    empty_pops: int = 0
    routed: dict[str, dict[int, int]] = field(default_factory=dict)
    load_cpu: list[float] = field(default_factory=list)


def reset(dsn: str) -> None:
    """An empty queue, its dead rows gone, so every round starts alike."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pushpop.messages")


def top_up(dsn: str, per_topic: int) -> None:
    """At least ``per_topic`` more ready messages in every topic, in batches of 500."""
    with Client(dsn, min_size=1, max_size=1) as client:
        for topic in TOPICS:
            for start in range(0, per_topic, 500):
                client.push_many(topic, [b"x"] * min(500, per_topic - start))


def measured(setup: Setup, work: Callable[[int, threading.Event], int], seconds: float) -> Phase:
    """Runs one phase; its rate and the CPU per call of each node."""
    before = setup.cpu()
    calls, elapsed = run_threads(work, seconds)
    spent = [after - b for after, b in zip(setup.cpu(), before, strict=True)]
    return Phase(calls / elapsed, [s / max(calls, 1) for s in spent])


def one_round(result: Result, config: Config) -> None:
    """Pushes for a while, tops the topics up, then pops and completes for as long."""
    setup = result.setup
    reset(setup.dsn)
    load = time.process_time()
    with clients(setup.dsn) as made:
        push = measured(setup, producing(made), config.seconds)
        # As many again as were pushed: the consumers must not run dry.
        top_up(setup.dsn, int(push.rate * config.seconds) // len(TOPICS) + 100)
        dry = [0] * THREADS
        pop = measured(setup, consuming(made, dry), config.seconds)
    result.load_cpu.append((time.process_time() - load) / (2 * config.seconds))
    result.push.append(push)
    result.pop.append(pop)
    result.empty_pops += sum(dry)


# -- routing --------------------------------------------------------------------------------------


def routing(setup: Setup, calls: int) -> dict[str, dict[int, int]]:
    """Per kind of call, how many calls reached how many worker nodes, counted call by call.

    One client whose one connection has ``citus.log_remote_commands`` on: Citus reports each
    command it sends to a node as a notice naming the node, collected per call.
    """
    reset(setup.dsn)
    options = "-c citus.log_remote_commands=on -c client_min_messages=notice"
    ports: set[int] = set()
    counts: dict[str, dict[int, int]] = {"push": {}, "pop": {}, "complete": {}}
    worker_ports = {w.port for w in setup.workers}

    def note(diagnostic: psycopg.errors.Diagnostic) -> None:
        detail = diagnostic.message_detail or ""
        for port in worker_ports:
            if f":{port}" in detail:
                ports.add(port)

    def counted(kind: str, call: Callable[[], Any]) -> Any:
        ports.clear()
        value = call()
        counts[kind][len(ports)] = counts[kind].get(len(ports), 0) + 1
        return value

    with Client(f"{setup.dsn} options='{options}'", min_size=1, max_size=1) as client:
        # The client's one connection: every call below runs on it. (The pool is private;
        # a benchmark may look inside to hear what the server says during each call.)
        with client._pool.connection() as conn:
            conn.add_notice_handler(note)
        for n in range(calls):
            counted("push", functools.partial(client.push, TOPICS[n % len(TOPICS)], b"x"))
        for n in range(calls):
            msg = counted("pop", functools.partial(client.pop, TOPICS[n % len(TOPICS)]))
            if msg is not None:
                counted("complete", msg.complete)
    return counts


# -- the report -----------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """Median, with the lowest and highest round, as whole numbers."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f} to {max(values):,.0f})"


def cpu_cell(phases: list[Phase]) -> str:
    """Median CPU ms per call: the coordinator (or server), then the workers' sum."""
    coordinator = statistics.median(p.cpu_per_call[0] for p in phases) * 1000
    if len(phases[0].cpu_per_call) == 1:
        return f"{coordinator:.2f}"
    workers = statistics.median(sum(p.cpu_per_call[1:]) for p in phases) * 1000
    return f"{coordinator:.2f} + {workers:.2f}"


def single_share(routed: dict[str, dict[int, int]]) -> str:
    """The share of calls that reached exactly one worker node, with the counts."""
    total = sum(sum(by.values()) for by in routed.values())
    one = sum(by.get(1, 0) for by in routed.values())
    other = {k: v for by in routed.values() for k, v in by.items() if k != 1}
    tail = f"; {other}" if other else ""
    return f"{100 * one / total:.1f}% ({one:,} of {total:,}{tail})"


def table(results: list[Result]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| | push/s | pop + complete/s | CPU ms per push | CPU ms per pop + complete "
        "| calls on one worker node |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        share = single_share(r.routed) if r.routed else "n/a"
        lines.append(
            f"| {r.setup.name} | {spread([p.rate for p in r.push])} "
            f"| {spread([p.rate for p in r.pop])} | {cpu_cell(r.push)} | {cpu_cell(r.pop)} "
            f"| {share} |"
        )
    return "\n".join(lines)


def model(results: list[Result], cores: int) -> str:
    """Calls per second of a cluster of ``cores``-core nodes, from the measured CPU per call.

    Per worker node: ``cores`` ÷ the CPU a call costs on the worker that runs it (the largest
    Citus setup's median); times the worker nodes, for topics spread evenly over them. Every
    client goes through the coordinator, so the cluster is capped at ``cores`` ÷ the
    coordinator's CPU per call.
    """
    plain, largest = results[0], results[-1]

    def per_call(phases: list[Phase], workers: bool) -> float:
        return statistics.median(sum(p.cpu_per_call[1:]) if workers else p.cpu_per_call[0]
                                 for p in phases)  # fmt: skip

    lines = [
        f"| {cores}-core nodes | push/s | capped by the coordinator | pop + complete/s "
        "| capped by the coordinator |",
        "|---|---|---|---|---|",
        f"| one server | {cores / per_call(plain.push, False):,.0f} | "
        f"| {cores / per_call(plain.pop, False):,.0f} | |",
    ]
    for nodes in (1, 2, 4, 8):
        cells = []
        for phases in (largest.push, largest.pop):
            spread_over = nodes * cores / per_call(phases, True)
            cap = cores / per_call(phases, False)
            cells += [f"{spread_over:,.0f}", f"{min(spread_over, cap):,.0f}"]
        lines.append(f"| Citus, {nodes} worker node{'s' if nodes > 1 else ''} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def topic_spread(setup: Setup) -> str:
    """How many of the 16 topics each worker node holds."""
    with psycopg.connect(setup.dsn) as conn:
        rows = conn.execute(
            "SELECT nodeport, count(*) FROM unnest(%s::text[]) AS t(topic)"
            " JOIN citus_shards ON shardid = get_shard_id_for_distribution_column("
            "   'pushpop.messages', pushpop.route_of(t.topic))"
            " GROUP BY nodeport ORDER BY 2 DESC",
            [TOPICS],
        ).fetchall()
    return " / ".join(str(count) for _, count in rows)


# -- the run --------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.citus", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rounds} rounds of {QUICK.seconds:g} s a phase "
        f"(default {Config.rounds} of {Config.seconds:g} s)",
    )
    p.add_argument("--rounds", type=int, help="rounds per setup")
    p.add_argument("--seconds", type=float, help="seconds per phase")
    p.add_argument("--cores", type=int, default=16, help="cores per node in the model (16)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Starts the three setups, measures them round after round, prints the tables."""
    args = parse(argv)
    config = QUICK if args.quick else Config()
    config = Config(
        seconds=args.seconds or config.seconds,
        rounds=args.rounds or config.rounds,
        routing_calls=config.routing_calls,
    )
    try:
        bindir = find_bindir()
        run_as()
    except ClusterError as exc:
        print(f"bench-citus: {exc}", file=sys.stderr)
        return 2
    if (reason := citus_missing(bindir)) is not None:
        print(f"bench-citus: {reason}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.citus" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    started = datetime.now(UTC)
    with ExitStack() as stack:
        results = [
            Result(plain_server(bindir, stack)),
            Result(citus_setup(bindir, 1, stack)),
            Result(citus_setup(bindir, 2, stack)),
        ]
        for n in range(config.rounds):
            turn = results[n % len(results) :] + results[: n % len(results)]
            for result in turn:
                one_round(result, config)
            print(f"round {n + 1} of {config.rounds} done", file=sys.stderr)
        for result in results[1:]:
            result.routed = routing(result.setup, config.routing_calls)
        spread_of = topic_spread(results[-1].setup)
    print(f"{started:%Y-%m-%d %H:%M} UTC, `{command.strip()}`, {os.cpu_count()} CPUs")
    print(f"{config.rounds} rounds of {config.seconds:g} s a phase, {THREADS} threads, "
          f"{len(TOPICS)} topics, {SHARDS} shards")  # fmt: skip
    print()
    print(table(results))
    print()
    dry = {r.setup.name: r.empty_pops for r in results if r.empty_pops}
    load = {r.setup.name: f"{statistics.median(r.load_cpu):.2f}" for r in results}
    print(f"empty pops: {dry or 'none'}; load generator, CPUs busy: {load}")
    print(f"topics per worker node, {results[-1].setup.name}: {spread_of}")
    print()
    print(model(results, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
