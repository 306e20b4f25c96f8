"""The dashboard served by uvicorn in a thread of the test, on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

import pushpop
from pushpop.dashboard import app


@dataclass
class Served:
    """A running dashboard: its URL, and a tiny cookie-keeping HTTP client for it."""

    url: str  # with the base path, ending in "/"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """One request (``path`` relative to the base path); the status, headers and body.
        Cookies the dashboard sets are kept for the next request, as a browser would."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, parts.path.rstrip("/") + path, body=body, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        status, _, text = self.request("GET", path, headers=headers)
        return status, text


@contextlib.contextmanager
def serving(dsn: str, base_path: str = "", **options: Any) -> Iterator[Served]:
    """The dashboard of ``dsn`` (``options`` go to :func:`pushpop.dashboard.app`), mounted
    at ``base_path`` in a host Starlette app as an application would, until the block ends."""
    client = pushpop.AsyncClient(dsn, min_size=1, max_size=2)
    dashboard = app(client, **options)
    host = Starlette(routes=[Mount(base_path, dashboard)]) if base_path else dashboard
    config = uvicorn.Config(host, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = uvicorn.Server(config)

    async def run() -> None:
        try:
            await server.serve()
        finally:
            await client.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="dashboard-server")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            thread.join(10)
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}{base_path}/")
    finally:
        server.should_exit = True
        thread.join(15)
