"""``python -m benchmarks``: pushpop against hand-written SQL, on one server, in one run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pushpop import devdb

from . import baseline, catalog, report
from .env import Env, Settings, scratch_database, server_facts
from .rounds import BASELINE, Side, measure

QUICK = Settings(
    rounds=3, duration=0.5, warmup=0.15, depth=30_000, samples=20, bloat_seconds=2, quick=True
)
DEFAULT = Settings()


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    names = [f.name for f in catalog.figures(DEFAULT)]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short run (about 90 s, every figure)")
    p.add_argument(
        "--rounds", type=int, help=f"rounds per figure ({DEFAULT.rounds}; quick {QUICK.rounds})"
    )
    p.add_argument(
        "--depth", type=int, help=f"big tables' size ({DEFAULT.depth:,}; quick {QUICK.depth:,})"
    )
    p.add_argument(
        "--duration",
        type=float,
        help=f"seconds per measurement ({DEFAULT.duration}; quick {QUICK.duration})",
    )
    p.add_argument("--threads", type=int, help=f"threads per side ({DEFAULT.threads})")
    p.add_argument(
        "--bloat-seconds",
        type=float,
        help=f"how long the bloat figure's workload runs "
        f"({DEFAULT.bloat_seconds:g}; quick {QUICK.bloat_seconds:g})",
    )
    p.add_argument(
        "--dsn",
        help="server to use (default: DATABASE_URL, else local or embedded); "
        "a scratch database is created there and dropped at the end",
    )
    p.add_argument(
        "--with-sql",
        nargs="+",
        default=[],
        type=Path,
        metavar="FILE",
        help="SQL run on the scratch database after the migrations, to measure a proposed "
        "change (say, CREATE OR REPLACE FUNCTION pushpop.pop ...)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"run only these figures: {', '.join(names)}",
    )
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The preset (quick or default) with the flags given on top."""
    chosen = QUICK if args.quick else DEFAULT
    flags = {
        k: getattr(args, k) for k in ("rounds", "depth", "duration", "threads", "bloat_seconds")
    }
    return dataclasses.replace(chosen, **{k: v for k, v in flags.items() if v is not None})


def prepare(env: Env, sql_files: list[Path], log: Callable[[str], None]) -> None:
    """Creates the baseline's table beside pushpop's and applies any extra SQL."""
    with env.connect() as conn:
        baseline.create(conn)
        for path in sql_files:
            log(f"applying {path}")
            conn.execute(path.read_text(encoding="utf-8").encode())


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark, prints the table, writes the JSON."""
    args = parse(argv)
    # A plain kill unwinds like Ctrl-C does, so the scratch databases are dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = settings_from(args)
    figures = [f for f in catalog.figures(settings) if not args.only or f.name in args.only]

    def log(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    started, clock = datetime.now(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(devdb.server(args.dsn or os.environ.get("DATABASE_URL")))
        env = Env(stack.enter_context(scratch_database(server)), settings)
        prepare(env, [], log)
        sides = [Side("pushpop", env)]
        if args.with_sql:
            # pushpop with the extra SQL runs in a database of its own, in the same rounds.
            other = Env(stack.enter_context(scratch_database(server, "_sql")), settings)
            prepare(other, args.with_sql, log)
            sides.append(Side("pushpop+sql", other))
        sides.append(Side(BASELINE, env))
        with env.connect() as conn:
            facts = server_facts(conn)
        log(f"PostgreSQL {facts.get('server_version')}, {settings}")
        if facts.get("autovacuum") == "off" and any(f.name == "bloat" for f in figures):
            log("autovacuum is off on this server: the bloat figure shows growth without it")
        rows = measure(sides, figures, log)
    elapsed = time.perf_counter() - clock
    names = [side.name for side in sides]
    print(report.table(rows, names))
    about = {
        "elapsed_s": round(elapsed, 1),
        "server": facts,
        "extra_sql": [str(path) for path in args.with_sql],
    }
    path = report.save(rows, names, settings, about, started)
    print(f"\n{elapsed:.0f}s; saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
