"""The application code that example/test_signup.py tests: a sign-up that queues emails.

``sign_up`` stands for a web view: it pushes a welcome email now and a reminder in three days.
The emails are sent by ``example.tasks:send_email`` under ``pushpop worker``.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pushpop

EMAILS = "emails"
REMIND_AFTER = timedelta(days=3)


def sign_up(client: pushpop.Client, email: str) -> list[UUID]:
    """Queues the welcome email and the reminder of a new user; signing up twice queues
    nothing more while the first ones wait (their dedup keys)."""
    welcome = client.new_message(
        EMAILS, json={"to": email, "subject": "Welcome!"}, dedup_key=f"welcome:{email}"
    )
    reminder = client.new_message(
        EMAILS, json={"to": email, "subject": "Getting started"}, dedup_key=f"remind:{email}"
    )
    return [welcome.push(), reminder.push(delay=REMIND_AFTER)]
