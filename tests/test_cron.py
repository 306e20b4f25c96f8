"""pushpop's cron, written in PL/pgSQL, agrees with cronsim, a maintained Python library.

Many expressions (generated, and a hand-picked list of the tricky ones), from many instants
(around each daylight-saving change of several time zones, and scattered over years), each
followed for several ticks: ``pushpop.cron_next`` must name the instant cronsim names.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cronsim import CronSim, CronSimError
from psycopg import errors as pg_errors

Conn = psycopg.Connection[tuple[Any, ...]]

ZONES = [
    "UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata",
    "Europe/London", "America/Sao_Paulo", "Pacific/Auckland",
]  # fmt: skip
# Daylight-saving changes (UTC) of the zones above, in 2026 and 2027.
CHANGES = [
    "2026-03-08T07:00", "2026-11-01T06:00", "2026-03-29T01:00", "2026-10-25T01:00",
    "2026-04-04T16:00", "2026-10-03T16:00", "2026-04-04T14:00", "2026-09-26T14:00",
    "2027-03-14T07:00", "2027-11-07T06:00", "2027-03-28T01:00", "2027-10-31T01:00",
]  # fmt: skip
HAND_PICKED = [
    "* * * * *", "0 * * * *", "*/15 * * * *", "30 1 * * *", "30 2 * * *", "0 2 * * *",
    "59 1 * * *", "0 3 * * *", "15 2,3 * * *", "*/7 2 * * *", "0 0 * * *", "0 0 1 * *",
    "0 0 29 2 *", "0 0 31 * *", "0 12 * * MON-FRI", "0 9 1,15 * MON", "0 9 * * 7",
    "0 9 * * 0", "5 4 * * SUN", "0 0 13 * FRI", "0 0 */5 * *", "*/20 9-17 * * 1-5",
    "0 0 1 JAN,JUL *", "0-10/3 * * * *", "10/15 * * * *", "0 */6 * * *", "0 1-3/2 * * *",
    "0 22 * * 1-5", "1 1 1 1 *", "0 0 * * 6,0", "*/1 1-2 * * *", "0 0 * * */2",
    "45 23 * * 6", "0 0 L * *".replace("L", "28-31"), "0 5 * DEC *", "30 2 8 3 *",
]  # fmt: skip


def random_field(rng: random.Random, low: int, high: int, names: list[str] | None) -> str:
    """One field as people write them: *, a value, a range, a step, a list, a name."""
    kind = rng.choice(["*", "*", "value", "range", "step", "star_step", "list", "name"])

    def value() -> int:
        return rng.randint(low, high)

    if kind == "*":
        return "*"
    if kind == "value":
        return str(value())
    if kind == "range":
        a = value()
        return f"{a}-{rng.randint(a, high)}"
    if kind == "step":
        a = value()
        return (
            f"{a}-{rng.randint(a, high)}/{rng.randint(1, 5)}"
            if rng.random() < 0.5
            else f"{a}/{rng.randint(1, 10)}"
        )
    if kind == "star_step":
        return f"*/{rng.randint(1, 12)}"
    if kind == "list":
        return ",".join(str(value()) for _ in range(rng.randint(2, 4)))
    if names:
        return rng.choice(names)
    return str(value())


def random_expressions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    found: list[str] = []
    while len(found) < n:
        expr = " ".join([
            random_field(rng, 0, 59, None), random_field(rng, 0, 23, None),
            random_field(rng, 1, 28, None) if rng.random() < 0.8 else "*",
            random_field(rng, 1, 12, months) if rng.random() < 0.4 else "*",
            random_field(rng, 0, 7, days) if rng.random() < 0.4 else "*",
        ])  # fmt: skip
        try:
            CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
        except CronSimError:
            continue
        found.append(expr)
    return found


def instants(seed: int) -> list[datetime]:
    """Minutes around every change (before, inside, after), and instants over two years."""
    rng = random.Random(seed)
    near = [
        datetime.fromisoformat(c).replace(tzinfo=UTC) + timedelta(minutes=m)
        for c in CHANGES
        for m in (-130, -61, -60, -31, -1, 0, 1, 29, 59, 61, 90)
    ]
    spread = [
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        for _ in range(40)
    ]
    return near + spread


def cronsim_next(expr: str, after: datetime, zone: str) -> datetime | None:
    """cronsim's next match after ``after``; None where it has none."""
    try:
        found = next(CronSim(expr, after.astimezone(ZoneInfo(zone))))
    except StopIteration:
        return None
    # In UTC: Python says a time inside a repeated hour equals no time of another zone.
    return found.astimezone(UTC)


def sql_next(conn: Conn, cases: list[tuple[str, datetime, str]]) -> list[datetime | None]:
    rows = conn.execute(
        "SELECT pushpop.cron_next(c.e, c.a, c.z) FROM unnest(%s::text[], %s::timestamptz[],"
        " %s::text[]) WITH ORDINALITY AS c(e, a, z, n) ORDER BY c.n",
        [[c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases]],
    ).fetchall()
    return [row[0] for row in rows]


def follow(conn: Conn, cases: list[tuple[str, datetime, str]], ticks: int) -> list[str]:
    """Follows every case for ``ticks`` ticks on both sides; the disagreements, described."""
    problems: list[str] = []
    for _ in range(ticks):
        ours = sql_next(conn, cases)
        following = []
        for (expr, after, zone), got in zip(cases, ours, strict=True):
            expected = cronsim_next(expr, after, zone)
            if expected is not None and expected <= after:
                # cronsim, asked from inside a repeated hour after the first run of a set
                # time, names that first run again; pushpop never goes back (its docs say so).
                continue
            if got != expected:
                problems.append(f"{expr!r} in {zone} after {after.isoformat()}: "
                                f"pushpop {got}, cronsim {expected}")  # fmt: skip
            elif expected is not None:
                following.append((expr, expected, zone))
        cases = following
    return problems


def test_hand_picked_expressions_agree_with_cronsim_around_every_dst_change(conn: Conn) -> None:
    cases = [(e, a, z) for e in HAND_PICKED for z in ZONES for a in instants(1)[::3]]
    assert follow(conn, cases, ticks=4) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_expressions_agree_with_cronsim(conn: Conn, seed: int) -> None:
    rng = random.Random(seed)
    points = instants(seed)
    cases = [
        (e, rng.choice(points), rng.choice(ZONES))
        for e in random_expressions(150, seed)
        for _ in range(12)
    ]
    assert follow(conn, cases, ticks=3) == []


@pytest.mark.parametrize(
    "expr",
    [
        "61 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *", "* * * * 8",
        "*/0 * * * *", "5-1 * * * *", "* * * *", "* * * * * * *", "", "a * * * *",
        "1,,2 * * * *", "-1 * * * *", "* * 30 2 *", "1/x * * * *", "MON * * * *",
    ],
)  # fmt: skip
def test_expressions_cronsim_refuses_are_refused_with_22023_naming_cron(
    conn: Conn, expr: str
) -> None:
    with pytest.raises(CronSimError):
        CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(pg_errors.InvalidParameterValue, match="cron"):
        conn.execute("SELECT pushpop.cron_parse(%s)", [expr])
