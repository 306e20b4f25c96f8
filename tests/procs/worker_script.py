"""A plain script running a worker in its main thread: worker_script.py TOPIC [OPTIONS-JSON]."""

from __future__ import annotations

import json
import logging
import sys

import handlers

import pushpop

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    with pushpop.Client() as client:
        client.work(sys.argv[1], handlers.record, **options)
