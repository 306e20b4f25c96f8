"""Turns the rounds into medians, prints the table and saves everything as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

import pushpop

from .env import Settings
from .figures import TIMES
from .rounds import BASELINE, Row

OUT_DIR = Path(__file__).resolve().parent.parent / ".bench"


def median(row: Row, side: str) -> float | None:
    """The side's median over the rounds, if it was measured."""
    values = row.values.get(side)
    return statistics.median(values) if values else None


def ratio(row: Row, side: str, other: str = BASELINE) -> float | None:
    """The median, over the rounds, of side / other within each round.

    Each round measures both sides back to back, so a round's ratio is untouched by the
    machine getting slower or faster between rounds, which a ratio of medians is not.
    """
    a, b = row.values.get(side), row.values.get(other)
    if not a or not b:
        return None
    paired = [x / y for x, y in zip(a, b, strict=True) if y]  # every round measures both
    return statistics.median(paired) if paired else None


def relative(rows: dict[str, Row], row: Row, side: str) -> float | None:
    """A scaling figure against the figure it is relative to, on one side."""
    ref = rows.get(row.metric.relative_to or "")
    if ref is None:
        return None
    a, b = median(row, side), median(ref, side)
    return a / b if a is not None and b else None


def beyond_baseline(rows: dict[str, Row], row: Row, side: str) -> float | None:
    """A scaling figure's change on one side, over the baseline's change on the same tables.

    Each is a ratio of paired rounds (pushpop / baseline, back to back), so unlike
    :func:`relative` it is untouched by the machine's speed drifting between the two figures.
    """
    ref = rows.get(row.metric.relative_to or "")
    if ref is None or side == BASELINE:
        return None
    a, b = ratio(row, side), ratio(ref, side)
    return a / b if a is not None and b else None


DECIMALS = {"ms": 1, TIMES: 2}
"""Digits after the point, by unit; whole numbers for the rest (msg/s, kB)."""


def _number(value: float, unit: str) -> str:
    return f"{value:,.{DECIMALS.get(unit, 0)}f}"


def _cell(values: list[float] | None, unit: str) -> str:
    if not values:
        return "-"
    low, high = _number(min(values), unit), _number(max(values), unit)
    return f"{_number(statistics.median(values), unit)} ({low}-{high})"


def _align(lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return [line.rstrip() for line in text]


def table(rows: dict[str, Row], sides: list[str]) -> str:
    """The results as text: medians with (min-max) over the rounds, and ratios to the baseline."""
    ours = [side for side in sides if side != BASELINE]
    head = ["figure", "unit", *sides, *(f"{side}/baseline" for side in ours)]
    lines = [head]
    for row in rows.values():
        unit = row.metric.unit + (" (lower is better)" if not row.metric.higher_is_better else "")
        cells = [_cell(row.values.get(side), row.metric.unit) for side in sides]
        ratios = [ratio(row, side) for side in ours]
        lines.append(
            [row.metric.label, unit, *cells, *("-" if r is None else f"{r:.2f}" for r in ratios)]
        )
    text = _align(lines)
    scaled = [row for row in rows.values() if relative(rows, row, sides[0]) is not None]
    if scaled:
        text += [
            "",
            "scaling, each side against its own figure on a small table; then pushpop's change"
            " over the baseline's (paired rounds: drift between the figures cancels out):",
        ]
        for row in scaled:
            parts = [f"{side} {relative(rows, row, side) or 0:.2f}x" for side in sides]
            parts += [
                f"{side} over baseline {beyond:.2f}x"
                for side in sides
                if (beyond := beyond_baseline(rows, row, side)) is not None
            ]
            text.append(f"  {row.metric.label}: {', '.join(parts)}")
    notes = {row.figure.name: row.figure.note for row in rows.values() if row.figure.note}
    text += ["", *(f"{name}: {note}" for name, note in notes.items())]
    disturbed = sum(1 for row in rows.values() for n in row.checkpoints.values() for c in n if c)
    total = sum(len(n) for row in rows.values() for n in row.checkpoints.values())
    if disturbed:
        text.append(f"\n{disturbed} of {total} measurements saw a checkpoint begin (see the JSON).")
    return "\n".join(text)


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__} implementation)",
        "pushpop": pushpop.__version__,
    }


def _side(row: Row, side: str) -> dict[str, Any] | None:
    values = row.values.get(side)
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
        "checkpoints": row.checkpoints.get(side, []),
    }


def save(
    rows: dict[str, Row],
    sides: list[str],
    settings: Settings,
    about: dict[str, Any],
    started: datetime,
) -> Path:
    """Writes the run as JSON under ``.bench/`` and returns the file's path."""
    doc = {
        "started": started.isoformat(timespec="seconds"),
        **about,
        "settings": dataclasses.asdict(settings),
        "machine": machine(),
        "metrics": [
            {
                "figure": row.figure.name,
                "key": row.metric.key,
                "label": row.metric.label,
                "unit": row.metric.unit,
                "higher_is_better": row.metric.higher_is_better,
                "note": row.figure.note,
                "sides": {side: _side(row, side) for side in sides},
                "ratios": {side: ratio(row, side) for side in sides if side != BASELINE},
                "relative_to": row.metric.relative_to,
                "relative": {side: relative(rows, row, side) for side in sides},
                "beyond_baseline": {side: beyond_baseline(rows, row, side) for side in sides},
            }
            for row in rows.values()
        ],
    }
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{started.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path
