"""Argument checks shared by every client: bad input fails here, before anything is sent."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from .errors import InvalidArgument, InvalidType

INT4_MAX = 2**31 - 1
MAX_DURATION = timedelta(days=365 * 1000)

Duration = float | timedelta
"""Seconds (int or float) or a timedelta."""


def topic(value: Any, name: str = "topic") -> str:
    """A topic is a str of 1 to 255 characters (PostgreSQL text cannot hold NUL)."""
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= 255:
        raise InvalidArgument(f"{name} must be 1 to 255 characters, got {len(value)}")
    _plain_text(value, name)
    return value


def _plain_text(value: str, name: str) -> None:
    """PostgreSQL text holds neither NUL characters nor lone surrogates."""
    if "\x00" in value:
        raise InvalidArgument(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problem = f"{name} must be valid Unicode text (it holds a lone surrogate)"
        raise InvalidArgument(problem) from None


def payload(value: Any, name: str = "payload", *, takes_json: bool = True) -> bytes:
    """Payloads are bytes; text must be encoded by the caller, who knows its encoding.
    ``takes_json``: the call also takes ``json=obj``, which the hint then suggests."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        for_json = "json=obj" if takes_json else "json.dumps(obj).encode()"
        raise InvalidType(
            f"{name} must be bytes, got str: pass {name}.encode() for text, or {for_json} for JSON"
        )
    raise InvalidType(f"{name} must be bytes, bytearray or memoryview, got {type(value).__name__}")


def json_payload(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``, the payload ``new_message(..., json=value)`` stores."""
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except TypeError as exc:
        raise InvalidType(f"json= must be JSON-serializable: {exc}") from exc
    except ValueError as exc:  # circular references, NaN and infinities
        raise InvalidArgument(f"json= cannot be encoded: {exc}") from exc


def integer(value: Any, name: str, *, low: int, high: int = INT4_MAX) -> int:
    """A plain int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


def flag(value: Any, name: str) -> bool:
    """A bool, and nothing that merely converts to one."""
    if not isinstance(value, bool):
        raise InvalidType(f"{name} must be True or False, got {type(value).__name__}")
    return value


def duration(value: Any, name: str, *, positive: bool = False) -> timedelta:
    """Seconds or a timedelta, never negative (and above zero where positive is asked)."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidArgument(f"{name} must be a finite number of seconds, got {value}")
        if abs(value) > MAX_DURATION.total_seconds():
            raise InvalidArgument(f"{name} must be at most {MAX_DURATION.days} days, got {value}s")
        result = timedelta(seconds=value)
    else:
        raise InvalidType(
            f"{name} must be seconds (int or float) or a timedelta, got {type(value).__name__}"
        )
    if result < timedelta(0) or (positive and result == timedelta(0)):
        wanted = "positive" if positive else "zero or positive"
        raise InvalidArgument(f"{name} must be {wanted}, got {value!r}")
    if result > MAX_DURATION:
        raise InvalidArgument(f"{name} must be at most {MAX_DURATION.days} days, got {value!r}")
    return result


def message_id(value: Any, name: str = "id") -> UUID:
    """A UUID, or its text form."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise InvalidArgument(f"{name} must be a UUID, got {value!r}") from None
    raise InvalidType(f"{name} must be a UUID or str, got {type(value).__name__}")


def optional_text(value: Any, name: str, *, allow_empty: bool = False) -> str | None:
    """None, or a str without NUL characters (and not empty, unless allowed)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a str or None, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidArgument(f"{name} must not be empty (use None for no {name})")
    _plain_text(value, name)
    return value


def ordering_key(value: Any, name: str = "ordering_key") -> str | None:
    """None (no key), or a str of 1 to 255 characters, like a topic."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a str or None, got {type(value).__name__}")
    return topic(value, name)


def ordering_keys(value: Any, count: int) -> list[str | None] | None:
    """None, or one key (or None) per payload of a push_many."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidType(
            f"ordering_keys must be a sequence of str or None, one per payload, got "
            f"{type(value).__name__}"
        )
    if len(value) != count:
        raise InvalidArgument(
            f"ordering_keys must be as long as payloads ({count}), got {len(value)}"
        )
    return [ordering_key(k, f"ordering_keys[{i}]") for i, k in enumerate(value)]


def headers(value: Any) -> dict[str, str]:
    """Headers are a dict of str to str (a JSON object of strings in the database)."""
    if not isinstance(value, dict):
        raise InvalidType(f"headers must be a dict of str to str, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidType(
                f"headers must be a dict of str to str: {key!r}: {item!r} is not a pair of str"
            )
        _plain_text(key, "a header name")
        _plain_text(item, f"header {key!r}")
    return dict(value)


def optional_duration(value: Any, name: str) -> timedelta | None:
    """None, or a duration above zero."""
    return None if value is None else duration(value, name, positive=True)
