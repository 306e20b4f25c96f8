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
