"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, through
Selenium), against a real database with messages in every state and a running worker.

Each page is saved as a screenshot in ``test-artifacts/dashboard/`` (or
``$PUSHPOP_TEST_ARTIFACTS/dashboard/``); the overview also as ``docs/dashboard.png``, the
README's picture, so it never goes stale. Without Chromium these tests skip, with one line
saying why; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from backdating import backdate
from dashboard_server import serving
from waiting import wait_for

import pushpop
from pushpop.dashboard.web import PAGE_SIZE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("PUSHPOP_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
XSS = "<script>alert(1)</script>"

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


FOUND = _browser()
if FOUND is None:
    REASON = "no Chromium: apt-get install chromium chromium-driver to run the browser tests"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{REASON} (CI must run them)", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, with the system's driver (nothing downloaded)."""
    assert FOUND is not None
    chromium, driver = FOUND
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,860")
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()


def shot(browser: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def text(browser: WebDriver, css: str) -> str:
    """The text of the first element matching ``css``, read in one step: a refresh may swap
    the element between finding it and reading it."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;"
    found = browser.execute_script(script, css)
    assert found is not None, f"no element {css}"
    return str(found)


def until(browser: WebDriver, css: str, timeout: float = 10) -> Any:
    """The first element matching ``css``, once there is one."""
    return wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, css), timeout, f"an element {css}"
    )[0]


def still(browser: WebDriver, url: str) -> None:
    """Opens ``url`` with the auto-refresh off for this tab (as its checkbox does), so no
    refresh swaps an element between finding and clicking it; test_it_refreshes_in_place
    tests the refresh."""
    browser.get(url)
    browser.execute_script(
        "sessionStorage.setItem('pushpop-refresh', 'off');"
        "document.getElementById('auto-refresh').checked = false;"
    )


def no_alert(browser: WebDriver) -> bool:
    try:
        browser.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


@pytest.fixture
def every_state(dsn: str) -> Iterator[pushpop.Client]:
    """Topic ``jobs`` with messages in every state (30 ready: two pages), an HTML-looking
    topic and payload, a schedule."""
    with pushpop.Client(dsn) as client:
        client.push_many("jobs", [f'{{"n": {i}}}'.encode() for i in range(30)])
        client.push("jobs", b"later", delay=3600)
        for payload, outcome in ((b"done", "complete"), (b"broke", "discard"), (b"busy", "")):
            client.push("jobs", payload, max_attempts=1, priority=10)
            msg = client.pop("jobs", lease=3600)
            assert msg is not None
            assert msg.payload == payload
            if outcome == "complete":
                msg.complete()
            elif outcome == "discard":
                msg.discard("ValueError: broke")
        client.push(XSS, b"<img src=x onerror=alert(2)>", headers={"trace": "<b>x</b>"})
        client.schedule("nightly-report", "reports", b"{}", cron="0 3 * * *")
        yield client


@pytest.fixture
def busy(dsn: str, every_state: pushpop.Client) -> pushpop.Client:
    """Two more topics, one with an hour of finished messages behind it: the README's picture."""
    client = every_state
    client.push_many("emails", [b'{"to": "ada@example.com"}'] * 12)
    client.push_many("webhooks", [b'{"event": "paid"}'] * 3)
    client.pause("webhooks")
    client.push_many("emails", [b'{"to": "bob@example.com"}'] * 94)
    done = client.pop_many("emails", 94)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i, msg in enumerate(done):
            if i % 25 == 7:
                msg.discard("SMTPServerDisconnected: Connection unexpectedly closed")
            else:
                msg.complete()
            backdate(conn, msg.id, f"{(i * 37) % 58 + (i % 3)} minutes")
    return client


def test_counts_paging_a_message_and_html_shown_as_text(
    dsn: str, busy: pushpop.Client, browser: WebDriver
) -> None:
    with serving(dsn) as web:
        still(browser, web.url)
        row = until(browser, 'tr[data-topic="jobs"]')
        cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td")]
        # ready, scheduled, pending, blocked, dead, done
        assert cells[1:7] == ["30", "1", "1", "0", "1", "1"]
        assert "91 completed, 5 failed" in text(browser, ".chart figcaption")
        xss = browser.find_element(By.CSS_SELECTOR, "tbody tr:first-child td a")
        assert xss.text == XSS
        assert no_alert(browser)
        shot(browser, "overview")
        browser.save_screenshot(str(ROOT / "docs" / "dashboard.png"))

        row.find_element(By.LINK_TEXT, "jobs").click()
        until(browser, "#next-page")
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")) == PAGE_SIZE
        first_page = {
            r.get_attribute("data-id")
            for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")
        }
        shot(browser, "topic")
        browser.find_element(By.ID, "next-page").click()
        until(browser, "#first-page")
        second = browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")
        assert len(second) == 30 - PAGE_SIZE
        assert not first_page & {r.get_attribute("data-id") for r in second}
        assert not browser.find_elements(By.ID, "next-page")

        browser.find_element(By.CSS_SELECTOR, '.tabs a[data-state="discarded"]').click()
        until(browser, '.tabs a.current[data-state="discarded"]')
        assert "ValueError: broke" in text(browser, "td.error")
        browser.find_element(By.CSS_SELECTOR, "td.id a").click()
        assert until(browser, "#state").text == "discarded"
        assert text(browser, "#payload") == "broke"
        shot(browser, "message")

        browser.get(web.url + f"topic?name={XSS}")
        assert text(browser, "h1 .topic-name") == XSS
        assert text(browser, "td.payload code") == "<img src=x onerror=alert(2)>"
        assert text(browser, "td.headers") == "trace=<b>x</b>"
        assert no_alert(browser)
        browser.find_element(By.CSS_SELECTOR, "a.button.danger").click()
        confirm = until(browser, "#confirm-text").text
        assert XSS in confirm
        assert "1 message of" in confirm
        shot(browser, "confirm-purge")
        browser.find_element(By.ID, "confirm").click()
        assert "purged 1 message of " + XSS in until(browser, ".notice").text

        browser.get(web.url + "schedules")
        assert "nightly-report" in until(browser, "table.schedules tbody").text
        shot(browser, "schedules")

        browser.get(web.url + "message?id=not-an-id")
        assert "not a message id" in until(browser, "#error").text


def test_it_refreshes_in_place(dsn: str, every_state: pushpop.Client, browser: WebDriver) -> None:
    with serving(dsn) as web:
        browser.get(web.url + "topic?name=jobs&state=ready")
        until(browser, "#next-page")
        browser.execute_script("window.scrollTo(0, 400); window.stayed = true;")
        every_state.push_many("jobs", [b"more"] * 5)
        wait_for(
            lambda: "35" in text(browser, '.tabs a[data-state="ready"]'), 15, "the count to refresh"
        )
        assert browser.execute_script("return window.stayed === true && window.scrollY >= 300;")


class Running:
    """A worker on ``topic`` in a thread, recording the payloads it handled."""

    def __init__(self, client: pushpop.Client, topic: str) -> None:
        self.handled: list[bytes] = []
        self.worker = pushpop.Worker(client, topic, self.handle, poll_interval=0.1)
        self.thread = threading.Thread(target=self.worker.run, name="dashboard-test-worker")
        self.thread.start()

    def handle(self, msg: pushpop.Message) -> None:
        self.handled.append(msg.payload)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def worker(dsn: str) -> Iterator[Callable[[str], Running]]:
    started: list[Running] = []
    with pushpop.Client(dsn, max_size=4) as client:

        def start(topic: str) -> Running:
            started.append(Running(client, topic))
            return started[-1]

        yield start
        for running in started:
            running.stop()


def test_pause_resume_and_retry_with_a_running_worker(
    dsn: str, every_state: pushpop.Client, browser: WebDriver, worker: Callable[[str], Running]
) -> None:
    client = every_state
    client.push("work", b"dead one", max_attempts=1)
    dead = client.pop("work")
    assert dead is not None
    dead.discard("gave up")
    running = worker("work")
    with serving(dsn) as web:
        still(browser, web.url + "topic?name=work")
        until(browser, "#running")
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
        assert "paused work" in until(browser, ".notice").text
        until(browser, "#paused")
        paused_id = client.push("work", b"while paused")
        time.sleep(1.5)  # fifteen poll intervals: a worker that could pop would have
        assert b"while paused" not in running.handled
        assert client.find(paused_id).state == "ready"  # type: ignore[union-attr]
        shot(browser, "topic-paused")
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="resume"]').click()
        until(browser, "#running")
        wait_for(lambda: b"while paused" in running.handled, 10, "the worker to pop again")

        browser.get(web.url + "topic?name=work&state=discarded")
        browser.find_element(By.CSS_SELECTOR, 'button[data-action="retry"]').click()
        assert f"retrying {dead.id}" in until(browser, ".notice").text
        wait_for(
            lambda: client.find(dead.id).state == "completed",  # type: ignore[union-attr]
            10,
            "the retried message to be completed by the worker",
        )
        assert b"dead one" in running.handled

        browser.get(web.url + "workers")
        row = until(browser, "tr[data-worker]")
        assert "work" in row.text
        wait_for(lambda: running.worker.is_leader, 10, "the worker to lead maintenance")
        browser.refresh()
        assert until(browser, ".leader").text == "leads"
        shot(browser, "workers")


def test_an_action_is_refused_in_read_only_mode(
    dsn: str, every_state: pushpop.Client, browser: WebDriver
) -> None:
    with serving(dsn, read_only=True) as web:
        still(browser, web.url + "topic?name=jobs&state=discarded")
        until(browser, ".badge.ro")
        assert not browser.find_elements(By.CSS_SELECTOR, "form[method=post]")
        # A hand-made form, as a curious operator or another page would send it.
        browser.execute_script(
            """const f = document.createElement('form'); f.method = 'post';
            f.action = arguments[0] + 'actions/purge';
            const t = document.createElement('input'); t.name = 'topic'; t.value = 'jobs';
            f.appendChild(t); document.body.appendChild(f); f.submit();""",
            web.url,
        )
        assert "read-only" in until(browser, "#error").text
        shot(browser, "read-only-refused")
    assert sum(s.ready for s in client_stats(dsn)) == 31


def client_stats(dsn: str) -> list[pushpop.TopicStats]:
    with pushpop.Client(dsn) as client:
        return client.stats()
