"""The dashboard's pages and actions: a Starlette application over an :class:`AsyncClient`.

Every page is a handful of queries (see ``docs/dashboard.md``); every action is one POST that
carries a CSRF token (a double-submit cookie), is refused in read-only mode, and answers with a
redirect back to the page it came from and a notice saying what happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import calls, checks, constants
from ..async_client import AsyncClient, AsyncMessage
from ..errors import Error, InvalidArgument, InvalidType, PermissionDenied

HERE = Path(__file__).parent
REFRESH_SECONDS = 5
"""How often an open page fetches itself again."""
GAUGES_SECONDS = 2.0
"""How long the topics' counts are shared by every page and tab before they are read again."""
PAGE_SIZE = 25
"""Messages on one page of a topic."""
PREVIEW_BYTES = 120
"""Payload bytes shown in a topic's list; a message's own page shows up to FULL_BYTES."""
FULL_BYTES = 64 * 1024
WINDOW = timedelta(hours=1)
"""The throughput chart's span, one bar per minute."""
CSRF_COOKIE = "pushpop_csrf"
TOKEN_COOKIE = "pushpop_token"  # noqa: S105 (a cookie's name, not a secret)
ACTIONS = ("pause", "resume", "retry", "retry-all", "cancel", "purge")
STATES = calls.BROWSE_STATES
DASH = "\u2013"
"""What an empty field shows (an en dash)."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value from the database is text, never HTML
    undefined=jinja2.StrictUndefined,
)


# --- what the templates show -------------------------------------------------------------


def age(seconds: float | None) -> str:
    """``4s``, ``3m 20s``, ``2h 5m``, ``3d 4h``; a dash for none."""
    if seconds is None:
        return DASH
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def messages(count: int) -> str:
    """``1 message``, ``1,204 messages``."""
    return f"{count:,} message" + ("" if count == 1 else "s")


def when(value: datetime | None) -> str:
    """A time in UTC to the second; a dash for none."""
    if value is None:
        return DASH
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Payload:
    """A payload as shown: text if it is printable UTF-8, else hex; ``cut`` when truncated."""

    kind: str  # "text", "json" or "binary"
    text: str
    cut: bool
    size: int
    base64: str


def preview(payload: bytes, limit: int) -> Payload:
    """The first ``limit`` bytes of ``payload``, as text when that is what they are."""
    head = payload[:limit]
    cut = len(payload) > limit
    b64 = base64.b64encode(head).decode()
    try:
        text = head.decode("utf-8") if not cut else head.decode("utf-8", errors="ignore")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\n\r\t" for c in text):
        stripped = text.lstrip()
        kind = "json" if stripped[:1] in ("{", "[") else "text"
        return Payload(kind, text, cut, len(payload), b64)
    return Payload("binary", head.hex(" "), cut, len(payload), b64)


@dataclass(frozen=True)
class Bar:
    """One minute of the throughput chart, in SVG units."""

    x: float
    completed: int
    discarded: int
    y_completed: float
    h_completed: float
    y_discarded: float
    h_discarded: float
    label: str


@dataclass(frozen=True)
class Chart:
    """The last hour's finished messages per minute, ready for an inline SVG."""

    bars: list[Bar]
    peak: int
    completed: int
    discarded: int
    width: int = 600
    height: int = 80


