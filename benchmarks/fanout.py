"""Fan-out: a push to a topic with 100 subscribers, and what subscriptions cost other pushes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pushpop import Client

from . import baseline, data
from .env import TOPIC, Env, Settings
from .figures import Figure, Metric, Values
from .runner import Op
from .sides import with_client, with_connections

SUBSCRIBERS = 100


@contextmanager
def subscribed(env: Env, pairs: list[tuple[str, str]]) -> Iterator[None]:
    """The subscriptions ``pairs`` (topic or pattern, subscriber) while the block runs."""
    with env.connect() as conn:
        for topic, subscriber in pairs:
            conn.execute("SELECT pushpop.subscribe(%s, %s)", [topic, subscriber])
        try:
            yield
        finally:
            for topic, subscriber in pairs:
                conn.execute("SELECT pushpop.unsubscribe(%s, %s)", [topic, subscriber])


def _empty(env: Env) -> None:
    data.reset(env)


def _push(env: Env) -> Callable[[Client], Op]:
    payload = env.payload

    def make(client: Client) -> Op:
        def op() -> int:
            client.push(TOPIC, payload)
            return 1

        return op

    return make


def _push_many(env: Env, n: int) -> Callable[[Client], Op]:
    payloads = [env.payload] * n

    def make(client: Client) -> Op:
        def op() -> int:
            client.push_many(TOPIC, payloads)
            return 1

        return op

    return make


def _fanout_pushpop(env: Env) -> Values:
    pairs = [(TOPIC, f"subscriber-{i:03}") for i in range(SUBSCRIBERS)]
    with subscribed(env, pairs):
        return {"push_fanout": with_client(env, _push(env))}


def _fanout_baseline(env: Env) -> Values:
    """pushpop's own push_many of as many messages as the fan-out makes copies."""
    return {"push_fanout": with_client(env, _push_many(env, SUBSCRIBERS))}


def _elsewhere_pushpop(env: Env) -> Values:
    """A plain push while other topics have subscriptions: exact ones, then patterns too."""
    exact = [("elsewhere", f"subscriber-{i:03}") for i in range(SUBSCRIBERS)]
    patterns = [("elsewhere.*", "sink"), ("elsewhere.>", "sink"), ("*.elsewhere", "sink")]
    with subscribed(env, exact):
        values = {"push_subscriptions_elsewhere": with_client(env, _push(env))}
        with subscribed(env, patterns):
            values["push_patterns_elsewhere"] = with_client(env, _push(env))
    return values


def _elsewhere_baseline(env: Env) -> Values:
    rate = with_connections(env, lambda c: baseline.push(c, env, notify=True))
    return {"push_subscriptions_elsewhere": rate, "push_patterns_elsewhere": rate}


def figures(s: Settings) -> list[Figure]:
    """A push fanned out to 100 subscribers; a push to a topic without any, while others have."""
    return [
        Figure(
            "fanout",
            (
                Metric(
                    "push_fanout",
                    f"push to {SUBSCRIBERS} subscribers, {s.threads} producers",
                    "push/s",
                ),
            ),
            _fanout_pushpop,
            _fanout_baseline,
            setup=_empty,
            note=f"each push puts {SUBSCRIBERS} copies into {SUBSCRIBERS} subscriber topics; "
            f"baseline: pushpop's push_many of {SUBSCRIBERS} messages to one topic, what the "
            "issue asks a fan-out to cost",
        ),
        Figure(
            "subscription_check",
            (
                Metric(
                    "push_subscriptions_elsewhere",
                    f"push, {SUBSCRIBERS} subscriptions on another topic",
                    relative_to="push",
                ),
                Metric(
                    "push_patterns_elsewhere",
                    "push, 3 patterns too, none matching",
                    relative_to="push",
                ),
            ),
            _elsewhere_pushpop,
            _elsewhere_baseline,
            setup=_empty,
            note="the push figure's workload while other topics have subscriptions, so push "
            "probes pushpop.subscriptions for its topic (and, with patterns, for each prefix of "
            "it); with no subscription at all (the push figure) the check is a constant false "
            "folded into push's plan",
        ),
    ]
