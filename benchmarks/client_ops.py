"""pushpop's side of each workload, through the public sync Client."""

from __future__ import annotations

from pushpop import Client

from .env import TOPIC, Env
from .runner import Op


def client(env: Env) -> Client:
    """A Client whose pool holds one connection per thread."""
    threads = env.settings.threads
    return Client(env.conninfo, min_size=threads, max_size=threads)


def push(client: Client, env: Env, durable: bool = True) -> Op:
    """``client.push`` of one message."""
    payload = env.payload

    def op() -> int:
        client.push(TOPIC, payload, durable=durable)
        return 1

    return op


def push_many(client: Client, env: Env) -> Op:
    """``client.push_many`` of a batch."""
    payloads = [env.payload] * env.settings.batch

    def op() -> int:
        client.push_many(TOPIC, payloads)
        return len(payloads)

    return op


def pop_complete(client: Client, topic: str = TOPIC) -> Op:
    """``client.pop`` then ``msg.complete()``."""

    def op() -> int:
        msg = client.pop(topic)
        if msg is None:
            return 0
        msg.complete()
        return 1

    return op


def pop_many_complete(client: Client, env: Env) -> Op:
    """``client.pop_many`` of a batch, then ``client.complete_many`` of it: two statements."""
    n = env.settings.batch

    def op() -> int:
        msgs = client.pop_many(TOPIC, n)
        if msgs:
            client.complete_many(msgs)
        return len(msgs)

    return op
