"""Runs the rounds: in each, every peer measures every figure it has, one after the other."""

from __future__ import annotations

import contextlib
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ..latency import percentile
from .common import COLUMNS, Peer

FIGURES = ("push", "pop", "push_batch", "pop_batch", "p50", "p99")
"""The table's columns: the four rates, then the pickup percentiles."""


@dataclass
class Result:
    """One peer's figures over the rounds, and why any are missing."""

    peer: Peer
    values: dict[str, list[float]] = field(default_factory=dict)
    version: str = ""
    error: str = ""

    def median(self, figure: str) -> float | None:
        """The median over the rounds, if measured."""
        values = self.values.get(figure)
        return statistics.median(values) if values else None


def _measure(peer: Peer, column: str) -> dict[str, float]:
    if column == "latency":
        samples = peer.latency()
        if samples is None:
            return {}
        return {"p50": statistics.median(samples), "p99": percentile(samples, 99)}
    method: Callable[[], float | None] = getattr(peer, column)
    rate = method()
    return {} if rate is None else {column: rate}


def run(peers: list[Peer], rounds: int, log: Callable[[str], None]) -> list[Result]:
    """Opens every peer, measures ``rounds`` rounds, closes them; a failing peer is skipped.

    Each round goes through the peers in turn, so a slow moment of the machine falls on
    one round of each rather than on every round of one.
    """
    results = [Result(peer) for peer in peers]
    with contextlib.ExitStack() as stack:
        live: list[Result] = []
        for result in results:
            try:
                stack.enter_context(result.peer.opened())
                result.version = result.peer.version()
                live.append(result)
                log(f"{result.peer.name}: {result.version}")
            except Exception as exc:
                result.error = f"could not be set up: {exc}"
                log(f"{result.peer.name}: {result.error}")
        for n in range(1, rounds + 1):
            for result in live:
                if result.error:
                    continue
                for column in COLUMNS:
                    started = time.perf_counter()
                    try:
                        figures = _measure(result.peer, column)
                    except Exception as exc:
                        result.error = f"{column} failed in round {n}: {exc}"
                        log(f"{result.peer.name}: {result.error}")
                        log(traceback.format_exc())
                        break
                    for key, value in figures.items():
                        result.values.setdefault(key, []).append(value)
                    if figures:
                        shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                        took = time.perf_counter() - started
                        log(f"round {n}/{rounds} {result.peer.name}: {shown} ({took:.1f} s)")
    return results
