"""Handlers for worker subprocesses in the tests: they sleep, then note what they did."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pushpop


def _note(line: str) -> None:
    # One short write with O_APPEND: lines from concurrent handlers never interleave.
    with open(os.environ["PUSHPOP_TEST_JOURNAL"], "a", encoding="utf-8") as journal:
        journal.write(line + "\n")


def record(msg: pushpop.Message) -> None:
    """Notes the start, sleeps for the payload's "sleep" seconds, notes the end."""
    _note(f"start {msg.id}")
    time.sleep(json.loads(msg.payload).get("sleep", 0))
    _note(f"done {msg.id}")


async def async_record(msg: pushpop.AsyncMessage) -> None:
    """The asyncio twin of ``record``."""
    _note(f"start {msg.id}")
    await asyncio.sleep(json.loads(msg.payload).get("sleep", 0))
    _note(f"done {msg.id}")


def fail(msg: pushpop.Message) -> None:
    """Always fails, saying which attempt it was."""
    raise RuntimeError(f"attempt {msg.attempts} failed")


def observed(msg: pushpop.Message) -> None:
    """Does what the payload's "do" says: "ok" returns, "fail" raises, "dead end" discards the
    message itself, "lose lease" has its first delivery's lease lapse and requeued (as if the
    handler had outlived it), then returns."""
    import psycopg

    what = json.loads(msg.payload)["do"]
    if what == "fail":
        raise RuntimeError(f"attempt {msg.attempts} failed")
    if what == "dead end":
        msg.discard("dead end")
    elif what == "lose lease" and msg.attempts == 1:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(
                "UPDATE pushpop.messages SET lease_until = now() - interval '1 second'"
                " WHERE id = %s",
                [msg.id],
            )
            conn.execute("SELECT pushpop.requeue_expired()")
