"""Worker subprocesses for the tests: spawn them, read their output, read their journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

PROCS = Path(__file__).parent / "procs"
PUSHPOP_CLI = str(Path(sys.executable).parent / "pushpop")


class Proc:
    """A subprocess whose output is collected line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="test-proc-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        """Whether any output line so far contains ``text``."""
        return any(text in line for line in self.lines)

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Waits for the exit and the end of its output; returns the exit code."""
        code = self.popen.wait(timeout)
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


class Journal:
    """The file where the test handlers (procs/handlers.py) note `start ID` and `done ID`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def entries(self, kind: str) -> Counter[str]:
        lines = self.path.read_text().splitlines()
        return Counter(line.split()[1] for line in lines if line.startswith(kind + " "))


class Spawner:
    """Starts worker processes on one database; ``close()`` kills whatever still runs."""

    def __init__(self, dsn: str, journal: Journal) -> None:
        self.procs: list[Proc] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "PUSHPOP_TEST_JOURNAL": str(journal.path),
            "PYTHONPATH": os.pathsep.join([str(PROCS), os.environ.get("PYTHONPATH", "")]),
        }

    def script(self, name: str, topic: str, **options: Any) -> Proc:
        """Runs procs/NAME (a plain script running a worker) with worker options as JSON."""
        return self._start([sys.executable, str(PROCS / name), topic, json.dumps(options)])

    def cli(self, handler: str, topic: str, *args: str) -> Proc:
        """Runs ``pushpop worker HANDLER --topic TOPIC ARGS...``."""
        return self._start([PUSHPOP_CLI, "worker", handler, "--topic", topic, *args])

    def _start(self, args: list[str]) -> Proc:
        proc = Proc(args, self.env)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.wait(10)
