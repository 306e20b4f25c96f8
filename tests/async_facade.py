"""Drives an AsyncClient through the synchronous API, so one test suite can check both clients.

Every call is sent to an event loop running in a background thread and waited for; the
messages it returns are wrapped the same way, so ``msg.complete()`` works without ``await``.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from pushpop import AsyncClient, AsyncMessage


class _Proxy:
    """Forwards attribute reads to ``target``; its methods run to completion on ``loop``."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def _wait(self, result: Any) -> Any:
        if asyncio.iscoroutine(result):
            result = asyncio.run_coroutine_threadsafe(result, self._loop).result()
        if isinstance(result, AsyncMessage):
            return _Proxy(result, self._loop)
        if isinstance(result, list):
            return [self._wait(item) for item in result]
        return result

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._wait(value(*_unwrapped(args), **kwargs))

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


def _unwrapped(args: tuple[Any, ...]) -> list[Any]:
    """Arguments as the async client wants them: its own messages, not their proxies."""
    return [
        [a._target if isinstance(a, _Proxy) else a for a in arg] if isinstance(arg, list) else arg
        for arg in args
    ]


class SyncFacade(_Proxy):
    """An :class:`AsyncClient` with the interface of :class:`pushpop.Client`; opened on creation."""

    def __init__(self, client: AsyncClient) -> None:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="pushpop-facade", daemon=True)
        self._thread.start()
        super().__init__(client, loop)
        self._wait(client.open())

    def __enter__(self) -> SyncFacade:
        return self

    def __exit__(
        self,
        type: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Closes the client, then stops the loop and its thread.

        ``close()`` alone closes only the client, which then raises on use like a closed Client.
        """
        self._wait(self._target.close())
        self._wait(self._loop.shutdown_default_executor())  # threads of asyncio.to_thread
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
