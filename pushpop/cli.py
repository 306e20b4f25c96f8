"""The ``pushpop`` command: run migrations, push, pop and inspect messages from a shell.

Each subcommand is a pair of functions, one adding its arguments and one running it, listed
in :data:`COMMANDS`; adding a subcommand means writing that pair and one line in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import __version__, logs, migrations
from .async_client import AsyncClient
from .client import DEFAULT_LEASE, Client, Message, resolve_dsn
from .errors import Error
from .message import TopicStats
from .retry import Retry

CONNECT_TIMEOUT = 5
"""Seconds the command waits for the database before giving up."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """Parses ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` or plain seconds such as ``1.5``."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use e.g. 250ms, 30s, 5m, 1h, 1d or plain seconds"
        )
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2] or "s"])


def positive_duration(text: str) -> timedelta:
    """A :func:`duration` above zero."""
    value = duration(text)
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be above zero")
    return value


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


# --- connecting --------------------------------------------------------------------------


def conninfo(args: argparse.Namespace) -> str:
    """``--dsn``, else ``DATABASE_URL``, else libpq's defaults; with a short connect timeout."""
    dsn = resolve_dsn(args.dsn)
    try:
        if "connect_timeout" in conninfo_to_dict(dsn):
            return dsn
        return make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.ProgrammingError as exc:
        # Reported without the string itself, which may hold a password.
        problem = _dsn_problem(exc)
        raise Error(f"invalid connection string (--dsn or DATABASE_URL): {problem}") from None


def _dsn_problem(exc: Exception) -> str:
    """libpq's complaint about a connection string, minus any quoted piece of the string."""
    reason = str(exc).strip()
    if reason.startswith(("invalid connection option", "invalid URI query parameter")):
        return reason  # these quote an option name, never a value
    return re.sub(r'"[^"]*"', '"..."', reason)


@contextlib.contextmanager
def open_client(args: argparse.Namespace) -> Iterator[Client]:
    """A one-connection :class:`Client` that gives up on an unreachable database in seconds."""
    with Client(conninfo(args), min_size=1, max_size=1, timeout=CONNECT_TIMEOUT) as client:
        yield client


# --- output ------------------------------------------------------------------------------


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


def message_dict(msg: Message) -> dict[str, Any]:
    """A message as JSON-ready fields; ``payload_encoding`` says how ``payload`` is written."""
    encoding, text = payload_text(msg.payload)
    return {
        "id": str(msg.id),
        "topic": msg.topic,
        "state": msg.state,
        "state_time": msg.state_time.isoformat() if msg.state_time else None,
        "attempts": msg.attempts,
        "max_attempts": msg.max_attempts,
        "priority": msg.priority,
        "lease": str(msg.lease) if msg.lease else None,
        "created_at": msg.created_at.isoformat() if msg.created_at else None,
        "error": msg.error,
        "dedup_key": msg.dedup_key,
        "payload_encoding": encoding,
        "payload": text,
    }


def print_message(msg: Message, as_json: bool) -> None:
    """Prints a message as aligned ``field  value`` lines, the payload last, or as JSON."""
    fields = message_dict(msg)
    if as_json:
        print(json.dumps(fields, ensure_ascii=False))
        return
    fields["attempts"] = f"{msg.attempts} of {msg.max_attempts}"
    del fields["max_attempts"]
    encoding, text = fields.pop("payload_encoding"), fields.pop("payload")
    for name, value in fields.items():
        print(f"{name:<11} {'-' if value is None else value}")
    print(f"payload     ({encoding}, {len(msg.payload)} bytes) {text}")


def stats_table(rows: list[TopicStats], now: datetime) -> str:
    """The per-topic counts as a table with aligned columns."""
    header = ["TOPIC", "READY", "SCHEDULED", "PENDING", "COMPLETED", "DISCARDED", "OLDEST READY"]
    lines = [header]
    for s in rows:
        age = "-" if s.oldest_ready is None else format_age(now - s.oldest_ready)
        counts = [s.ready, s.scheduled, s.pending, s.completed, s.discarded]
        lines.append([s.topic, *map(str, counts), age])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


# --- subcommands -------------------------------------------------------------------------


def migrate_args(parser: argparse.ArgumentParser) -> None:
    """``migrate`` takes no arguments."""


def migrate(args: argparse.Namespace) -> int:
    """Applies pending SQL migrations."""
    applied = migrations.migrate(conninfo(args))
    for m in applied:
        print(f"applied {m.path.name}")
    if not applied:
        print("up to date")
    return 0


def push_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``push``."""
    parser.add_argument("topic")
    parser.add_argument(
        "payload", nargs="?", default="-", help="message text (UTF-8); '-' or none: read stdin"
    )
    parser.add_argument("--delay", type=duration, default=timedelta(0), help="e.g. 30s, 5m")
    parser.add_argument("--priority", type=int, default=0, help="higher pops first (default 0)")
    parser.add_argument("--dedup-key", help="push nothing while a live message has this key")
    parser.add_argument("--max-attempts", type=int, default=25, help="default 25")
    parser.add_argument("--id", help="message id (UUID); default: a new one")


def push(args: argparse.Namespace) -> int:
    """Enqueues one message and prints its id."""
    if args.payload != "-":
        payload = args.payload.encode("utf-8")
    else:
        if sys.stdin.isatty():
            print("pushpop: reading the payload from stdin (end it with Ctrl-D)", file=sys.stderr)
        payload = sys.stdin.buffer.read()
    with open_client(args) as client:
        msg_id = client.push(
            args.topic, payload, delay=args.delay, priority=args.priority,
            dedup_key=args.dedup_key, max_attempts=args.max_attempts, id=args.id,
        )  # fmt: skip
    print(msg_id)
    return 0


def pop_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pop``."""
    parser.add_argument("topic")
    parser.add_argument("--lease", type=positive_duration, default=DEFAULT_LEASE, help="default 5m")
    parser.add_argument("--complete", action="store_true", help="complete it right away")
    parser.add_argument("--json", action="store_true", help="print JSON (null when none)")


def pop(args: argparse.Namespace) -> int:
    """Leases the next ready message and prints it; nothing ready is not an error."""
    with open_client(args) as client:
        msg = client.pop(args.topic, lease=args.lease)
        if msg is not None and args.complete:
            msg.complete()
    if msg is None:
        if args.json:
            print("null")
        else:
            print(f"pushpop: no message ready in {args.topic!r}", file=sys.stderr)
        return 0
    print_message(msg, args.json)
    return 0


def find_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``find``."""
    parser.add_argument("id", help="message id (UUID)")
    parser.add_argument("--json", action="store_true", help="print JSON (null when none)")


def find(args: argparse.Namespace) -> int:
    """Prints a message in whatever state; exit status 1 when there is none."""
    with open_client(args) as client:
        msg = client.find(args.id)
    if msg is None:
        if args.json:
            print("null")
        print(f"pushpop: no message {args.id}", file=sys.stderr)
        return 1
    print_message(msg, args.json)
    return 0


def stats_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``stats``."""
    parser.add_argument("--json", action="store_true", help="print JSON, one object per topic")


def stats(args: argparse.Namespace) -> int:
    """Prints message counts per topic."""
    with open_client(args) as client:
        rows = client.stats()
    if args.json:
        out = [
            {**vars(s), "oldest_ready": s.oldest_ready.isoformat() if s.oldest_ready else None}
            for s in rows
        ]
        print(json.dumps(out, ensure_ascii=False))
    elif rows:
        print(stats_table(rows, datetime.now(UTC)))
    else:
        print("no messages")
    return 0


def requeue_args(parser: argparse.ArgumentParser) -> None:
    """``requeue`` takes no arguments."""


def requeue(args: argparse.Namespace) -> int:
    """Returns messages whose lease expired to the queue (or discards those out of attempts)."""
    with open_client(args) as client:
        moved = client.requeue_expired()
    print(f"moved {moved} expired message(s)")
    return 0


def cleanup_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cleanup``."""
    parser.add_argument(
        "--grace", type=duration, default=timedelta(days=1), help="keep finished ones this long"
    )


def cleanup(args: argparse.Namespace) -> int:
    """Deletes completed and discarded messages older than the grace period."""
    with open_client(args) as client:
        deleted = client.cleanup(args.grace)
    print(f"deleted {deleted} finished message(s)")
    return 0


def purge_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``purge``."""
    parser.add_argument("topic")


def purge(args: argparse.Namespace) -> int:
    """Deletes every message of a topic that is not pending."""
    with open_client(args) as client:
        deleted = client.purge(args.topic)
    print(f"deleted {deleted} message(s) from {args.topic!r}")
    return 0


def worker_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``worker``."""
    parser.add_argument("handler", help="the handler to run, as module:function")
    parser.add_argument("--topic", action="append", required=True, help="repeat for more topics")
    parser.add_argument("--concurrency", type=int, default=4, help="handlers at once (default 4)")
    parser.add_argument("--lease", type=positive_duration, default=DEFAULT_LEASE)
    parser.add_argument("--poll-interval", type=positive_duration, default=timedelta(seconds=1))
    parser.add_argument("--shutdown-timeout", type=duration, default=timedelta(seconds=30))
    parser.add_argument("--retry-base", type=positive_duration, default=timedelta(seconds=1))
    parser.add_argument("--retry-cap", type=positive_duration, default=timedelta(hours=1))
    parser.add_argument("--cleanup-grace", type=duration, default=timedelta(days=1))
    parser.add_argument(
        "--no-maintenance", action="store_true", help="never run requeue/cleanup from here"
    )
    parser.add_argument("--log-level", default="INFO", choices=logging.getLevelNamesMapping())
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def load_handler(spec: str) -> Callable[..., Any]:
    """Imports ``module:function``, looking in the current directory first."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise Error(f"handler must be given as module:function, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Error(f"cannot import {module_name!r}: {exc}") from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise Error(f"{module_name!r} has no function {attr!r}")
    return handler  # type: ignore[no-any-return]


def worker(args: argparse.Namespace) -> int:
    """Runs a worker until SIGTERM/SIGINT: one log line per message. Async handlers run on
    asyncio."""
    handler = load_handler(args.handler)
    logs.configure(args.log_level, args.log_format)
    options = {
        "concurrency": args.concurrency, "lease": args.lease,
        "poll_interval": args.poll_interval, "shutdown_timeout": args.shutdown_timeout,
        "retry": Retry(base=args.retry_base, cap=args.retry_cap),
        "cleanup_grace": args.cleanup_grace, "maintenance": not args.no_maintenance,
    }  # fmt: skip
    if inspect.iscoroutinefunction(handler):
        asyncio.run(_work_async(conninfo(args), args.topic, handler, options))
    else:
        with Client(conninfo(args)) as client:
            client.work(args.topic, handler, **options)
    return 0


async def _work_async(
    dsn: str, topics: list[str], handler: Callable[..., Any], options: dict[str, Any]
) -> None:
    async with AsyncClient(dsn) as client:
        await client.work(topics, handler, **options)


def workers_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``workers``."""
    parser.add_argument("--json", action="store_true", help="print JSON, one object per worker")


def workers(args: argparse.Namespace) -> int:
    """Prints the live workers (those that sent a heartbeat in the last minute)."""
    with open_client(args) as client:
        rows = client.workers()
    if args.json:
        out = [
            {**vars(w), "id": str(w.id), "started_at": w.started_at.isoformat(),
             "heartbeat_at": w.heartbeat_at.isoformat()}
            for w in rows
        ]  # fmt: skip
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if not rows:
        print("no live workers")
        return 0
    now = datetime.now(UTC)
    header = ["ID", "HOST", "PID", "TOPICS", "CONCURRENCY", "UP", "LAST HEARTBEAT"]
    lines = [header] + [
        [str(w.id), w.host, str(w.pid), ",".join(w.topics), str(w.concurrency),
         format_age(now - w.started_at), format_age(now - w.heartbeat_at) + " ago"]
        for w in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one line of help, its arguments and what it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command("migrate", "apply pending SQL migrations", migrate_args, migrate),
    Command("push", "enqueue a message, print its id", push_args, push),
    Command("pop", "lease the next ready message and print it", pop_args, pop),
    Command("find", "print a message by id", find_args, find),
    Command("stats", "message counts per topic", stats_args, stats),
    Command("requeue", "requeue messages whose lease expired", requeue_args, requeue),
    Command("cleanup", "delete finished messages past a grace period", cleanup_args, cleanup),
    Command("purge", "delete a topic's messages (not pending ones)", purge_args, purge),
    Command("worker", "run a handler on a topic's messages until stopped", worker_args, worker),
    Command("workers", "list the live workers", workers_args, workers),
]


def build_parser(commands: list[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser; ``--dsn`` is accepted before or after the subcommand."""
    dsn_help = "libpq connection string or URL (default: DATABASE_URL, else libpq defaults)"
    parser = argparse.ArgumentParser(
        prog="pushpop", description="A message queue that lives in PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"pushpop {__version__}")
    parser.add_argument("--dsn", default=None, help=dsn_help)
    # The subcommands' copy leaves the attribute alone unless given, so both places work.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS, help=dsn_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, parents=[common])
        p.description = command.run.__doc__
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def _redact(text: str, args: argparse.Namespace) -> str:
    """Removes the connection's password from a message, should libpq ever echo it."""
    with contextlib.suppress(psycopg.Error):
        password = conninfo_to_dict(resolve_dsn(args.dsn)).get("password")
        if password:
            text = text.replace(str(password), "***")
    return text


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1 on errors, 2 on usage errors)."""
    # The pool logs every failed connection attempt; the one error line below says it all.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL + 1)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except (Error, psycopg.Error) as exc:
        line = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pushpop: error: {_redact(line, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
