"""``python -m benchmarks.peers``: pushpop and its peers, the same workload, one run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
import time
from datetime import UTC, datetime

from .common import Config, Peer
from .report import cell, save, write
from .runner import FIGURES, run

QUICK = Config(messages=2_000, rounds=2, samples=50)
DEFAULT = Config()


def peer_classes() -> list[type[Peer]]:
    """Every peer, in the table's order; a peer whose package is missing is left out."""
    from .bare import Psycopg
    from .pgbench import Pgbench
    from .pgq import Pgq
    from .pushpop_peers import PushpopClient, PushpopWorker

    found: list[type[Peer]] = [Pgbench, Psycopg, Pgq]
    try:
        from .rabbitmq import RabbitMQ

        found.append(RabbitMQ)
    except ImportError as exc:
        print(f"bench-peers: RabbitMQ left out ({exc})", file=sys.stderr)
    try:
        from .pgqueuer_peer import PgQueuer

        found.append(PgQueuer)
    except ImportError as exc:
        print(f"bench-peers: pgqueuer left out ({exc})", file=sys.stderr)
    try:
        from .procrastinate_peer import Procrastinate

        found.append(Procrastinate)
    except ImportError as exc:
        print(f"bench-peers: procrastinate left out ({exc})", file=sys.stderr)
    return [*found, PushpopClient, PushpopWorker]


NAMES = ["pgbench", "psycopg", "pgq", "rabbitmq", "pgqueuer", "procrastinate", "pushpop", "worker"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: {QUICK.messages:,} messages, {QUICK.rounds} rounds, "
        f"{QUICK.samples} pickups a round",
    )
    p.add_argument("--rounds", type=int, help=f"rounds ({DEFAULT.rounds})")
    p.add_argument("--messages", type=int, help=f"messages per figure ({DEFAULT.messages:,})")
    p.add_argument("--samples", type=int, help=f"pickups timed a round ({DEFAULT.samples})")
    p.add_argument(
        "--dsn",
        help="the PostgreSQL server (default: DATABASE_URL, else postgres@127.0.0.1:5432); "
        "each peer gets a scratch database there, dropped at the end",
    )
    amqp = DEFAULT.amqp_url.replace("%", "%%")  # argparse formats help with %
    p.add_argument("--amqp", help=f"the RabbitMQ URL (default {amqp})")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=", ".join(NAMES))
    p.add_argument(
        "--no-write", action="store_true", help="print the table only; leave docs/ alone"
    )
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    """The preset (quick or default) with the flags given on top."""
    flags = {
        "rounds": args.rounds,
        "messages": args.messages,
        "samples": args.samples,
        "server": args.dsn or os.environ.get("DATABASE_URL"),
        "amqp_url": args.amqp,
    }
    chosen = QUICK if args.quick else DEFAULT
    return dataclasses.replace(chosen, **{k: v for k, v in flags.items() if v is not None})


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} seconds" if seconds < 120 else f"{seconds / 60:.0f} minutes"


def main(argv: list[str] | None = None) -> int:
    """Runs every peer's rounds, then writes the page and the chart."""
    args = parse(argv)
    # A plain kill unwinds like Ctrl-C does, so the scratch databases and the queue go.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = config_from(args)

    def log(line: str) -> None:
        print(f"bench-peers: {line}", file=sys.stderr, flush=True)

    peers = [cls(config) for cls in peer_classes() if not args.only or cls.name in args.only]
    when, clock, load = datetime.now(UTC), time.perf_counter(), os.getloadavg()[0]
    log(f"{config.total:,} messages, {config.rounds} rounds, {config.samples} pickups a round")
    results = run(peers, config.rounds, log)
    log(f"{time.perf_counter() - clock:.0f} s")
    for r in results:
        print(f"{r.peer.label:40} " + " | ".join(f"{cell(r, f):>24}" for f in FIGURES))
    command = shlex.join(["python", "-m", "benchmarks.peers", *(argv or sys.argv[1:])])
    log(f"saved {save(results, config, when, command)}")
    if not args.no_write:
        run_facts = {
            "took": _duration(time.perf_counter() - clock),
            "load": f"{load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end",
        }
        page, png = write(results, config, when, command, run_facts)
        log(f"wrote {page} and {png}")
    return 0 if all(not r.error for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
