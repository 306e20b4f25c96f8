"""Runs every figure round after round on each side, the sides taking turns to go first."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .env import Env
from .figures import Figure, Measure, Metric

BASELINE = "baseline"


@dataclass(frozen=True)
class Side:
    """Who is measured: pushpop (as migrated, or with extra SQL on top) or the baseline."""

    name: str
    env: Env

    def measure(self, figure: Figure) -> Measure | None:
        """This side's measurement of the figure."""
        return figure.baseline if self.name == BASELINE else figure.pushpop


@dataclass
class Row:
    """One metric of one figure: each side's value in every round."""

    figure: Figure
    metric: Metric
    values: dict[str, list[float]] = field(default_factory=dict)
    checkpoints: dict[str, list[int]] = field(default_factory=dict)
    """Checkpoints the server began during each round's measurement, per side."""


def _checkpoints(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    ).fetchone()
    return int(row[0]) if row else 0


def measure(sides: list[Side], figures: list[Figure], log: Callable[[str], None]) -> dict[str, Row]:
    """Sets each figure up (once per database) and runs its rounds; rows keyed by metric."""
    rows = {m.key: Row(f, m) for f in figures for m in f.metrics}
    envs = list({side.env.conninfo: side.env for side in sides}.values())
    previous: object = None
    with envs[0].connect() as monitor:
        for figure in figures:
            started = time.perf_counter()
            if figure.setup is not previous:  # the same setup twice in a row: reuse its tables
                for env in envs:
                    figure.setup(env)
            previous = figure.setup
            rounds = envs[0].settings.rounds
            for n in range(min(rounds, figure.rounds or rounds)):
                turn = sides[n % len(sides) :] + sides[: n % len(sides)]
                for side in turn:
                    run = side.measure(figure)
                    if run is None:
                        continue
                    before = _checkpoints(monitor)
                    values = run(side.env)
                    seen = _checkpoints(monitor) - before
                    for key, value in values.items():
                        rows[key].values.setdefault(side.name, []).append(value)
                        rows[key].checkpoints.setdefault(side.name, []).append(seen)
            log(f"{figure.name}: {time.perf_counter() - started:.1f}s")
    return rows
