"""What a worker does with a message once its handler has run: the retry policy and outcomes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import checks
from .constants import RETRY_BASE, RETRY_CAP, RETRY_JITTER
from .errors import InvalidArgument, InvalidType, LeaseLost
from .message import MessageBase

Message = MessageBase[Any]


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, at most ``cap``, ±``jitter``.

    The default retries after about 1 s, 2 s, 4 s ... up to an hour between attempts.
    """

    base: checks.Duration = RETRY_BASE
    cap: checks.Duration = RETRY_CAP
    jitter: float = RETRY_JITTER

    def __post_init__(self) -> None:
        base = checks.duration(self.base, "retry base", positive=True)
        cap = checks.duration(self.cap, "retry cap", positive=True)
        if cap < base:
            raise InvalidArgument(f"retry cap ({cap}) must not be below base ({base})")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)):
            raise InvalidType(f"retry jitter must be a float, got {type(self.jitter).__name__}")
        if not 0 <= self.jitter < 1:
            raise InvalidArgument(f"retry jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int) -> timedelta:
        """How long to wait before delivering again a message whose ``attempt``-th try failed."""
        base = checks.duration(self.base, "base").total_seconds()
        cap = checks.duration(self.cap, "cap").total_seconds()
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 s is past any cap
        seconds = min(cap, base * 2.0**exponent)
        return timedelta(seconds=seconds * random.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(frozen=True)
class Outcome:
    """What to do with a message: ``complete``, ``defer`` (after ``delay``) or ``discard``."""

    action: str
    delay: timedelta = timedelta(0)
    reason: str | None = None


COMPLETE = Outcome("complete")


def describe(error: BaseException) -> str:
    """The text kept in a failed message's ``error``: the exception's type and message."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:2000]


def after_failure(msg: Message, error: BaseException, retry: Retry) -> Outcome:
    """A failed attempt is retried with backoff, or discarded once ``max_attempts`` are used."""
    reason = describe(error)
    if msg.attempts >= msg.max_attempts:
        return Outcome("discard", reason=f"{reason} (gave up after {msg.attempts} attempts)")
    return Outcome("defer", retry.delay(msg.attempts), reason)


def decide(msg: Message, error: BaseException | None, retry: Retry) -> tuple[Outcome | None, str]:
    """After a handler ran: the outcome to apply (None if the handler acknowledged the message
    itself) and the words the log line uses for it."""
    if msg.state != "pending":
        label = f"{msg.state} by the handler"
        if error is not None:
            label += f", which then raised {describe(error)}"
        return None, label
    if error is None:
        return COMPLETE, "completed"
    outcome = after_failure(msg, error, retry)
    if outcome.action == "defer":
        return outcome, f"failed, retry in {outcome.delay.total_seconds():.1f}s: {outcome.reason}"
    return outcome, f"failed, discarded: {outcome.reason}"


def failed_acknowledgement(outcome: Outcome, error: BaseException) -> str:
    """The log words for an outcome the database did not take."""
    if isinstance(error, LeaseLost):
        return f"lease lost before it could be {outcome.action}d (it was redelivered)"
    return f"could not {outcome.action} ({error}); it returns when its lease expires"
