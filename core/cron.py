"""Pure cron arithmetic: when a 5-field expression in an IANA timezone fires, and what a due sweep fires.

No I/O and no clock: callers pass ``after``/``now`` (arq's ``cron.py`` ``next_cron`` is the model). croniter only
walks naive wall-clock times; turning them into instants is done here, with one rule for daylight saving time:

* a wall time the clocks skip (spring forward, 02:30 in Europe/Berlin on the last Sunday of March) fires once,
  at the instant the clocks jump (03:00 CEST), as cron and croniter do;
* a wall time the clocks show twice (fall back, 02:30 on the last Sunday of October) fires once, at its first
  occurrence (CEST). So a daily job runs exactly once a day, every day; a sub-hourly one pauses during the
  repeated hour instead of running it twice.

Instants are nondecreasing in wall time under that rule, which ``next_fire_after`` and ``latest_tick_between``
rely on.

A range of one value (``5-5``, ``sun-sun``) means that value, as in cron; croniter 5 and later widen it to the whole
field (``5-5 * * * *`` fires every minute), so ``check_cron`` rewrites it as the value before croniter sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

#: Fields of an expression: minute, hour, day of month, month, day of week.
CRON_FIELDS = 5
#: A "skip" schedule still fires a tick at most this late (a leader fail-over takes seconds); older ones are dropped.
SKIP_GRACE_S = 60.0
#: Files in the tz database that are not zones but stand for whatever the host is set to.
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "posixrules"})
_SECOND = timedelta(seconds=1)
#: Wall-clock steps one lookup may take: a repeated hour holds at most 60 ticks that already fired.
_MAX_STEPS = 10_000
#: croniter's random (``R``) and hashed (``H``) fields would give different times on every call; a lone R or H,
#: not one inside a day or month name (``fri``, ``thu``, ``mar``).
_NON_DETERMINISTIC = re.compile(r"(?<![a-z])[rh](?![a-z])", re.IGNORECASE)
#: One range item of a field as croniter reads it: ``low-high``, then a ``/step`` or (day of week) a ``#nth``.
_RANGE = re.compile(r"^(?P<low>[^-/#]+)-(?P<high>[^-/#]+)(?:/(?P<step>\d+)|(?P<nth>#\d+))?$")
#: Positions of the fields whose values may be spelled as names or ``L``.
_DAY_FIELD, _MONTH_FIELD, _WEEKDAY_FIELD = 2, 3, 4
#: The names croniter accepts in the month and day-of-week fields, and the numbers they stand for.
_NAMES: dict[int, dict[str, int]] = {
    _MONTH_FIELD: {
        name: number for number, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)
    },
    _WEEKDAY_FIELD: {name: number for number, name in enumerate("sun mon tue wed thu fri sat".split())},
}


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``Europe/Berlin``, ``UTC``).

    Raises:
      ValueError: no such timezone.
    """
    problem = f"unknown timezone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
    if name in _HOST_DEPENDENT_ZONES:
        raise ValueError(problem)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # a tzdata directory name ("Europe") raises OSError
        raise ValueError(problem) from None


@lru_cache(maxsize=1024)
def check_cron(expression: str) -> str:
    """The expression as croniter must be given it, if it is a 5-field cron expression that fires: its fields
    separated by single spaces, and each range of one value (``5-5``) written as that value.

    Store and fire this text, not the one written: croniter 7 reads ``5-5 * * * *`` as every minute.

    Raises:
      ValueError: it has another number of fields, a field croniter refuses, random/hashed fields, a day-of-week
        range ``7-0``, or it never fires (``0 0 30 2 *``); the message names the problem as written.
    """
    fields = expression.split()
    if len(fields) != CRON_FIELDS:
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} field(s); "
            "give 5: minute, hour, day of month, month, day of week"
        )
    written = " ".join(fields)
    if _NON_DETERMINISTIC.search(written):
        raise ValueError(f"cron expression {written!r}: random (R) and hashed (H) fields are not supported")
    normalized = " ".join(_one_value_ranges_as_values(field, index, written) for index, field in enumerate(fields))
    try:
        croniter(normalized, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {written!r} never fires") from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {written!r}: {exc}") from None
    return normalized


def _one_value_ranges_as_values(field: str, index: int, expression: str) -> str:
    """``field`` with each range of one value (``5-5``, ``5-5/2``, ``jun-6``, ``sun-sun#2``) written as that value.

    croniter 5 and later read such a range as the whole field, ``*``; cron reads it as its one value, whatever the
    step. Items it cannot read as numbers or names are left for croniter to refuse.

    Raises:
      ValueError: a day-of-week range from Sunday 7 back to Sunday 0 (``7-0``): the week or one day, it is unclear.
    """
    items = field.split(",")
    for position, item in enumerate(items):
        match = _RANGE.match(item)
        if match is None or match["step"] == "0" or (match["nth"] and index != _WEEKDAY_FIELD):
            continue
        low = _field_value(match["low"], index, is_high=False)
        high = _field_value(match["high"], index, is_high=True)
        if low is None or high is None:
            continue
        if index == _WEEKDAY_FIELD and low == 7 and high == 0:
            raise ValueError(
                f"cron expression {expression!r}: day-of-week range {item!r} runs from Sunday back to Sunday; "
                "write 0 for Sundays or * for every day"
            )
        if low == high:
            items[position] = match["low"] + (match["nth"] or "")
    return ",".join(items)


