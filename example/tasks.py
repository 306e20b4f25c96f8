"""Handlers for ``pushpop worker``, as the README's tour runs them from the repository's root:

    pushpop worker example.tasks:send_email --topic emails

A handler takes one message. Returning completes it; raising has it retried later with
backoff, and discarded after its last attempt. Here nothing is really sent: the handlers
print what they would do.
"""

from __future__ import annotations

import asyncio

import pushpop


def say(line: str) -> None:
    """Prints one line in one write: handlers run in several threads at once."""
    print(line + "\n", end="", flush=True)


def send_email(msg: pushpop.Message) -> None:
    """Sends the email a message describes: JSON with ``to`` and, optionally, ``subject``."""
    email = msg.json()
    if not isinstance(email, dict) or "to" not in email:
        raise ValueError(f"not an email: {email!r}")  # retried, then discarded
    say(f"sending {email.get('subject', '(no subject)')!r} to {email['to']}")


async def send_welcome(msg: pushpop.AsyncMessage) -> None:
    """The asyncio twin, for the FastAPI example: ``pushpop worker`` runs it on asyncio."""
    await asyncio.sleep(0)  # an async mail client would be awaited here
    say(f"sending 'Welcome!' to {msg.json()['email']}")
