"""A web dashboard for pushpop: topics, messages, workers and schedules, and the buttons that
pause, resume, retry, cancel and purge.

``pushpop dashboard`` serves it; :func:`app` returns the ASGI application to mount in an
existing Starlette or FastAPI app, behind its own authentication. Needs ``pushpop[dashboard]``.
"""

from __future__ import annotations

from .web import app, serve

__all__ = ["app", "serve"]
