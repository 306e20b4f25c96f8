"""Throughput of the basic operations, one message at a time and in batches."""

from __future__ import annotations

from . import baseline, client_ops, data
from .data import BASELINE, PUSHPOP
from .env import Env, Settings
from .figures import Figure, Measure, Metric, Values
from .sides import with_client, with_connections


def _empty(env: Env) -> None:
    data.reset(env)


def shallow(env: Env) -> None:
    """A topic holding the usual few ready messages (kept there by a refill during a run)."""
    data.reset(env)
    data.load_both(env, "ready", env.settings.shallow)
    data.settle(env)


def _push_pushpop(env: Env) -> Values:
    rate = with_client(env, lambda c: client_ops.push(c, env))
    return {"push": rate, "push_vs_plain_insert": rate}


def _push_baseline(env: Env) -> Values:
    return {
        "push": with_connections(env, lambda c: baseline.push(c, env, notify=True)),
        "push_vs_plain_insert": with_connections(
            env, lambda c: baseline.push(c, env, notify=False)
        ),
    }


def _server_push_pushpop(env: Env) -> Values:
    return {"push_server": baseline.server_push(env, "pushpop")} if baseline.has_pgbench() else {}


def _server_push_bare(env: Env) -> Values:
    return {"push_server": baseline.server_push(env, "bare")} if baseline.has_pgbench() else {}


def _not_durable_pushpop(env: Env) -> Values:
    rate = with_client(env, lambda c: client_ops.push(c, env, durable=False))
    return {"push_not_durable": rate, "push_not_durable_vs_sql": rate}


def _not_durable_others(env: Env) -> Values:
    return {
        "push_not_durable": with_client(env, lambda c: client_ops.push(c, env)),
        "push_not_durable_vs_sql": with_connections(
            env, lambda c: baseline.push(c, env, durable=False)
        ),
    }


def pop_measures(key: str) -> tuple[Measure, Measure]:
    """pop + complete of one message at a time, pushpop and baseline, reported under ``key``."""

    def pushpop(env: Env) -> Values:
        return {key: with_client(env, client_ops.pop_complete, refill=PUSHPOP)}

    def plain(env: Env) -> Values:
        return {
            key: with_connections(env, lambda c: baseline.pop_complete(c, env), refill=BASELINE)
        }

    return pushpop, plain


def _push_many_pushpop(env: Env) -> Values:
    return {"push_many": with_client(env, lambda c: client_ops.push_many(c, env))}


def _push_many_baseline(env: Env) -> Values:
    return {"push_many": with_connections(env, lambda c: baseline.push_many(c, env))}


def _pop_many_pushpop(env: Env) -> Values:
    rate = with_client(env, lambda c: client_ops.pop_many_complete(c, env), refill=PUSHPOP)
    return {"pop_many_complete": rate}


def _pop_many_baseline(env: Env) -> Values:
    rate = with_connections(env, lambda c: baseline.pop_many_complete(c, env), refill=BASELINE)
    return {"pop_many_complete": rate}


_pop_pushpop, _pop_baseline = pop_measures("pop_complete")


def figures(s: Settings) -> list[Figure]:
    """push, pop + complete, and their batched forms."""
    return [
        Figure(
            "push",
            (
                Metric("push", f"push, {s.threads} producers"),
                Metric("push_vs_plain_insert", "push vs INSERT without NOTIFY"),
            ),
            _push_pushpop,
            _push_baseline,
            setup=_empty,
            note="baseline: INSERT + pg_notify in one statement; the second row's baseline "
            "is the bare INSERT (pushpop's figure is the same measurement in both rows)",
        ),
        Figure(
            "push_server",
            (Metric("push_server", f"push in pgbench vs a bare INSERT, {s.threads} clients"),),
            _server_push_pushpop,
            _server_push_bare,
            setup=_empty,
            note="the server's side of a push, without a client's work: pgbench (prepared "
            "statements, each call its own transaction) running SELECT pushpop.push(topic, "
            "payload); baseline: INSERT of the payload into a table with nothing but an id; "
            "target ≥ 0.6",
        ),
        Figure(
            "push_not_durable",
            (
                Metric("push_not_durable", "push, durable=False, vs pushpop's durable push"),
                Metric("push_not_durable_vs_sql", "push, durable=False, vs INSERT + NOTIFY alike"),
            ),
            _not_durable_pushpop,
            _not_durable_others,
            setup=_empty,
            note="pushpop: push(durable=False), whose transaction commits with "
            "synchronous_commit off; the first row's baseline column is pushpop's own durable "
            "push, the second's INSERT + pg_notify committing with synchronous_commit off too",
        ),
        Figure(
            "pop",
            (Metric("pop_complete", f"pop + complete, {s.threads} consumers"),),
            _pop_pushpop,
            _pop_baseline,
            setup=shallow,
            note=f"{s.shallow:,} ready messages, topped up as they are consumed; "
            "baseline: UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) then UPDATE",
        ),
        Figure(
            "push_many",
            (Metric("push_many", f"push_many, batches of {s.batch}"),),
            _push_many_pushpop,
            _push_many_baseline,
            setup=_empty,
            note="baseline: INSERT ... SELECT FROM unnest(payloads) + one pg_notify",
        ),
        Figure(
            "pop_many",
            (Metric("pop_many_complete", f"pop_many + complete, batches of {s.batch}"),),
            _pop_many_pushpop,
            _pop_many_baseline,
            setup=shallow,
            note="pushpop: pop_many, then complete_many of the batch (one statement each); "
            "baseline: UPDATE ... = ANY(ARRAY(SELECT ... SKIP LOCKED)), then one UPDATE ... "
            "FROM unnest(ids, leases)",
        ),
    ]
