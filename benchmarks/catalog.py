"""Every figure of a run, in the order they run.

A new theme of figures goes in a module of its own with a ``figures(settings)`` function,
listed here. Figures sharing a setup sit side by side, so its tables are loaded once.
"""

from __future__ import annotations

from . import (
    bloat,
    dashboard,
    fanout,
    latency,
    operations,
    ordering,
    scaling,
    scrape,
    throughput,
    work,
)
from .env import Settings
from .figures import Figure

MODULES = (
    throughput, work, latency, scaling, operations, fanout, ordering, scrape, dashboard, bloat,
)  # fmt: skip


def figures(settings: Settings) -> list[Figure]:
    """All figures, in run order."""
    return [figure for module in MODULES for figure in module.figures(settings)]
