"""The dashboard over plain HTTP: escaping, CSRF, read-only mode, the token, permission errors
shown as messages, redirects that stay inside the dashboard, and the command's safe defaults."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import roles
from dashboard_server import Served, serving

import pushpop
from pushpop import cli
from pushpop.dashboard.web import chart, preview

XSS = "<script>alert(1)</script>"


@pytest.fixture
def pushed(dsn: str) -> Iterator[pushpop.Client]:
    """A database with an HTML-looking topic and payload, a binary payload and a dead one."""
    with pushpop.Client(dsn) as client:
        client.push(XSS, b"<img src=x onerror=alert(2)>", headers={"h<b>": "<i>v</i>"})
        client.push("jobs", b"\x00\x01\xfe\xff")
        client.push("jobs", b"dies", max_attempts=1)
        popped = client.pop("jobs")
        assert popped is not None
        client.push("jobs", b"dead", max_attempts=1)
        dead = client.pop("jobs")
        assert dead is not None
        dead.discard("<b>boom</b>")
        yield client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match[1]


def test_database_text_is_escaped_everywhere(dsn: str, pushed: pushpop.Client) -> None:
    with serving(dsn) as web:
        pages = [web.get("/")[1], web.get(f"/topic?name={XSS}")[1]]
        (msg,) = pushed.browse(XSS)
        pages.append(web.get(f"/message?id={msg.id}")[1])
        pages.append(web.get("/topic?name=jobs&state=discarded")[1])
        for page in pages:
            assert "<script>alert" not in page
            assert "<img" not in page
            assert "<b>boom" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
        assert "&lt;img src=x onerror=alert(2)&gt;" in pages[2]
        assert "&lt;b&gt;boom&lt;/b&gt;" in pages[3]
        _status, headers, _ = web.request("GET", "/")
        assert "script-src 'self'" in headers["content-security-policy"]


def test_a_binary_payload_is_shown_as_hex() -> None:
    shown = preview(b"\x00\x01\xfe\xff", 100)
    assert (shown.kind, shown.text) == ("binary", "00 01 fe ff")
    assert preview(b'{"a": 1}', 100).kind == "json"
    long = preview("é".encode() * 100, 11)
    assert long.cut
    assert long.kind == "text"
    assert long.text == "é" * 5


def test_the_chart_has_a_bar_per_minute_with_the_counts() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, 12, 30, 40, tzinfo=UTC)
    rows = [(datetime(2026, 1, 1, 12, 30, tzinfo=UTC), 3, 1)]
    rows.append((datetime(2026, 1, 1, 12, 30, tzinfo=UTC) - timedelta(minutes=59), 2, 0))
    drawn = chart(rows, now)
    assert len(drawn.bars) == 60
    assert drawn.peak == 4
    assert (drawn.bars[-1].completed, drawn.bars[-1].discarded) == (3, 1)
    assert drawn.bars[0].completed == 2
    assert (drawn.completed, drawn.discarded) == (5, 1)


def test_an_action_needs_the_csrf_token(dsn: str, pushed: pushpop.Client) -> None:
    with serving(dsn) as web:
        _, page = web.get("/topic?name=jobs")
        status, _, _ = web.request("POST", "/actions/pause", {"topic": "jobs", "next": "/"})
        assert status == 403
        status, _, _ = web.request(
            "POST", "/actions/pause", {"topic": "jobs", "csrf": "forged", "next": "/"}
        )
        assert status == 403
        form = {"topic": "jobs", "csrf": csrf_of(page), "next": "/topic?name=jobs"}
        status, _, _ = web.request(
            "POST", "/actions/pause", form, headers={"Origin": "http://evil.example"}
        )
        assert status == 403
        assert not any(s.paused for s in pushed.stats())
        status, headers, _ = web.request("POST", "/actions/pause", form)
        assert status == 303
        assert headers["location"].startswith("/topic?name=jobs&notice=paused")
        assert [s.topic for s in pushed.stats() if s.paused] == ["jobs"]


def test_a_read_only_dashboard_shows_no_buttons_and_refuses_actions(
    dsn: str, pushed: pushpop.Client
) -> None:
    with serving(dsn, read_only=True) as web:
        _, page = web.get("/topic?name=jobs&state=discarded")
        assert "read-only" in page
        assert "/actions/" not in page
        token = web.cookies["pushpop_csrf"]
        status, _, body = web.request(
            "POST", "/actions/purge", {"topic": "jobs", "csrf": token, "next": "/"}
        )
        assert status == 403
        assert "read-only" in body
        assert sum(s.discarded for s in pushed.stats()) == 1


def test_a_token_is_asked_once_and_kept_in_a_cookie(dsn: str, pushed: pushpop.Client) -> None:
    with serving(dsn, token="s3cret") as web:  # noqa: S106 (a test token)
        status, page = web.get("/")
        assert status == 401
        assert "token" in page
        assert "jobs" not in page
        assert web.get("/?token=wrong")[0] == 401
        status, headers, _ = web.request("GET", "/topic?name=jobs&token=s3cret")
        assert status == 303
        assert headers["location"] == "/topic?name=jobs"
        status, page = web.get("/topic?name=jobs")
        assert status == 200
        assert "jobs" in page
        bare = Served(web.url)
        assert bare.get("/", Authorization="Bearer s3cret")[0] == 200
        assert bare.request("POST", "/actions/pause", {"topic": "jobs"})[0] == 401


def test_a_permission_error_is_a_message_not_a_traceback(dsn: str, pushed: pushpop.Client) -> None:
    with (
        roles.made(dsn, {"consumer": ["pushpop_consumer"]}) as logins,
        serving(logins.dsn(dsn, "consumer")) as web,
    ):
        status, page = web.get("/")
        assert status == 200
        assert "jobs" in page
        assert "No throughput chart" not in page  # a consumer sees the chart too
        _, page = web.get("/topic?name=jobs")
        form = {"topic": "jobs", "csrf": csrf_of(page), "next": "/topic?name=jobs"}
        status, headers, _ = web.request("POST", "/actions/purge", form)
        assert status == 303
        assert "failed=purge+failed" in headers["location"]
        status, page = web.get(headers["location"])
        assert "purge failed" in page
        assert "pushpop_admin" in page
        assert "Traceback" not in page
        status, page = web.get("/schedules")
        assert status == 403
        assert "Traceback" not in page
        assert web.get("/workers")[0] == 200


def test_actions_come_back_only_inside_the_dashboard(dsn: str, pushed: pushpop.Client) -> None:
    with serving(dsn, base_path="/queue") as web:
        status, page = web.get("/")
        assert status == 200
        assert 'href="/queue/topic?name=jobs"' in page
        _, page = web.get("/topic?name=jobs")
        for target in ("//evil.example/", "https://evil.example/", "/\\evil"):
            form = {"topic": "jobs", "csrf": csrf_of(page), "next": target}
            status, headers, _ = web.request("POST", "/actions/resume", form)
            assert status == 303
            assert headers["location"].startswith("/queue/?")


def test_the_command_will_not_serve_buttons_beyond_localhost_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUSHPOP_DASHBOARD_TOKEN", raising=False)
    assert cli.main(["dashboard", "--host", "0.0.0.0"]) == 1  # noqa: S104
    err = capsys.readouterr().err
    assert "--token" in err
    assert "--read-only" in err


def test_retry_all_names_the_count_and_cancel_discards(dsn: str, pushed: pushpop.Client) -> None:
    with serving(dsn) as web:
        status, page = web.get("/confirm?action=retry-all&name=jobs")
        assert status == 200
        assert "This retries <b>1 message</b> of topic <b>jobs</b>" in page
        form = {"topic": "jobs", "csrf": csrf_of(page), "next": "/topic?name=jobs"}
        status, headers, _ = web.request("POST", "/actions/retry-all", form)
        assert status == 303
        assert "retrying+1+message+of+jobs" in headers["location"]
        (ready,) = [m for m in pushed.browse("jobs", state="ready") if m.payload == b"dead"]
        form = {"id": str(ready.id), "csrf": form["csrf"], "next": "/"}
        status, headers, _ = web.request("POST", "/actions/cancel", form)
        assert status == 303
        assert "notice=cancelled" in headers["location"]
        found = pushed.find(ready.id)
        assert found is not None
        assert (found.state, found.error) == ("discarded", "cancelled")
