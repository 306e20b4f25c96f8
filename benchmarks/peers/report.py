"""Writes the results: docs/peers.md (the machine, the table, the notes) and docs/peers.png."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from datetime import datetime
from pathlib import Path

import psycopg

from .common import Config
from .runner import FIGURES, Result

DOCS = Path(__file__).resolve().parents[2] / "docs"
RECORDS = DOCS.parent / ".bench"
DASH = "\u2014"
TIMES = "\u00d7"
TO = "\u2013"
"""An em dash for a missing figure, the multiplication sign, the en dash of a range."""
HEADINGS = {
    "push": "push/s",
    "pop": "pop + ack/s",
    "push_batch": "push " + TIMES + "{batch}/s",
    "pop_batch": "pop + ack " + TIMES + "{batch}/s",
    "p50": "pickup p50, ms",
    "p99": "pickup p99, ms",
}
RATES = ("push", "pop", "push_batch", "pop_batch")


def _number(value: float, figure: str) -> str:
    return f"{value:,.0f}" if figure in RATES else f"{value:,.1f}"


def cell(result: Result, figure: str) -> str:
    """The median, and the spread over the rounds when there were several."""
    values = result.values.get(figure)
    if not values:
        return DASH
    median = result.median(figure)
    assert median is not None
    text = _number(median, figure)
    if len(values) > 1:
        text += f" ({_number(min(values), figure)}{TO}{_number(max(values), figure)})"
    return text


def machine(config: Config) -> dict[str, str]:
    """What the figures were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = platform.system()
    with contextlib.suppress(OSError):
        system = platform.freedesktop_os_release().get("PRETTY_NAME", system)
    with psycopg.connect(config.server) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            [["server_version", "fsync", "synchronous_commit", "shared_buffers"]],
        ).fetchall()
    settings = {str(k): str(v) for k, v in rows}
    return {
        "cpu": f"{os.cpu_count()} cores ({model})" if model else f"{os.cpu_count()} cores",
        "memory": f"{memory:.0f} GB",
        "os": system,
        "python": platform.python_version(),
        "postgres": (
            f"PostgreSQL {settings.get('server_version', '?')} (fsync "
            f"{settings.get('fsync', '?')}, synchronous_commit "
            f"{settings.get('synchronous_commit', '?')}, shared_buffers "
            f"{int(settings.get('shared_buffers', '0')) * 8 // 1024} MB)"
        ),
    }


