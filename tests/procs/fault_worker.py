"""A worker process for the fault tests: fault_worker.py TOPICS [OPTIONS-JSON].

TOPICS is comma-separated. OPTIONS are worker options, plus ``"asyncio": true`` to run an
AsyncWorker instead of a Worker. The handler notes ``done ID TIME PID`` in the journal
(PUSHPOP_TEST_JOURNAL), TIME being the wall clock. Logs go to stderr as ``TIME LEVEL LOGGER:
message``, pushpop's at PUSHPOP_TEST_LOG_LEVEL (default INFO), psycopg's at WARNING.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

import pushpop


def note(msg: pushpop.Message | pushpop.AsyncMessage) -> None:
    """One short O_APPEND write per message: lines from concurrent handlers never interleave."""
    line = f"done {msg.id} {time.time():.6f} {os.getpid()}\n"
    with open(os.environ["PUSHPOP_TEST_JOURNAL"], "a", encoding="utf-8") as journal:
        journal.write(line)


def handle(msg: pushpop.Message) -> None:
    note(msg)


async def handle_async(msg: pushpop.AsyncMessage) -> None:
    note(msg)


async def work_async(topics: list[str], options: dict[str, Any]) -> None:
    async with pushpop.AsyncClient() as client:
        await client.work(topics, handle_async, **options)


def main(topics: list[str], options: dict[str, Any]) -> None:
    if options.pop("asyncio", False):
        asyncio.run(work_async(topics, options))
    else:
        with pushpop.Client() as client:
            client.work(topics, handle, **options)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, format="%(created).3f %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pushpop").setLevel(os.environ.get("PUSHPOP_TEST_LOG_LEVEL", "INFO"))
    main(sys.argv[1].split(","), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
