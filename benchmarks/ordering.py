"""Order per key: keyed pop + complete against plain, and pop behind a deep blocked backlog."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from pushpop import Client

from . import client_ops, data
from .env import Env, Settings
from .figures import Figure, Metric, Values
from .runner import Op
from .sides import with_client

PER_KEY = 100
BUSY_KEYS = 10

# Keyed messages, as pushes would leave them: per key, the first ready (or pending, for a key
# busy with a long job), the rest blocked behind it in push order.
_LOAD_KEYED = """
INSERT INTO pushpop.messages
    (id, topic, state, state_time, payload, ordering_key, lease, lease_until, attempts)
SELECT gen_random_uuid(), %(topic)s,
       CASE WHEN n > 1 THEN 'blocked' WHEN %(busy)s THEN 'pending' ELSE 'ready' END,
       now() - interval '1 minute', %(payload)s, 'key-' || k,
       CASE WHEN n = 1 AND %(busy)s THEN gen_random_uuid() END,
       CASE WHEN n = 1 AND %(busy)s THEN now() + interval '1 day' END,
       CASE WHEN n = 1 AND %(busy)s THEN 1 ELSE 0 END
FROM generate_series(1, %(per_key)s) AS n, generate_series(1, %(keys)s) AS k
ORDER BY n, k
"""
_LOAD_PLAIN = """
INSERT INTO pushpop.messages (id, topic, state, state_time, payload)
SELECT gen_random_uuid(), %(topic)s, 'ready', now() - interval '1 minute', %(payload)s
FROM generate_series(1, %(n)s)
"""


def _keys(s: Settings) -> int:
    """10,000 keys of 100 messages in the full run; fewer in a quick one."""
    return max(s.depth // PER_KEY, 10)


def _plain_messages(s: Settings) -> int:
    """Enough ready messages that no round empties a topic."""
    return 20_000 if s.quick else 200_000


def _load_keyed(env: Env, topic: str, keys: int, per_key: int, busy: bool) -> None:
    with env.connect() as conn:
        conn.execute(
            _LOAD_KEYED,
            {"topic": topic, "keys": keys, "per_key": per_key, "busy": busy,
             "payload": env.payload},
        )  # fmt: skip


def _load_plain(env: Env, topic: str, n: int) -> None:
    with env.connect() as conn:
        conn.execute(_LOAD_PLAIN, {"topic": topic, "n": n, "payload": env.payload})


def _pop_complete(topic: str) -> Callable[[Client], Op]:
    """``client.pop`` of the topic, then ``msg.complete()``, for each consumer thread."""
    return lambda client: client_ops.pop_complete(client, topic)


def _empty(env: Env) -> None:
    data.reset(env)


def _keyed_vs_plain_setup(env: Env) -> None:
    s = env.settings
    data.reset(env)
    _load_keyed(env, "keyed", _keys(s), PER_KEY, busy=False)
    _load_plain(env, "plain", _keys(s) * PER_KEY)
    data.settle(env)


def _keyed(env: Env) -> Values:
    return {"pop_complete_keyed": with_client(env, _pop_complete("keyed"))}


def _plain(env: Env) -> Values:
    return {"pop_complete_keyed": with_client(env, _pop_complete("plain"))}


def _backlog_setup(env: Env) -> None:
    s = env.settings
    data.reset(env)
    _load_plain(env, "backlogged", _plain_messages(s))
    _load_keyed(env, "backlogged", BUSY_KEYS, s.depth // BUSY_KEYS, busy=True)
    _load_plain(env, "clean", _plain_messages(s))
    data.settle(env)


def _backlogged(env: Env) -> Values:
    return {"pop_complete_blocked_backlog": with_client(env, _pop_complete("backlogged"))}


def _clean(env: Env) -> Values:
    return {"pop_complete_blocked_backlog": with_client(env, _pop_complete("clean"))}


def _push(keys: int | None) -> Callable[[Client], Op]:
    """``client.push``, each with the next of ``keys`` ordering keys (None: no key)."""
    counter = itertools.count()

    def make(client: Client) -> Op:
        def op() -> int:
            n = next(counter)
            key = None if keys is None else f"key-{n % keys}"
            client.push("pushed", b"x" * 100, ordering_key=key)
            return 1

        return op

    return make


def _push_keyed(env: Env) -> Values:
    return {"push_keyed": with_client(env, _push(_keys(env.settings)))}


def _push_plain(env: Env) -> Values:
    return {"push_keyed": with_client(env, _push(None))}


def figures(s: Settings) -> list[Figure]:
    """Keyed pop + complete against plain; pop with a million messages blocked behind ten keys."""
    keys = _keys(s)
    return [
        Figure(
            "ordered_push",
            (
                Metric(
                    "push_keyed", f"push, {keys:,} keys in turn, {s.threads} producers", "push/s"
                ),
            ),
            _push_keyed,
            _push_plain,
            setup=_empty,
            note=f"each push names the next of {keys:,} ordering keys, so most find their key "
            "live and wait blocked; baseline: the same pushes without a key",
        ),
        Figure(
            "ordered_pop",
            (
                Metric(
                    "pop_complete_keyed",
                    f"pop + complete, {keys:,} keys x {PER_KEY}, {s.threads} consumers",
                ),
            ),
            _keyed,
            _plain,
            setup=_keyed_vs_plain_setup,
            note=f"{keys * PER_KEY:,} keyed messages ({keys:,} keys, one ready per key, the "
            "rest blocked); each complete makes the key's next message ready. Baseline: "
            "pushpop's plain pop + complete on a topic of as many unkeyed messages",
        ),
        Figure(
            "blocked_backlog",
            (
                Metric(
                    "pop_complete_blocked_backlog",
                    f"pop + complete, {s.depth:,} blocked behind {BUSY_KEYS} busy keys",
                ),
            ),
            _backlogged,
            _clean,
            setup=_backlog_setup,
            note=f"unkeyed ready messages in a topic that also holds {s.depth:,} messages "
            f"blocked behind {BUSY_KEYS} keys whose live messages are pending; baseline: the "
            "same pops on a topic without that backlog",
        ),
    ]