def _field_value(text: str, index: int, *, is_high: bool) -> int | None:
    """The number a range end stands for in field ``index`` as croniter reads it, or None if it is not one."""
    lowered = text.lower()
    if lowered.isascii() and lowered.isdigit():
        return int(lowered)
    if index == _DAY_FIELD and is_high and lowered == "l":
        return 31  # croniter reads "28-L" as 28-31: a month's days past its last never match
    return _NAMES.get(index, {}).get(lowered)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a matching naive wall time fires at, in UTC, under the DST rule of this module."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # it exists; fold=0 is its first occurrence when it occurs twice
    # Skipped by a jump forward: fold=1 reads it in the later offset, which lands before the jump; fold=0 in the
    # earlier one, after it. Bisect for the jump itself, in whole seconds (wall times and offsets are whole seconds).
    before, after = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first
    later_offset = after.astimezone(zone).utcoffset()
    while after - before > _SECOND:
        middle = before + _SECOND * ((after - before) // _SECOND // 2)
        if middle.astimezone(zone).utcoffset() == later_offset:
            after = middle
        else:
            before = middle
    return after


def next_fire_times(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` instants (aware, UTC) strictly after ``after`` at which the schedule fires.

    Raises:
      ValueError: ``after`` is naive, or the expression or timezone is invalid.
    """
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = parse_timezone(tz)
    # Start from after's wall time: every wall time before it fires no later than after (monotonicity), so no
    # tick is missed; the few behind it (the repeated hour's first pass) are stepped over below.
    iterator = croniter(check_cron(cron), after.astimezone(zone).replace(tzinfo=None))
    times: list[datetime] = []
    for _ in range(_MAX_STEPS):
        if len(times) == count:
            return times
        instant = _instant(iterator.get_next(datetime), zone)
        if instant > after and (not times or instant > times[-1]):
            times.append(instant)
    raise RuntimeError(f"no fire time of {cron!r} in {tz} found after {after.isoformat()}")


def next_fire_after(cron: str, tz: str, after: datetime) -> datetime:
    """The first instant (aware, UTC) strictly after ``after`` at which the schedule fires.

    Raises:
      ValueError: see ``next_fire_times``.
    """
    return next_fire_times(cron, tz, after, 1)[0]


def latest_tick_between(cron: str, tz: str, start: datetime, end: datetime) -> datetime | None:
    """The latest fire time in ``(start, end]``, or None if there is none.

    A bisection on ``next_fire_after``, so a schedule that was down for a month costs some 30 lookups, not one
    per missed minute.
    """
    first = next_fire_after(cron, tz, start)
    if first > end:
        return None
    low, high = first, end  # next_fire_after(low) <= end < next_fire_after(high)
    if next_fire_after(cron, tz, low) > end:
        return first
    while high - low >= _SECOND:  # then (low, high] holds one whole second at most: the latest tick
        middle = low + (high - low) / 2
        if next_fire_after(cron, tz, middle) <= end:
            low = middle
        else:
            high = middle
    return next_fire_after(cron, tz, low)


@dataclass(frozen=True)
class Firing:
    """What one sweep does with a due schedule."""

    #: The tick to submit a job for; None when a "skip" schedule's latest due tick is too late to run.
    tick: datetime | None
    #: The schedule's new ``next_fire_at``: its first tick after now.
    next_fire_at: datetime


def plan_firing(
    cron: str, tz: str, due_at: datetime, now: datetime, *, catch_up: bool, grace_s: float = SKIP_GRACE_S
) -> Firing:
    """At most one firing for a schedule whose ``next_fire_at`` (``due_at``) has come.

    The due ticks are ``due_at`` and every tick after it up to ``now``. Both policies fire at most once per sweep,
    for the latest due tick, and move ``next_fire_at`` to the first tick after ``now``:

    * ``catch_up=False`` ("skip"): only if that tick is at most ``grace_s`` old. A scheduler that was down
      longer drops the missed ticks; one that is merely slow (a leader fail-over) still fires.
    * ``catch_up=True`` ("run_once"): whatever its age, so missed ticks are made up for by exactly one run.

    Raises:
      ValueError: ``due_at`` is after ``now``, or see ``next_fire_times``.
    """
    if due_at > now:
        raise ValueError("the schedule is not due yet")
    latest = latest_tick_between(cron, tz, due_at, now) or due_at
    on_time = (now - latest).total_seconds() <= grace_s
    return Firing(tick=latest if catch_up or on_time else None, next_fire_at=next_fire_after(cron, tz, now))
