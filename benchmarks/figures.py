"""What a figure is: the metrics it reports and how each side measures one round of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .env import Env

Values = dict[str, float]
"""One round's result of one side: metric key -> value."""

Measure = Callable[[Env], Values]
"""Measures one round of a figure on one side (pushpop or baseline)."""

TIMES = "\N{MULTIPLICATION SIGN}"
"""The unit of a figure that is itself a ratio (sizes, say)."""


@dataclass(frozen=True)
class Metric:
    """One number a figure reports, for both sides."""

    key: str
    label: str
    unit: str = "msg/s"
    higher_is_better: bool = True
    relative_to: str | None = None
    """Key of another metric this one is also reported against (the scaling figures)."""


@dataclass(frozen=True)
class Figure:
    """A benchmark: set the data up once, then measure both sides round after round."""

    name: str
    metrics: tuple[Metric, ...]
    pushpop: Measure
    baseline: Measure | None
    setup: Callable[[Env], None] = field(default=lambda env: None)
    note: str = ""
    rounds: int | None = None
    """At most this many rounds, for a figure whose one round is long and complete in itself."""
