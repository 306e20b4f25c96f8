"""How each side runs a workload: pushpop through a Client, the baseline on plain connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from pushpop import Client

from . import client_ops
from .data import Refill, Table
from .env import Env
from .runner import Op, throughput


def run(env: Env, ops: Sequence[Op], refill: Table | None = None) -> float:
    """The ops' throughput; with ``refill``, that table's topic is topped up as it is consumed."""
    s = env.settings
    if refill is None:
        return throughput(ops, s.warmup, s.duration)
    feed = Refill(env, refill)
    try:
        return throughput(ops, s.warmup, s.duration, feed)
    finally:
        feed.close()


def with_client(env: Env, make: Callable[[Client], Op], refill: Table | None = None) -> float:
    """One op per thread, all sharing a Client whose pool has a connection per thread."""
    with client_ops.client(env) as client:
        return run(env, [make(client) for _ in range(env.settings.threads)], refill)


def with_connections(
    env: Env, make: Callable[[psycopg.Connection[Any]], Op], refill: Table | None = None
) -> float:
    """One op per thread, each on a connection of its own."""
    with env.connections(env.settings.threads) as conns:
        return run(env, [make(conn) for conn in conns], refill)
