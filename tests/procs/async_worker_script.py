"""An asyncio program running a worker: async_worker_script.py TOPIC [OPTIONS-JSON]."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import handlers

import pushpop


async def main(topic: str, options: dict[str, Any]) -> None:
    async with pushpop.AsyncClient() as client:
        await client.work(topic, handlers.async_record, **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