def chart(rows: calls.Rows, now: datetime) -> Chart:
    """Sixty bars, one per minute up to ``now``; completed stacked on discarded."""
    minutes = int(WINDOW.total_seconds() // 60)
    end = now.replace(second=0, microsecond=0)
    counts = {minute: (completed, discarded) for minute, completed, discarded in rows}
    peak = max([c + d for c, d in counts.values()] + [1])
    width, height, gap = 600, 80, 1.0
    step = width / minutes
    bars = []
    for i in range(minutes):
        minute = end - timedelta(minutes=minutes - 1 - i)
        completed, discarded = counts.get(minute, (0, 0))
        h_d = discarded / peak * (height - 4)
        h_c = completed / peak * (height - 4)
        bars.append(
            Bar(
                x=round(i * step + gap / 2, 2),
                completed=completed,
                discarded=discarded,
                y_discarded=round(height - h_d, 2),
                h_discarded=round(h_d, 2),
                y_completed=round(height - h_d - h_c, 2),
                h_completed=round(h_c, 2),
                label=f"{minute.astimezone(UTC):%H:%M} UTC: {completed} completed,"
                f" {discarded} failed",
            )
        )
    return Chart(
        bars,
        peak,
        sum(c for c, _ in counts.values()),
        sum(d for _, d in counts.values()),
    )


# --- the application ---------------------------------------------------------------------


class Dashboard:
    """The pages and actions, their client and their settings."""

    def __init__(self, client: AsyncClient, *, read_only: bool, token: str | None) -> None:
        self.client = client
        self.read_only = read_only
        self.token = token
        self._opened = False
        self._lock = asyncio.Lock()
        self._gauges: tuple[float, calls.Rows] | None = None
        self._gauges_lock = asyncio.Lock()

    async def gauges(self) -> calls.Rows:
        """Every topic's counts (``queue_gauges``: one ``stats()``, whose cost grows with the
        table), read at most once per GAUGES_SECONDS for every page and tab; an action reads
        them afresh."""
        async with self._gauges_lock:
            cached = self._gauges
            if cached is None or time.monotonic() - cached[0] >= GAUGES_SECONDS:
                rows = await self.run(calls.queue_gauges(constants.STALE_AFTER))
                self._gauges = cached = (time.monotonic(), rows)
            return cached[1]

    async def run(self, call: calls.Call[Any]) -> Any:
        """One call on the dashboard's client, opened on first use (a mounted app's lifespan
        does not run, so the host application need not open it)."""
        if not self._opened:
            async with self._lock:
                if not self._opened:
                    await self.client.open()
                    self._opened = True
        # The client's own one-call runner: the dashboard's SQL lives in calls.py too.
        return await self.client._run(call)

    # -- plumbing --

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.cookies.get(TOKEN_COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def base(self, request: Request) -> str:
        """Where the dashboard is mounted: the prefix of every link."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """A page, with the CSRF cookie set if the browser has none yet."""
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        base = self.base(request)
        notice = request.query_params.get("notice")
        failed = request.query_params.get("failed")
        html = _templates.get_template(template).render(
            base=base,
            csrf=csrf,
            read_only=self.read_only,
            refresh=REFRESH_SECONDS,
            notice=notice,
            failed=failed,
            path=request.url.path,
            here=_here(request),
            link=lambda path, **q: _link(base, path, **q),
            age=age,
            when=when,
            plural=messages,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        _secure(response)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(
                CSRF_COOKIE, csrf, httponly=True, samesite="strict", path=base or "/"
            )
        return response

    def error(self, request: Request, exc: Exception) -> HTMLResponse:
        """What an error shows: its message in the page, never a traceback."""
        status = 503  # the database failed or is away
        if isinstance(exc, (InvalidArgument, InvalidType)):
            status = 400
        elif isinstance(exc, PermissionDenied):
            status = 403
        text = " ".join(str(exc).split()) or type(exc).__name__
        return self.render(request, "error.html", status=status, message=text)

    def page(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page: the token checked, pushpop's errors shown as a message."""

        async def endpoint(request: Request) -> Response:
            if self.token is not None and request.query_params.get("token") is not None:
                return self._log_in(request)
            if not self._authorized(request):
                return self.render(request, "token.html", status=401)
            try:
                return await handler(request)
            except Error as exc:
                return self.error(request, exc)

        return endpoint

    def _log_in(self, request: Request) -> Response:
        """``?token=...`` once: kept in a cookie, then the same page without it in the URL."""
        given = request.query_params["token"]
        if not hmac.compare_digest(given.encode(), (self.token or "").encode()):
            return self.render(request, "token.html", status=401, wrong=True)
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + ("?" + urlencode(query) if query else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, given, httponly=True, samesite="strict", path=self.base(request) or "/"
        )
        return response

    # -- pages --

    async def overview(self, request: Request) -> Response:
        gauges = await self.gauges()
        topics = [
            dict(
                zip(
                    ("topic", "ready", "scheduled", "pending", "completed", "discarded",
                     "paused", "oldest", "workers", "blocked"),
                    row,
                    strict=True,
                )
            )
            for row in gauges
        ]  # fmt: skip
        totals = {
            key: sum(t[key] for t in topics)
            for key in ("ready", "scheduled", "pending", "blocked", "completed", "discarded")
        }
        return self.render(
            request, "overview.html", topics=topics, totals=totals, chart=await self._chart(None)
        )

    async def _chart(self, topic: str | None) -> Chart | str:
        """The last hour's chart, or why there is none (pushpop.throughput needs
        pushpop_consumer or pushpop_admin)."""
        try:
            rows = await self.run(calls.throughput(topic, WINDOW))
        except PermissionDenied:
            return (
                "No throughput chart: this role may not call pushpop.throughput (it needs"
                " pushpop_consumer or pushpop_admin); the counts and the buttons work without it."
            )
        return chart(rows, datetime.now(UTC))

    async def topic(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        state = request.query_params.get("state") or "ready"
        if state not in STATES:
            raise InvalidArgument(f"state must be one of {', '.join(STATES)}, got {state!r}")
        after = request.query_params.get("after") or None
        checks.topic(name)
        gauges = await self.gauges()
        row = next((g for g in gauges if g[0] == name), None)
        counts = dict(
            zip(STATES, (row[2], row[1], row[3], row[9], row[4], row[5]) if row else (0,) * 6,
                strict=True)
        )  # fmt: skip
        paused = bool(row[6]) if row else False
        oldest = row[7] if row and row[1] else None
        rows = await self.run(calls.browse(name, state, after, PAGE_SIZE + 1))
        msgs = [AsyncMessage.from_row(self.client, r) for r in rows[:PAGE_SIZE]]
        more = len(rows) > PAGE_SIZE
        return self.render(
            request,
            "topic.html",
            name=name,
            state=state,
            states=STATES,
            counts=counts,
            paused=paused,
            oldest=oldest,
            workers=row[8] if row else 0,
            messages=[(m, preview(m.payload, PREVIEW_BYTES)) for m in msgs],
            next_after=str(msgs[-1].id) if more and msgs else None,
            after=after,
            chart=await self._chart(name),
        )

    async def message(self, request: Request) -> Response:
        raw = request.query_params.get("id", "").strip()
        try:
            id = UUID(raw)
        except ValueError:
            raise InvalidArgument(f"not a message id (a UUID): {raw!r}") from None
        rows = await self.run(calls.find(id))
        if not rows:
            return self.render(
                request, "error.html", status=404, message=f"no message {id} (any more)"
            )
        msg = AsyncMessage.from_row(self.client, rows[0])
        return self.render(request, "message.html", m=msg, payload=preview(msg.payload, FULL_BYTES))

    async def workers(self, request: Request) -> Response:
        rows = await self.run(calls.workers_and_leader(constants.STALE_AFTER))
        workers = [
            {
                "id": r[0], "host": r[1], "pid": r[2], "topics": r[3], "concurrency": r[4],
                "started": r[5], "heartbeat_age": (r[8] - r[6]).total_seconds(), "leads": r[7],
            }
            for r in rows
        ]  # fmt: skip
        return self.render(request, "workers.html", workers=workers)

    async def schedules(self, request: Request) -> Response:
        rows = await self.run(calls.schedules())
        return self.render(request, "schedules.html", schedules=rows)

    async def confirm(self, request: Request) -> Response:
        """The page that names the topic and the count before a purge or a retry of all."""
        action = request.query_params.get("action", "")
        name = checks.topic(request.query_params.get("name", ""))
        if action not in ("purge", "retry-all"):
            raise InvalidArgument(f"nothing to confirm for {action!r}")
        gauges = await self.gauges()
        row = next((g for g in gauges if g[0] == name), None)
        if action == "purge":
            count = (row[1] + row[2] + row[4] + row[5]) if row else 0
        else:
            count = row[5] if row else 0
        return self.render(
            request, "confirm.html", action=action, name=name, count=count,
            pending=row[3] if row else 0,
        )  # fmt: skip

    # -- actions --

    async def act(self, request: Request) -> Response:
        """One POST: checks token, origin and CSRF token, then runs one call."""
        if not self._authorized(request):
            return self.render(request, "token.html", status=401)
        action = request.path_params["action"]
        if self.read_only:
            return self.render(
                request, "error.html", status=403,
                message=f"refused: this dashboard is read-only ({action} is not allowed)",
            )  # fmt: skip
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if not _same_origin(request):
            return self.render(
                request, "error.html", status=403, message="refused: a request from another site"
            )
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = form.get("csrf", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
            return self.render(
                request, "error.html", status=403,
                message="refused: the form's CSRF token is missing or stale; reload the page",
            )  # fmt: skip
        back = _safe_next(form.get("next"), self.base(request))
        try:
            notice = await self._do(action, form)
        except Error as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            return RedirectResponse(_with(back, failed=f"{action} failed: {text}"), 303)
        self._gauges = None
        return RedirectResponse(_with(back, notice=notice), 303)

    async def _do(self, action: str, form: dict[str, str]) -> str:
        if action == "pause":
            topic = checks.topic(form.get("topic", ""))
            done = await self.run(calls.pause(topic))
            return f"paused {topic}" if done else f"{topic} was paused already"
        if action == "resume":
            topic = checks.topic(form.get("topic", ""))
            done = await self.run(calls.resume(topic))
            return f"resumed {topic}" if done else f"{topic} was not paused"
        if action == "retry":
            id = checks.message_id(form.get("id", ""))
            done = await self.run(calls.retry(id))
            return f"retrying {id}" if done else f"{id} is not a discarded message"
        if action == "retry-all":
            topic = checks.topic(form.get("topic", ""))
            count = await self.run(calls.retry_discarded(topic, None))
            return f"retrying {messages(count)} of {topic}"
        if action == "cancel":
            id = checks.message_id(form.get("id", ""))
            done = await self.run(calls.cancel(id))
            return (
                f"cancelled {id}" if done else f"{id} was not waiting (ready, scheduled or blocked)"
            )
        if action == "purge":
            topic = checks.topic(form.get("topic", ""))
            count = await self.run(calls.purge(topic))
            return f"purged {messages(count)} of {topic}"
        raise InvalidArgument(f"no action {action!r}: one of {', '.join(ACTIONS)}")


def _secure(response: Response) -> None:
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-frame-options"] = "DENY"
    response.headers["cache-control"] = "no-store"


def _link(base: str, path: str, **query: Any) -> str:
    """A link inside the dashboard; None values are left out of the query."""
    q = {k: v for k, v in query.items() if v is not None}
    return base + path + ("?" + urlencode(q) if q else "")


def _here(request: Request) -> str:
    """This page's path and query without the notices: where an action comes back to."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("notice", "failed")]
    return request.url.path + ("?" + urlencode(query) if query else "")


def _with(target: str, **query: str) -> str:
    parts = urlsplit(target)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("notice", "failed")]
    return parts.path + "?" + urlencode([*kept, *query.items()])


def _safe_next(target: str | None, base: str) -> str:
    """A redirect target inside the dashboard only (no other host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return base + "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return base + "/"
    return target


def _same_origin(request: Request) -> bool:
    """False for a browser POST whose Origin (or Referer) names another host."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    return urlsplit(origin).netloc == host


def app(
    client: AsyncClient | str | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
) -> Starlette:
    """The dashboard as an ASGI app: ``host.mount("/queue", pushpop.dashboard.app(client))``.

    ``client``: an :class:`AsyncClient` (opened on first use if it is not yet), or a DSN.
    ``read_only``: show, never change. ``token``: required from every browser, once as
    ``?token=...`` (then kept in a cookie) or as ``Authorization: Bearer ...``.
    """
    if not isinstance(client, AsyncClient):
        client = AsyncClient(client, min_size=1, max_size=4)
    if token is not None:
        token = checks.optional_text(token, "token")
    dash = Dashboard(client, read_only=checks.flag(read_only, "read_only"), token=token)
    routes = [
        Route("/", dash.page(dash.overview)),
        Route("/topic", dash.page(dash.topic)),
        Route("/message", dash.page(dash.message)),
        Route("/workers", dash.page(dash.workers)),
        Route("/schedules", dash.page(dash.schedules)),
        Route("/confirm", dash.page(dash.confirm)),
        Route("/actions/{action}", dash.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    starlette = Starlette(routes=routes)
    starlette.state.dashboard = dash
    return starlette


def serve(
    dsn: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_only: bool = False,
    base_path: str = "",
    token: str | None = None,
    started: Callable[[str], None] | None = None,
) -> None:
    """Runs the dashboard with uvicorn until SIGINT/SIGTERM (``pushpop dashboard``)."""
    import uvicorn

    base = "/" + base_path.strip("/") if base_path.strip("/") else ""
    client = AsyncClient(dsn, min_size=1, max_size=4)
    inner = app(client, read_only=read_only, token=token)
    if base:
        outer = Starlette(
            routes=[
                Route("/", lambda request: RedirectResponse(base + "/")),
                Route(base, lambda request: RedirectResponse(base + "/")),
                Mount(base, inner),
            ]
        )
    else:
        outer = inner
    config = uvicorn.Config(outer, host=host, port=port, log_level="warning", lifespan="off")

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn raises a caught SIGINT/SIGTERM again once it has shut down; a stop that
            # was asked for is a clean exit here (status 0), as for a worker.
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    server = Server(config)

    async def run() -> None:
        await client.open()
        try:
            await server.serve()
        finally:
            await client.close()

    if started is not None:
        started(f"http://{host if ':' not in host else f'[{host}]'}:{port}{base}/")
    asyncio.run(run())
