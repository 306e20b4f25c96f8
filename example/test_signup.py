"""Testing an application that uses pushpop, with the pytest plugin that comes with it.

Nothing to set up: installing pushpop gives pytest the fixtures ``pushpop_client`` and
``pushpop_async_client``, each on a migrated database of the test's own, on the server that
``PUSHPOP_TEST_DSN`` names, else the local one, else an embedded one
(``pip install 'pushpop[testing]'``). The helpers run pushpop's real SQL.

    pytest example/test_signup.py
"""

from __future__ import annotations

import asyncio

import pytest
import signup
import tasks

import pushpop
from pushpop.testing import adrain, assert_pushed, drain, fast_forward, pushed


def test_signing_up_queues_a_welcome_email(pushpop_client: pushpop.Client) -> None:
    signup.sign_up(pushpop_client, "ada@example.com")

    assert_pushed(pushpop_client, "emails", json={"to": "ada@example.com", "subject": "Welcome!"})


def test_signing_up_twice_queues_each_email_once(pushpop_client: pushpop.Client) -> None:
    signup.sign_up(pushpop_client, "ada@example.com")
    signup.sign_up(pushpop_client, "ada@example.com")

    assert [m.json()["subject"] for m in pushed(pushpop_client, "emails")] == [
        "Welcome!",
        "Getting started",
    ]


def test_the_email_handler_sends_the_welcome_now_and_the_reminder_three_days_later(
    pushpop_client: pushpop.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    signup.sign_up(pushpop_client, "ada@example.com")

    now = drain(pushpop_client, "emails", tasks.send_email)
    assert [d.outcome for d in now] == ["completed"]
    assert "sending 'Welcome!' to ada@example.com" in capsys.readouterr().out

    fast_forward(pushpop_client, "emails", signup.REMIND_AFTER)
    later = drain(pushpop_client, "emails", tasks.send_email)
    assert [(d.outcome, d.message.json()["subject"]) for d in later] == [
        ("completed", "Getting started")
    ]
    assert {m.state for m in pushed(pushpop_client, "emails")} == {"completed"}


def test_a_message_the_handler_cannot_read_is_retried_then_discarded(
    pushpop_client: pushpop.Client,
) -> None:
    pushpop_client.push("emails", b"not json", max_attempts=2)

    first = drain(pushpop_client, "emails", tasks.send_email)
    assert [d.outcome for d in first] == ["deferred"]
    assert isinstance(first[0].error, ValueError)

    fast_forward(pushpop_client, "emails")  # the retry is due now, without waiting for it
    second = drain(pushpop_client, "emails", tasks.send_email)
    assert [d.outcome for d in second] == ["discarded"]
    [gone] = pushed(pushpop_client, "emails")
    assert (gone.state, gone.attempts) == ("discarded", 2)


def test_the_async_handler_completes_the_welcome(
    pushpop_async_client: pushpop.AsyncClient,
) -> None:
    async def scenario() -> list[str]:
        async with pushpop_async_client as client:
            await client.push("welcome-emails", json={"email": "ada@example.com"})
            return [d.outcome for d in await adrain(client, "welcome-emails", tasks.send_welcome)]

    assert asyncio.run(scenario()) == ["completed"]
