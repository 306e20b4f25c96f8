"""The ``pushpop`` command: run migrations, push, pop and inspect messages from a shell.

Each subcommand is a pair of functions, one adding its arguments and one running it, listed
in :data:`COMMANDS`; adding a subcommand means writing that pair and one line in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from . import __version__, constants, logs, migrations
from .async_client import AsyncClient
from .cli_output import print_message, stats_json, stats_table, workers_json, workers_table
from .client import Client
from .connection import checked_conninfo, redact, resolve_dsn
from .errors import Error, InvalidArgument
from .retry import Retry

CONNECT_TIMEOUT = 5
"""Seconds the command waits for the database before giving up."""

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_DURATION = re.compile(r"^\s*(-?)\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Options that take a duration: "--delay -1s" is read as "--delay=-1s" (argparse would take
# "-1s" for an option of its own), so a negative value is refused by what it is.
_DURATION_OPTIONS: set[str] = set()


def duration(text: str) -> timedelta:
    """Parses ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` or plain seconds such as ``1.5``."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use e.g. 250ms, 30s, 5m, 1h, 1d or plain seconds"
        )
    seconds = float(match[2]) * _UNIT_SECONDS[match[3] or "s"]
    return timedelta(seconds=-seconds if match[1] else seconds)


def show(value: timedelta) -> str:
    """A duration as the options take it: ``5m``, ``30s``, ``1d``."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT_SECONDS[unit] and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds / _UNIT_SECONDS[unit]:g}{unit}"
    return f"{seconds:g}s"


def add_duration(
    parser: argparse.ArgumentParser,
    option: str,
    default: timedelta | float,
    help: str,
    *,
    positive: bool = False,
) -> None:
    """Adds an option taking a :func:`duration`, zero or more (above zero if ``positive``),
    its default shown in its help."""
    name = option.removeprefix("--").replace("-", " ")
    wanted = "positive" if positive else "zero or positive"
    if not isinstance(default, timedelta):
        default = timedelta(seconds=default)

    def parse(text: str) -> timedelta:
        value = duration(text)
        if value < timedelta(0) or (positive and value == timedelta(0)):
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: {name} must be {wanted}")
        return value

    _DURATION_OPTIONS.add(option)
    parser.add_argument(
        option, type=parse, default=default, help=f"{help} (default {show(default)})"
    )


def joined_durations(argv: list[str]) -> list[str]:
    """``argv`` with ``--delay -1s`` written ``--delay=-1s`` (see ``_DURATION_OPTIONS``)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _DURATION_OPTIONS and re.match(r"-\.?\d", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


# --- connecting --------------------------------------------------------------------------


def conninfo(args: argparse.Namespace) -> str:
    """``--dsn``, else ``DATABASE_URL``, else libpq's defaults; with a short connect timeout."""
    try:
        return checked_conninfo(args.dsn, connect_timeout=CONNECT_TIMEOUT)
    except InvalidArgument as exc:
        raise Error(f"{exc} (from --dsn or DATABASE_URL)") from None


@contextlib.contextmanager
def open_client(args: argparse.Namespace) -> Iterator[Client]:
    """A one-connection :class:`Client` that gives up on an unreachable database in seconds."""
    with Client(conninfo(args), min_size=1, max_size=1, timeout=CONNECT_TIMEOUT) as client:
        yield client


# --- subcommands -------------------------------------------------------------------------


def migrate_args(parser: argparse.ArgumentParser) -> None:
    """``migrate`` takes no arguments."""


def migrate(args: argparse.Namespace) -> int:
    """Installs or upgrades pushpop's schema; prints each SQL file it applied."""
    applied = migrations.migrate(conninfo(args))
    for path in applied:
        print(f"applied {path}")
    if not applied:
        print("up to date")
    return 0


def push_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``push``."""
    parser.add_argument("topic")
    parser.add_argument(
        "payload", nargs="?", default="-", help="message text (UTF-8); '-' or none: read stdin"
    )
    add_duration(parser, "--delay", 0, "ready after this long, e.g. 30s, 5m")
    parser.add_argument(
        "--priority", type=int, default=constants.PRIORITY,
        help=f"higher pops first (default {constants.PRIORITY})",
    )  # fmt: skip
    parser.add_argument("--dedup-key", help="push nothing while a live message has this key")
    parser.add_argument(
        "--max-attempts", type=int, default=constants.MAX_ATTEMPTS,
        help=f"deliveries before it is discarded (default {constants.MAX_ATTEMPTS})",
    )  # fmt: skip
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
    add_duration(parser, "--lease", constants.LEASE, "how long it is ours", positive=True)
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
        print(stats_json(rows))
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
    add_duration(parser, "--grace", constants.CLEANUP_GRACE, "keep finished ones this long")


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
    parser.add_argument(
        "--concurrency", type=int, default=constants.CONCURRENCY,
        help=f"handlers at once (default {constants.CONCURRENCY})",
    )  # fmt: skip
    add_duration(
        parser, "--lease", constants.LEASE, "a message is ours this long, extended while its"
        " handler runs", positive=True,
    )  # fmt: skip
    add_duration(
        parser, "--poll-interval", constants.POLL_INTERVAL,
        "look for messages this often when no push wakes the worker", positive=True,
    )  # fmt: skip
    add_duration(
        parser, "--shutdown-timeout", constants.SHUTDOWN_TIMEOUT,
        "on SIGTERM/SIGINT, wait this long for running handlers before releasing their messages",
    )  # fmt: skip
    add_duration(
        parser, "--retry-base", constants.RETRY_BASE, "first wait after a handler fails",
        positive=True,
    )  # fmt: skip
    add_duration(
        parser, "--retry-cap", constants.RETRY_CAP, "longest wait between retries", positive=True
    )
    add_duration(
        parser, "--cleanup-grace", constants.CLEANUP_GRACE,
        "maintenance deletes finished messages older than this",
    )  # fmt: skip
    parser.add_argument(
        "--no-maintenance", action="store_true", help="never run requeue/cleanup from here"
    )
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="default INFO")
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="default text"
    )


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
    """Runs HANDLER on the topics' messages until SIGTERM/SIGINT (a second one exits at once),
    logging one line per message. An async def handler runs on asyncio."""
    handler = load_handler(args.handler)
    logs.configure(args.log_level, args.log_format)
    options: dict[str, Any] = {
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
        print(workers_json(rows))
    elif rows:
        print(workers_table(rows, datetime.now(UTC)))
    else:
        print("no live workers")
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


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1 on errors, 2 on usage errors)."""
    parser = build_parser()
    args = parser.parse_args(joined_durations(sys.argv[1:] if argv is None else argv))
    try:
        status: int = args.run(args)
    except (Error, psycopg.Error) as exc:
        line = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pushpop: error: {redact(line, resolve_dsn(args.dsn))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
