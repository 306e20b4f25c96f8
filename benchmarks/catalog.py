"""Every figure of a run, in the order they run.

A new theme of figures (say, pickup latency through a Worker, or ``client.work()``
throughput) goes in a module of its own with a ``figures(settings)`` function, listed here.
"""

from __future__ import annotations

from . import scaling, throughput
from .env import Settings
from .figures import Figure

MODULES = (throughput, scaling)


def figures(settings: Settings) -> list[Figure]:
    """All figures, in run order."""
    return [figure for module in MODULES for figure in module.figures(settings)]
