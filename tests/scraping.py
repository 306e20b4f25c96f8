"""Scraping ``/metrics`` as Prometheus does: an HTTP GET, parsed with prometheus_client's parser."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_PORT = re.compile(r"on port (\d+) at /metrics")


def scrape(port: int) -> Samples:
    """Every sample served on ``port``, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None if it is not there."""
    return samples.get((name, frozenset(labels.items())))


def port_in(lines: list[str]) -> int | None:
    """The port a worker or exporter said it serves metrics on."""
    for line in lines:
        if match := _PORT.search(line):
            return int(match[1])
    return None


# Python with the optional extras made unimportable, as in an install without them.
WITHOUT_EXTRAS = """
import sys
for name in ("prometheus_client", "opentelemetry"):
    sys.modules[name] = None  # importing it raises ImportError
"""


def without_extras(code: str, dsn: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a Python where neither extra imports, with DATABASE_URL set."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + code],
        env={"DATABASE_URL": dsn, "PATH": ""},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
