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

from . import __version__, constants, logs, metrics, migrations
from . import exporter as exporter_module
from .async_client import AsyncClient
from .calls import BROWSE_LIMIT, BROWSE_STATES
from .cli_output import (
    messages_json,
    messages_table,
    print_message,
    schedules_json,
    schedules_table,
    stats_json,
    stats_table,
    subscriptions_json,
    subscriptions_table,
    workers_json,
    workers_table,
)
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
    """Arguments of ``migrate``."""
    parser.add_argument(
        "--distributed", action="store_true",
        help="then shard the queue over a Citus cluster, in the same transaction "
        "(run against the coordinator; fails without Citus, applying nothing)",
    )  # fmt: skip
    parser.add_argument(
        "--shard-count", type=int, default=migrations.SHARD_COUNT,
        help=f"shards of the queue with --distributed (default {migrations.SHARD_COUNT})",
    )  # fmt: skip


def migrate(args: argparse.Namespace) -> int:
    """Installs or upgrades pushpop's schema; prints each SQL file it applied, and with
    ``--distributed`` whether it sharded the queue now or it was sharded already."""
    if args.distributed:
        outcome = migrations.migrate_distributed(conninfo(args), args.shard_count)
    else:
        outcome = migrations.Outcome(migrations.migrate(conninfo(args)))
    for path in outcome.applied:
        print(f"applied {path}")
    if not outcome.applied:
        print("up to date")
    if outcome.distributed is not None:
        print("distributed" if outcome.distributed else "distributed already")
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
        "--ordering-key",
        help="deliver the topic's messages with this key one at a time, in push order",
    )
    parser.add_argument(
        "--max-attempts", type=int, default=constants.MAX_ATTEMPTS,
        help=f"deliveries before it is discarded (default {constants.MAX_ATTEMPTS})",
    )  # fmt: skip
    parser.add_argument("--id", help="message id (UUID); default: a new one")
    parser.add_argument(
        "--expires-in", type=positive_duration, default=None,
        help="never delivered once this long has passed since the push, e.g. 1h (default: never)",
    )  # fmt: skip
    parser.add_argument(
        "--header", action="append", type=header, default=[], metavar="NAME=VALUE",
        help="a header the message carries; repeat for more",
    )  # fmt: skip