def markdown(
    results: list[Result], config: Config, facts: dict[str, str], when: datetime, command: str
) -> str:
    """The page: how it was measured, the table, what each peer did."""
    c = config
    heads = [HEADINGS[f].format(batch=c.batch) for f in FIGURES]
    lines = [
        "# pushpop and its peers",
        "",
        "The same workload, in the same run, on the same machine, for pushpop and the systems "
        "an application would otherwise queue its messages with. `make bench-peers` installs "
        "the peers and writes this page and its chart; the [Performance](performance.md) page "
        "compares pushpop with hand-written SQL in far more detail.",
        "",
        f"**The run:** {when:%Y-%m-%d %H:%M} UTC, `{command}`, {facts['took']}.  ",
        f"**The machine:** {facts['cpu']}, {facts['memory']}, {facts['os']}, Python "
        f"{facts['python']}; {facts['postgres']}, the same server for every PostgreSQL peer "
        "(a scratch database each), RabbitMQ on the same machine, which other work shared: "
        f"its load average (1 minute) was {facts['load']}.",
        "",
        f"**The workload:** {c.threads} producers and {c.threads} consumers, {c.payload_size}-"
        f"byte payloads, {c.total:,} messages per figure; durable throughout (every push and "
        "every acknowledgement is committed, with fsync on, before the call returns). Each "
        f"figure is the median of {c.rounds} rounds, with the lowest and highest round in "
        "brackets; each round measures every system in turn. pop + ack starts from a queue "
        f"holding the {c.total:,} messages and ends when the last is acknowledged. Pickup: "
        f"{c.samples} pushes a round, one at a time, each 20 ms after the last pickup, timed "
        "from the push call returning (its commit confirmed) to the idle consumer's handler "
        "starting; its percentiles are per round, then the median over the rounds. "
        f"{DASH} is a figure the system has no way to do (or, where the notes say so, one "
        "this benchmark does not measure).",
        "",
        "| System | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for r in results:
        lines.append(f"| {r.peer.label} | " + " | ".join(cell(r, f) for f in FIGURES) + " |")
    lines += ["", "![The table as a chart](peers.png)", "", "## How each system was used", ""]
    for r in results:
        version = r.version or "not measured"
        lines.append(f"- **{r.peer.label}** ({version}): {r.peer.notes()}")
        if r.error:
            lines.append(f"  **This run:** {r.error}.")
    lines += [
        "",
        "Every system runs in the one benchmark process, its client in Python except "
        "pgbench's, on the same machine as the server it talks to, so the figures say "
        "how the systems compare here, not what each can reach with more clients or cores. "
        "Other work on the machine moves single figures between rounds, at times by 2\u00d7 "
        "or more; the brackets show how much, and a row is best compared with the other rows "
        "of the same run.",
        "",
    ]
    return "\n".join(lines)


def chart(results: list[Result], config: Config, path: Path) -> None:
    """Grouped bars: one group per figure, one bar per system, whiskers for the spread."""
    import matplotlib  # type: ignore[import-not-found, import-untyped, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, import-untyped, unused-ignore]

    shown = [r for r in results if r.values]
    fig, (rates, pickup) = plt.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [2, 1]}
    )
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for axes, figures, unit in (
        (rates, RATES, "messages per second (log scale)"),
        (pickup, ("p50", "p99"), "milliseconds (log scale)"),
    ):
        width = 0.8 / max(len(shown), 1)
        for i, r in enumerate(shown):
            xs, ys, low, high = [], [], [], []
            for j, figure in enumerate(figures):
                values = r.values.get(figure)
                median = r.median(figure)
                if not values or median is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(median)
                low.append(median - min(values))
                high.append(max(values) - median)
            axes.bar(
                xs, ys, width, yerr=[low, high], capsize=2, label=r.peer.label, color=colors[i]
            )
        axes.set_xticks(range(len(figures)))
        axes.set_xticklabels([HEADINGS[f].format(batch=config.batch) for f in figures])
        axes.set_yscale("log")
        axes.set_ylabel(unit)
        axes.grid(axis="y", which="major", alpha=0.3)
    rates.set_title("Throughput (higher is better)")
    pickup.set_title("Idle pickup latency (lower is better)")
    rates.legend(loc="upper left", fontsize=8)
    fig.suptitle(
        f"pushpop and its peers: {config.threads} producers / {config.threads} consumers, "
        f"{config.payload_size}-byte payloads, fsync on; median of {config.rounds} rounds, "
        f"whiskers min{TO}max"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    results: list[Result],
    config: Config,
    when: datetime,
    command: str,
    run: dict[str, str],
    out: Path = DOCS,
) -> tuple[Path, Path]:
    """Writes the page and the chart; returns their paths. ``run`` adds ``took`` and ``load``."""
    page, png = out / "peers.md", out / "peers.png"
    facts = machine(config) | run
    page.write_text(markdown(results, config, facts, when, command), encoding="utf-8")
    chart(results, config, png)
    return page, png


def save(results: list[Result], config: Config, when: datetime, command: str) -> Path:
    """Every round's figures as JSON under .bench/ (git-ignored), beside make bench's."""
    RECORDS.mkdir(exist_ok=True)
    path = RECORDS / f"peers-{when:%Y%m%d-%H%M%S}.json"
    record = {
        "when": when.isoformat(),
        "command": command,
        "config": dataclasses.asdict(config),
        "peers": [
            {
                "name": r.peer.name,
                "label": r.peer.label,
                "version": r.version,
                "error": r.error,
                "rounds": r.values,
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
