"""How the ``pushpop`` command prints messages, counts and workers: aligned text, or JSON."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from .message import MessageBase, ScheduleInfo, SubscriptionInfo, TopicStats, WorkerInfo


def format_age(delta: timedelta) -> str:
    """A short age such as ``42s``, ``3m05s``, ``2h10m`` or ``4d03h``."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def payload_text(payload: bytes) -> tuple[str, str]:
    """The payload as (encoding, text): UTF-8 when it is printable text, else base64."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if all(c.isprintable() or c in "\n\t\r" for c in text):
            return "utf-8", text
    return "base64", base64.b64encode(payload).decode("ascii")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def message_dict(msg: MessageBase[Any]) -> dict[str, Any]:
    """A message as JSON-ready fields; ``payload_encoding`` says how ``payload`` is written."""
    encoding, text = payload_text(msg.payload)
    return {
        "id": str(msg.id),
        "topic": msg.topic,
        "state": msg.state,
        "state_time": _iso(msg.state_time),
        "attempts": msg.attempts,
        "max_attempts": msg.max_attempts,
        "priority": msg.priority,
        "lease": str(msg.lease) if msg.lease else None,
        "lease_until": _iso(msg.lease_until),
        "created_at": _iso(msg.created_at),
        "error": msg.error,
        "dedup_key": msg.dedup_key,
        "ordering_key": msg.ordering_key,
        "expires_at": _iso(msg.expires_at),
        "headers": msg.headers,
        "payload_encoding": encoding,
        "payload": text,
    }


def print_message(msg: MessageBase[Any], as_json: bool) -> None:
    """Prints a message as aligned ``field  value`` lines, the payload last, or as JSON."""
    fields = message_dict(msg)
    if as_json:
        print(json.dumps(fields, ensure_ascii=False))
        return
    fields["attempts"] = f"{msg.attempts} of {msg.max_attempts}"
    del fields["max_attempts"]
    encoding, text = fields.pop("payload_encoding"), fields.pop("payload")
    headers = fields.pop("headers")
    for name, value in fields.items():
        print(f"{name:<12} {'-' if value is None else value}")
    for name, value in headers.items():
        print(f"header       {name}={value}")
    print(f"payload      ({encoding}, {len(msg.payload)} bytes) {text}")


def table(header: list[str], rows: list[list[str]], right: int = 0) -> str:
    """Rows under a header, in columns two spaces apart; the ``right`` last columns (numbers)
    aligned to the right."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = len(header) - right
    out = []
    for line in lines:
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def stats_table(rows: list[TopicStats], now: datetime) -> str:
    """The per-topic counts as a table with aligned columns."""
    header = [
        "TOPIC", "READY", "SCHEDULED", "PENDING", "BLOCKED", "COMPLETED", "DISCARDED",
        "OLDEST READY",
    ]  # fmt: skip
    lines = []
    for s in rows:
        age = "-" if s.oldest_ready is None else format_age(now - s.oldest_ready)
        counts = [s.ready, s.scheduled, s.pending, s.blocked, s.completed, s.discarded]
        lines.append([s.topic + (" (paused)" if s.paused else ""), *map(str, counts), age])
    return table(header, lines, right=len(header) - 1)


def stats_json(rows: list[TopicStats]) -> str:
    """The per-topic counts as a JSON list, one object per topic."""
    out = [{**vars(s), "oldest_ready": _iso(s.oldest_ready)} for s in rows]
    return json.dumps(out, ensure_ascii=False)


def workers_table(rows: list[WorkerInfo], now: datetime) -> str:
    """The live workers as a table with aligned columns."""
    header = ["ID", "HOST", "PID", "TOPICS", "CONCURRENCY", "UP", "LAST HEARTBEAT"]
    lines = [
        [str(w.id), w.host, str(w.pid), ",".join(w.topics), str(w.concurrency),
         format_age(now - w.started_at), format_age(now - w.heartbeat_at) + " ago"]
        for w in rows
    ]  # fmt: skip
    return table(header, lines)


def workers_json(rows: list[WorkerInfo]) -> str:
    """The live workers as a JSON list, one object per worker."""
    out = [
        {**vars(w), "id": str(w.id), "started_at": w.started_at.isoformat(),
         "heartbeat_at": w.heartbeat_at.isoformat()}
        for w in rows
    ]  # fmt: skip
    return json.dumps(out, ensure_ascii=False)


def _short(text: str, width: int = 40) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "\N{HORIZONTAL ELLIPSIS}"


def messages_table(rows: list[MessageBase[Any]], now: datetime) -> str:
    """Browsed messages as a table: one line each, the payload cut short."""
    header = ["ID", "STATE", "SINCE", "ATTEMPTS", "PRIORITY", "ERROR", "PAYLOAD"]
    lines = [
        [str(m.id), m.state or "-",
         "-" if m.state_time is None else format_age(now - m.state_time),
         f"{m.attempts}/{m.max_attempts}", str(m.priority), _short(m.error or "-", 30),
         _short(payload_text(m.payload)[1])]
        for m in rows
    ]  # fmt: skip
    return table(header, lines)


def messages_json(rows: list[MessageBase[Any]]) -> str:
    """Browsed messages as a JSON list, one object each (as ``pop --json`` prints one)."""
    return json.dumps([message_dict(m) for m in rows], ensure_ascii=False)


def _every(value: timedelta | None) -> str | None:
    return None if value is None else f"{value.total_seconds():g}s"


def schedules_table(rows: list[ScheduleInfo], now: datetime) -> str:
    """The schedules as a table: when each next ticks, and when it last pushed."""
    header = ["NAME", "TOPIC", "WHEN", "TIMEZONE", "NEXT", "LAST"]
    lines = [
        [s.name, s.topic, s.cron if s.cron is not None else f"every {_every(s.every)}",
         s.timezone, s.next_run_at.isoformat(),
         "-" if s.last_run_at is None else format_age(now - s.last_run_at) + " ago"]
        for s in rows
    ]  # fmt: skip
    return table(header, lines)


def schedules_json(rows: list[ScheduleInfo]) -> str:
    """The schedules as a JSON list; ``every`` in seconds."""
    out = [
        {**vars(s), "every": None if s.every is None else s.every.total_seconds(),
         "next_run_at": s.next_run_at.isoformat(), "last_run_at": _iso(s.last_run_at)}
        for s in rows
    ]  # fmt: skip
    return json.dumps(out, ensure_ascii=False)


def subscriptions_table(rows: list[SubscriptionInfo]) -> str:
    """The subscriptions as a table."""
    lines = [[s.pattern, s.subscriber, s.created_at.isoformat()] for s in rows]
    return table(["PATTERN", "SUBSCRIBER", "SINCE"], lines)


def subscriptions_json(rows: list[SubscriptionInfo]) -> str:
    """The subscriptions as a JSON list."""
    out = [{**vars(s), "created_at": s.created_at.isoformat()} for s in rows]
    return json.dumps(out, ensure_ascii=False)