def header(text: str) -> tuple[str, str]:
    """Parses ``NAME=VALUE`` (the value may hold more ``=`` signs)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: give it as NAME=VALUE")
    return name, value


def positive_duration(text: str) -> timedelta:
    """A :func:`duration` above zero."""
    value = duration(text)
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return value


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
            expires_in=args.expires_in, headers=dict(args.header) or None,
            ordering_key=args.ordering_key,
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
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help=f"serve Prometheus metrics on this port at /metrics (needs {metrics.METRICS_EXTRA})",
    )  # fmt: skip


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
    if args.metrics_port is not None:
        metrics.prometheus("--metrics-port")  # before anything starts: which extra it needs
    logs.configure(args.log_level, args.log_format)
    options: dict[str, Any] = {
        "concurrency": args.concurrency, "lease": args.lease,
        "poll_interval": args.poll_interval, "shutdown_timeout": args.shutdown_timeout,
        "retry": Retry(base=args.retry_base, cap=args.retry_cap),
        "cleanup_grace": args.cleanup_grace, "maintenance": not args.no_maintenance,
        "metrics_port": args.metrics_port,
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


def exporter_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``exporter``."""
    parser.add_argument(
        "--port", type=int, default=exporter_module.PORT,
        help=f"serve /metrics on this port (default {exporter_module.PORT}; 0: any free one)",
    )  # fmt: skip
    parser.add_argument("--addr", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    add_duration(
        parser, "--cache", exporter_module.CACHE_SECONDS,
        "scrapes within this long of a read share it", positive=True,
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="default INFO")


def exporter(args: argparse.Namespace) -> int:
    """Serves the queue's gauges (messages per topic and state, oldest ready age, paused, live
    workers) to Prometheus, read from the database at scrape time; until SIGTERM/SIGINT."""
    metrics.prometheus("pushpop exporter")
    logs.configure(args.log_level, "text")

    def started(port: int) -> None:
        print(f"pushpop exporter: serving queue metrics on port {port} at /metrics", flush=True)

    exporter_module.serve(
        conninfo(args), args.port, args.addr, cache_seconds=args.cache.total_seconds(),
        started=started,
    )  # fmt: skip
    return 0


def dashboard_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dashboard``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--read-only", action="store_true", help="show, never change anything")
    parser.add_argument("--base-path", default="", help="serve under this path, e.g. /queue")
    parser.add_argument(
        "--token", default=os.environ.get("PUSHPOP_DASHBOARD_TOKEN"),
        help="required from browsers (default: PUSHPOP_DASHBOARD_TOKEN); needed to bind"
        " beyond localhost unless --read-only",
    )  # fmt: skip


LOCALHOST = {"127.0.0.1", "localhost", "::1"}


def dashboard(args: argparse.Namespace) -> int:
    """Serves the web dashboard (pushpop[dashboard]): topics, messages, workers, schedules,
    and buttons to pause, resume, retry, cancel and purge; until SIGTERM/SIGINT."""
    try:
        from . import dashboard as dashboard_module
    except ImportError as exc:
        raise Error(f"the dashboard needs pushpop[dashboard] ({exc.name} is missing)") from None
    local = args.host in LOCALHOST
    if not local and args.token is None and not args.read_only:
        raise Error(
            f"refusing to serve the dashboard on {args.host} with its buttons and no --token:"
            " give --token (or PUSHPOP_DASHBOARD_TOKEN), or --read-only"
        )
    logs.configure("WARNING", "text")

    def started(url: str) -> None:
        guard = "a token required" if args.token is not None else "no token: localhost only"
        if args.token is None and not local:
            guard = f"no token: anyone who reaches {args.host} can read it"
        mode = "read-only" if args.read_only else "actions enabled"
        print(f"pushpop dashboard: {url} ({mode}, {guard})", flush=True)

    dashboard_module.serve(
        conninfo(args), host=args.host, port=args.port, read_only=args.read_only,
        base_path=args.base_path, token=args.token, started=started,
    )  # fmt: skip
    return 0


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


def topic_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pause`` and ``resume``: the topic."""
    parser.add_argument("topic")


def pause(args: argparse.Namespace) -> int:
    """Pauses a topic: pops get nothing from it until ``pushpop resume``; pushes go on."""
    with open_client(args) as client:
        changed = client.pause(args.topic)
    print(f"paused {args.topic!r}" if changed else f"{args.topic!r} was paused already")
    return 0


def resume(args: argparse.Namespace) -> int:
    """Resumes a paused topic; its workers pick it up at once."""
    with open_client(args) as client:
        changed = client.resume(args.topic)
    print(f"resumed {args.topic!r}" if changed else f"{args.topic!r} was not paused")
    return 0


def browse_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``browse``."""
    parser.add_argument("topic")
    parser.add_argument("--state", choices=BROWSE_STATES, help="only this state (default: all)")
    parser.add_argument(
        "--limit",
        type=int,
        default=BROWSE_LIMIT,
        help=f"at most this many (default {BROWSE_LIMIT})",
    )
    parser.add_argument("--after", metavar="ID", help="the last id of the previous page")
    parser.add_argument("--json", action="store_true", help="print JSON, one object per message")


def browse(args: argparse.Namespace) -> int:
    """Lists a topic's messages without taking them: ready ones in the order pop delivers them,
    the others oldest first. The next page starts --after the last id printed."""
    with open_client(args) as client:
        rows = client.browse(args.topic, state=args.state, after=args.after, limit=args.limit)
    if args.json:
        print(messages_json(list(rows)))
    elif rows:
        print(messages_table(list(rows), datetime.now(UTC)))
    else:
        print("no messages", file=sys.stderr)
    return 0


def retry_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``retry``."""
    parser.add_argument("id", nargs="?", help="a discarded message's id")
    parser.add_argument("--topic", help="with --all: the topic whose discarded messages to retry")
    parser.add_argument("--all", action="store_true", help="every discarded message of --topic")


def retry(args: argparse.Namespace) -> int:
    """Sends a discarded message (or, with --topic T --all, every one of a topic) round again,
    with fresh attempts; exit status 1 when ID is not a discarded message."""
    if (args.id is None) == (args.topic is None) or (args.topic is not None) != args.all:
        raise Error("give either ID, or --topic TOPIC --all")
    with open_client(args) as client:
        if args.id is None:
            print(f"retried {client.retry_discarded(args.topic)} message(s) of {args.topic!r}")
            return 0
        if not client.retry(args.id):
            print(f"pushpop: no discarded message {args.id}", file=sys.stderr)
            return 1
    print(f"retried {args.id}")
    return 0


def cancel_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cancel``."""
    parser.add_argument("id", help="a ready or scheduled message's id")


def cancel(args: argparse.Namespace) -> int:
    """Discards a message that was not delivered yet (error 'cancelled'); exit status 1 when it
    is pending (its consumer holds it), finished or unknown."""
    with open_client(args) as client:
        done = client.cancel(args.id)
    if not done:
        print(f"pushpop: {args.id} is not a ready or scheduled message: not cancelled",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"cancelled {args.id}")
    return 0


def schedule_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``schedule``."""
    parser.add_argument("name")
    parser.add_argument("topic")
    parser.add_argument(
        "payload", nargs="?", default="-", help="message text (UTF-8); '-' or none: read stdin"
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5-field cron expression, e.g. '0 9 * * MON-FRI'")
    when.add_argument("--every", type=positive_duration, help="a fixed cadence, e.g. 30s, 1h")
    parser.add_argument("--timezone", default="UTC", help="where --cron is read (default UTC)")
    parser.add_argument(
        "--priority", type=int, default=constants.PRIORITY,
        help=f"the messages' priority (default {constants.PRIORITY})",
    )  # fmt: skip


def schedule(args: argparse.Namespace) -> int:
    """Creates or replaces a schedule: one message to TOPIC per tick."""
    payload = args.payload.encode("utf-8") if args.payload != "-" else sys.stdin.buffer.read()
    with open_client(args) as client:
        client.schedule(
            args.name, args.topic, payload, cron=args.cron, every=args.every,
            timezone=args.timezone, priority=args.priority,
        )  # fmt: skip
        (info,) = [s for s in client.schedules() if s.name == args.name]
    print(f"scheduled {args.name!r}: next {info.next_run_at.isoformat()}")
    return 0


def unschedule_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unschedule``."""
    parser.add_argument("name")


def unschedule(args: argparse.Namespace) -> int:
    """Deletes a schedule; exit status 1 when there is none."""
    with open_client(args) as client:
        done = client.unschedule(args.name)
    if not done:
        print(f"pushpop: no schedule {args.name!r}", file=sys.stderr)
        return 1
    print(f"unscheduled {args.name!r}")
    return 0


def schedules_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``schedules``."""
    parser.add_argument("--json", action="store_true", help="print JSON, one object per schedule")


def schedules(args: argparse.Namespace) -> int:
    """Lists the schedules, with their next tick."""
    with open_client(args) as client:
        rows = client.schedules()
    if args.json:
        print(schedules_json(rows))
    elif rows:
        print(schedules_table(rows, datetime.now(UTC)))
    else:
        print("no schedules")
    return 0


def subscribe_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``subscribe`` and ``unsubscribe``."""
    parser.add_argument("topic", help="a topic, or a pattern: * one word, > one or more last words")
    parser.add_argument("subscriber", help="the topic that gets a copy of each push")


def subscribe(args: argparse.Namespace) -> int:
    """Copies every push to TOPIC (or a pattern such as orders.* or orders.>) into SUBSCRIBER,
    from now on."""
    with open_client(args) as client:
        changed = client.subscribe(args.topic, args.subscriber)
    done = "subscribed" if changed else "already subscribed:"
    print(f"{done} {args.subscriber!r} to {args.topic!r}")
    return 0


def unsubscribe(args: argparse.Namespace) -> int:
    """Removes a subscription; exit status 1 when there is none."""
    with open_client(args) as client:
        changed = client.unsubscribe(args.topic, args.subscriber)
    if not changed:
        print(f"pushpop: {args.subscriber!r} is not subscribed to {args.topic!r}", file=sys.stderr)
        return 1
    print(f"unsubscribed {args.subscriber!r} from {args.topic!r}")
    return 0


def subscriptions_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``subscriptions``."""
    parser.add_argument("topic", nargs="?", help="only the subscriptions made with this text")
    parser.add_argument(
        "--json", action="store_true", help="print JSON, one object per subscription"
    )


def subscriptions(args: argparse.Namespace) -> int:
    """Lists the subscriptions: pattern, subscriber topic, since when."""
    with open_client(args) as client:
        rows = client.subscriptions(args.topic)
    if args.json:
        print(subscriptions_json(rows))
    elif rows:
        print(subscriptions_table(rows))
    else:
        print("no subscriptions")
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
    Command("pause", "stop pops from a topic (pushes go on)", topic_args, pause),
    Command("resume", "let a paused topic be popped again", topic_args, resume),
    Command("browse", "list a topic's messages without taking them", browse_args, browse),
    Command("retry", "send discarded messages round again", retry_args, retry),
    Command("cancel", "discard a message that was not delivered yet", cancel_args, cancel),
    Command("schedule", "push a message on a cron or every interval", schedule_args, schedule),
    Command("unschedule", "delete a schedule", unschedule_args, unschedule),
    Command("schedules", "list the schedules", schedules_args, schedules),
    Command("subscribe", "copy pushes to a topic or pattern elsewhere", subscribe_args, subscribe),
    Command("unsubscribe", "remove a subscription", subscribe_args, unsubscribe),
    Command("subscriptions", "list the subscriptions", subscriptions_args, subscriptions),
    Command("worker", "run a handler on a topic's messages until stopped", worker_args, worker),
    Command("workers", "list the live workers", workers_args, workers),
    Command("exporter", "serve the queue's gauges to Prometheus", exporter_args, exporter),
    Command("dashboard", "serve the web dashboard", dashboard_args, dashboard),
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
