"""The sync modules are written from the asyncio ones by ``tools/async_to_sync.py``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parents[1] / "tools" / "async_to_sync.py"

SOURCE = '''"""Reads ``await AsyncThing.get()``, ``async with`` it."""

import asyncio
from collections.abc import Awaitable, Callable

from .tasks import Event

ASYNC = True


class AsyncThing:
    """An :class:`AsyncThing`."""

    async def __aenter__(self) -> AsyncThing:
        return self

    async def get(self, wait: Callable[[], Awaitable[int]]) -> "AsyncThing":
        await Event().wait(1)
        if ASYNC:
            print("async only")
        else:
            print("sync only")
        async with self:
            await asyncio.to_thread(print, "blocking")
        await asyncio.shield(self.get(wait))
        return self if ASYNC else AsyncThing()
'''

TWIN = '''"""Reads ``Thing.get()``, ``with`` it."""

from collections.abc import Callable

from .threads import Event


class Thing:
    """An :class:`Thing`."""

    def __enter__(self) -> Thing:
        return self

    def get(self, wait: Callable[[], int]) -> "Thing":
        Event().wait(1)
        print("sync only")
        with self:
            print("blocking")
        self.get(wait)
        return Thing()
'''


def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_rule_of_the_tool_applies_to_an_asyncio_module() -> None:
    written = tool().twin("pushpop/async_thing.py", SOURCE, "pushpop/thing.py")
    header = "# generated from pushpop/async_thing.py by tools/async_to_sync.py: do not edit\n"
    assert written == header + TWIN


def test_the_sync_modules_are_as_the_tool_writes_them() -> None:
    checked = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
