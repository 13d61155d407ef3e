"""The pure cron arithmetic: fire times in a timezone across DST changes, validation, and missed-tick planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engineroom.core.cron import (
    SKIP_GRACE_S,
    check_cron,
    latest_tick_between,
    next_fire_after,
    next_fire_times,
    parse_timezone,
    plan_firing,
)

BERLIN = "Europe/Berlin"
MINUTE = timedelta(minutes=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micros: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0) -> datetime:
    """The instant a wall time in ``zone`` stands for (``fold=1``: its second showing), in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


# -- next fire times ------------------------------------------------------------------------------------------------


def test_the_next_fire_time_is_strictly_after_and_aware_utc() -> None:
    after = utc(2024, 5, 6, 10, 7, 30)
    fired = next_fire_after("*/15 * * * *", "UTC", after)
    assert fired == utc(2024, 5, 6, 10, 15) and fired.tzinfo is UTC
    assert next_fire_after("*/15 * * * *", "UTC", fired) == utc(2024, 5, 6, 10, 30)


def test_wall_clock_times_follow_the_timezone_offset_in_winter_and_summer() -> None:
    assert next_fire_after("0 9 * * *", BERLIN, utc(2024, 1, 15)) == utc(2024, 1, 15, 8)  # CET, +01:00
    assert next_fire_after("0 9 * * *", BERLIN, utc(2024, 7, 15)) == utc(2024, 7, 15, 7)  # CEST, +02:00
    assert next_fire_after("0 9 * * *", "America/New_York", utc(2024, 7, 15)) == utc(2024, 7, 15, 13)


def test_a_time_skipped_by_spring_forward_fires_once_when_the_clocks_jump() -> None:
    # 2024-03-31 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 never shows on the wall
    times = next_fire_times("30 2 * * *", BERLIN, local(BERLIN, 2024, 3, 30, 12), 3)
    assert times == [local(BERLIN, 2024, 3, 31, 3), local(BERLIN, 2024, 4, 1, 2, 30), local(BERLIN, 2024, 4, 2, 2, 30)]


def test_a_frequent_schedule_fires_once_across_the_spring_forward_gap() -> None:
    times = next_fire_times("*/30 * * * *", BERLIN, local(BERLIN, 2024, 3, 31, 1, 10), 4)
    assert times == [
        local(BERLIN, 2024, 3, 31, 1, 30),
        local(BERLIN, 2024, 3, 31, 3, 0),  # 02:00 and 02:30 (skipped) and 03:00 fire together
        local(BERLIN, 2024, 3, 31, 3, 30),
        local(BERLIN, 2024, 3, 31, 4, 0),
    ]


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() -> None:
    # 2024-10-27 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 shows twice
    times = next_fire_times("30 2 * * *", BERLIN, local(BERLIN, 2024, 10, 26, 12), 2)
    assert times == [local(BERLIN, 2024, 10, 27, 2, 30, fold=0), local(BERLIN, 2024, 10, 28, 2, 30)]
    assert times[0] == utc(2024, 10, 27, 0, 30)  # CEST, the first pass


def test_a_frequent_schedule_pauses_during_the_repeated_hour() -> None:
    times = next_fire_times("*/30 * * * *", BERLIN, local(BERLIN, 2024, 10, 27, 1, 40), 4)
    # 02:00 and 02:30 CEST, then nothing while 02:00-02:59 shows again (CET), then 03:00 CET
    assert times == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 2), utc(2024, 10, 27, 2, 30)]
    # Asked from inside the second pass, it waits for the wall times after it
    assert next_fire_after("*/30 * * * *", BERLIN, local(BERLIN, 2024, 10, 27, 2, 10, fold=1)) == utc(2024, 10, 27, 2)


def test_midnight_skipped_in_santiago_fires_at_one_oclock() -> None:
    # 2024-09-08 in Santiago: 24:00 -04 becomes 01:00 -03, so that day has no midnight
    zone = "America/Santiago"
    times = next_fire_times("0 0 * * *", zone, utc(2024, 9, 7, 12), 2)
    assert times == [local(zone, 2024, 9, 8, 1), local(zone, 2024, 9, 9, 0)]


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_after("* * * * *", "UTC", datetime(2024, 1, 1))


# -- validation -----------------------------------------------------------------------------------------------------


def test_a_valid_expression_comes_back_with_single_spaces() -> None:
    assert check_cron("  0  9 * *   mon-fri ") == "0 9 * * mon-fri"
    assert check_cron("0 0 * mar thu") == "0 0 * mar thu"  # the R and H in day and month names are fine


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * *", "has 4 field(s); give 5"),
        ("* * * * * *", "has 6 field(s); give 5"),
        ("@daily", "has 1 field(s)"),
        ("61 * * * *", "out of range"),
        ("*/0 * * * *", "step '0'"),
        ("every day", "has 2 field(s)"),
        ("a b c d e", "invalid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("H * * * *", "random (R) and hashed (H)"),
        ("R 1 * * *", "random (R) and hashed (H)"),
    ],
)
def test_a_bad_expression_is_refused_naming_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match="cron expression") as refused:
        check_cron(expression)
    assert problem in str(refused.value)


#: Ranges of one value, which croniter 7.0.0 reads as the whole field (``5-5 * * * *`` fired every minute, issue 16):
#: (as written, as check_cron gives it back, its first three fire times after Monday 2024-01-01 00:00 UTC).
ONE_VALUE_RANGES = [
    ("0-0 * * * *", "0 * * * *", [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)]),
    ("5-5 * * * *", "5 * * * *", [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 1, 5), utc(2024, 1, 1, 2, 5)]),
    ("59-59 * * * *", "59 * * * *", [utc(2024, 1, 1, 0, 59), utc(2024, 1, 1, 1, 59), utc(2024, 1, 1, 2, 59)]),
    ("05-05 * * * *", "05 * * * *", [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 1, 5), utc(2024, 1, 1, 2, 5)]),
    ("5-5/2 * * * *", "5 * * * *", [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 1, 5), utc(2024, 1, 1, 2, 5)]),
    ("5-5/60 * * * *", "5 * * * *", [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 1, 5), utc(2024, 1, 1, 2, 5)]),
    ("1,5-5 * * * *", "1,5 * * * *", [utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 1, 1)]),
    ("* 3-3 * * *", "* 3 * * *", [utc(2024, 1, 1, 3, 0), utc(2024, 1, 1, 3, 1), utc(2024, 1, 1, 3, 2)]),
    ("0 0-0 * * *", "0 0 * * *", [utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 4)]),
    ("0 3-3/2 * * *", "0 3 * * *", [utc(2024, 1, 1, 3), utc(2024, 1, 2, 3), utc(2024, 1, 3, 3)]),
    ("0 0 15-15 * *", "0 0 15 * *", [utc(2024, 1, 15), utc(2024, 2, 15), utc(2024, 3, 15)]),
    ("0 0 31-L * *", "0 0 31 * *", [utc(2024, 1, 31), utc(2024, 3, 31), utc(2024, 5, 31)]),
    ("0 0 1 6-6 *", "0 0 1 6 *", [utc(2024, 6, 1), utc(2025, 6, 1), utc(2026, 6, 1)]),
    ("0 0 1 jun-JUN *", "0 0 1 jun *", [utc(2024, 6, 1), utc(2025, 6, 1), utc(2026, 6, 1)]),
    ("0 0 1 6-jun *", "0 0 1 6 *", [utc(2024, 6, 1), utc(2025, 6, 1), utc(2026, 6, 1)]),
    ("0 0 * * 3-3", "0 0 * * 3", [utc(2024, 1, 3), utc(2024, 1, 10), utc(2024, 1, 17)]),
    ("0 0 * * wed-wed", "0 0 * * wed", [utc(2024, 1, 3), utc(2024, 1, 10), utc(2024, 1, 17)]),
    ("0 0 * * 7-7", "0 0 * * 7", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21)]),
    ("0 0 * * 0-0/3", "0 0 * * 0", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21)]),
    ("0 0 * * sun-sun#2", "0 0 * * sun#2", [utc(2024, 1, 14), utc(2024, 2, 11), utc(2024, 3, 10)]),
    ("30 9-9 1-1 1-1 *", "30 9 1 1 *", [utc(2024, 1, 1, 9, 30), utc(2025, 1, 1, 9, 30), utc(2026, 1, 1, 9, 30)]),
]


@pytest.mark.parametrize(("expression", "normalized", "first_three"), ONE_VALUE_RANGES)
def test_a_range_of_one_value_fires_on_that_value_only(
    expression: str, normalized: str, first_three: list[datetime]
) -> None:
    assert check_cron(expression) == normalized
    assert next_fire_times(expression, "UTC", utc(2024, 1, 1), 3) == first_three


def test_a_range_of_one_value_stored_before_the_fix_is_fired_on_that_value() -> None:
    # Schedules made before check_cron rewrote such ranges still hold them as written
    due = utc(2024, 5, 6, 10, 5)
    firing = plan_firing("5-5 * * * *", "UTC", due, due + timedelta(seconds=1), catch_up=False)
    assert (firing.tick, firing.next_fire_at) == (due, utc(2024, 5, 6, 11, 5))
    assert latest_tick_between("0 3-3 * * *", "UTC", utc(2024, 5, 6), utc(2024, 5, 8)) == utc(2024, 5, 7, 3)


def test_ranges_of_several_values_are_left_as_written() -> None:
    assert check_cron("5-6 0-23 1-31 jan-dec 0-7") == "5-6 0-23 1-31 jan-dec 0-7"
    assert next_fire_times("0 0 * * 0-7", "UTC", utc(2024, 1, 1), 2) == [utc(2024, 1, 2), utc(2024, 1, 3)]


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 * * 7-0", "day-of-week range '7-0' runs from Sunday back to Sunday"),
        ("0 0 * * 7-sun", "day-of-week range '7-sun' runs from Sunday back to Sunday"),
        ("0 0 0-0 * *", "out of range"),
        ("0 0 * 0-0 *", "out of range"),
        ("60-60 * * * *", "out of range"),
        ("0 24-24 * * *", "out of range"),
        ("5-5/0 * * * *", "step '0'"),
    ],
)
def test_a_range_of_one_value_that_is_not_a_value_of_its_field_is_refused(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match="cron expression") as refused:
        check_cron(expression)
    assert problem in str(refused.value) and repr(expression) in str(refused.value)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "europe/berlin", "", "../etc/passwd", "localtime", "Europe"])
def test_an_unknown_timezone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        parse_timezone(name)


# -- missed ticks ---------------------------------------------------------------------------------------------------


def test_latest_tick_between_finds_the_last_tick_of_a_long_outage() -> None:
    start, end = utc(2024, 1, 1), utc(2024, 3, 1, 0, 0, 30)
    assert latest_tick_between("* * * * *", "UTC", start, end) == utc(2024, 3, 1)
    assert latest_tick_between("0 0 1 1 *", "UTC", utc(2020, 1, 1), end) == utc(2024, 1, 1)
    assert latest_tick_between("0 0 1 1 *", "UTC", utc(2024, 1, 1), end) is None  # (start, end]: start excluded


def test_a_tick_on_time_fires_and_the_next_is_the_first_after_now() -> None:
    due, now = utc(2024, 5, 6, 10, 0), utc(2024, 5, 6, 10, 0, 0, 300_000)
    for catch_up in (False, True):
        firing = plan_firing("0 * * * *", "UTC", due, now, catch_up=catch_up)
        assert (firing.tick, firing.next_fire_at) == (due, utc(2024, 5, 6, 11))


def test_skip_drops_ticks_older_than_the_grace_and_run_once_fires_the_latest() -> None:
    due, now = utc(2024, 5, 6, 5, 0), utc(2024, 5, 6, 10, 2)  # the scheduler was down five hours
    skip = plan_firing("0 * * * *", "UTC", due, now, catch_up=False)
    assert (skip.tick, skip.next_fire_at) == (None, utc(2024, 5, 6, 11))
    run_once = plan_firing("0 * * * *", "UTC", due, now, catch_up=True)
    assert (run_once.tick, run_once.next_fire_at) == (utc(2024, 5, 6, 10), utc(2024, 5, 6, 11))


def test_skip_still_fires_a_tick_within_the_grace() -> None:
    due = utc(2024, 5, 6, 10, 0)
    late = plan_firing("0 * * * *", "UTC", due, due + timedelta(seconds=SKIP_GRACE_S), catch_up=False)
    assert late.tick == due
    too_late = plan_firing("0 * * * *", "UTC", due, due + timedelta(seconds=SKIP_GRACE_S + 1), catch_up=False)
    assert too_late.tick is None
    assert plan_firing("0 * * * *", "UTC", due, due + timedelta(seconds=90), catch_up=False, grace_s=120).tick == due


def test_a_due_time_that_is_no_tick_still_counts_as_one() -> None:
    # As when next_fire_at was set by hand: the yearly schedule fires for it, then waits for New Year
    due = utc(2024, 5, 6, 10, 0, 0, 123_000)
    firing = plan_firing("0 0 1 1 *", "UTC", due, due + timedelta(seconds=1), catch_up=False)
    assert (firing.tick, firing.next_fire_at) == (due, utc(2025, 1, 1))


def test_a_schedule_not_yet_due_is_refused() -> None:
    with pytest.raises(ValueError, match="not due"):
        plan_firing("* * * * *", "UTC", utc(2024, 1, 1, 0, 1), utc(2024, 1, 1), catch_up=True)


# -- properties, against a minute-by-minute model of the documented rule ---------------------------------------------

#: (expression, its minutes, its hours): expressions the model below can match without croniter.
CRONS = [
    ("*/7 * * * *", set(range(0, 60, 7)), set(range(24))),
    ("0 * * * *", {0}, set(range(24))),
    ("15,45 1-3 * * *", {15, 45}, {1, 2, 3}),
    ("30 2 * * *", {30}, {2}),
    ("*/20 2 * * *", {0, 20, 40}, {2}),
    ("0,30 0-2 * * *", {0, 30}, {0, 1, 2}),
]
#: A DST change of each kind per zone (Lord Howe moves by 30 minutes; Santiago at midnight).
TRANSITIONS = {
    "Europe/Berlin": [utc(2024, 3, 31, 1), utc(2024, 10, 27, 1)],
    "America/New_York": [utc(2024, 3, 10, 7), utc(2024, 11, 3, 6)],
    "Australia/Lord_Howe": [utc(2024, 4, 6, 15), utc(2024, 10, 5, 15, 30)],
    "America/Santiago": [utc(2024, 4, 7, 3), utc(2024, 9, 8, 4)],
    "UTC": [utc(2024, 6, 1)],
}
WINDOW = timedelta(hours=8)


def model_fire_times(
    minutes: set[int], hours: set[int], zone_name: str, start: datetime, end: datetime
) -> list[datetime]:
    """Every instant in (start, end] walking UTC minute by minute: a matching wall time fires on its first showing,
    and the minute the clocks jump forward fires for the matching wall times they jumped over."""
    zone = ZoneInfo(zone_name)

    def matches(wall: datetime) -> bool:
        return wall.minute in minutes and wall.hour in hours

    fired = []
    instant = start.replace(second=0, microsecond=0) + MINUTE
    previous = (instant - MINUTE).astimezone(zone).replace(tzinfo=None)
    while instant <= end:
        shown = instant.astimezone(zone)
        wall = shown.replace(tzinfo=None)
        jumped_over = [previous + MINUTE * step for step in range(1, int((wall - previous) / MINUTE))]
        if (matches(wall) and shown.fold == 0) or any(matches(skipped) for skipped in jumped_over):
            fired.append(instant)
        previous = wall
        instant += MINUTE
    return fired


@st.composite
def moments(draw: st.DrawFn) -> tuple[str, int, str, datetime]:
    """A zone, a cron from ``CRONS`` and a time within four hours of one of the zone's DST changes."""
    zone = draw(st.sampled_from(sorted(TRANSITIONS)))
    transition = draw(st.sampled_from(TRANSITIONS[zone]))
    cron_index = draw(st.integers(0, len(CRONS) - 1))
    offset = timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))
    whole_minute = draw(st.booleans())
    after = transition + offset
    return zone, cron_index, CRONS[cron_index][0], after.replace(second=0) if whole_minute else after


@settings(max_examples=150, deadline=None, database=None)
@given(moments())
def test_fire_times_match_the_model_around_dst_changes(moment: tuple[str, int, str, datetime]) -> None:
    zone, cron_index, cron, after = moment
    _, minutes, hours = CRONS[cron_index]
    expected = model_fire_times(minutes, hours, zone, after, after + WINDOW)
    got = next_fire_times(cron, zone, after, len(expected) + 1)
    assert got[: len(expected)] == expected
    assert got[-1] > after + WINDOW
    assert all(time.tzinfo is UTC for time in got)


@settings(max_examples=100, deadline=None, database=None)
@given(moments(), st.integers(0, 8 * 60 * 60))
def test_latest_tick_between_matches_the_model(moment: tuple[str, int, str, datetime], span_s: int) -> None:
    zone, cron_index, cron, start = moment
    _, minutes, hours = CRONS[cron_index]
    end = start + timedelta(seconds=span_s)
    expected = model_fire_times(minutes, hours, zone, start, end)
    assert latest_tick_between(cron, zone, start, end) == (expected[-1] if expected else None)


@settings(max_examples=100, deadline=None, database=None)
@given(moments(), st.integers(0, 8 * 60 * 60), st.booleans())
def test_a_due_schedule_fires_at_most_once_for_its_latest_due_tick(
    moment: tuple[str, int, str, datetime], late_s: int, catch_up: bool
) -> None:
    zone, _, cron, before = moment
    due = next_fire_after(cron, zone, before)
    now = due + timedelta(seconds=late_s)
    firing = plan_firing(cron, zone, due, now, catch_up=catch_up)
    assert due < firing.next_fire_at and now < firing.next_fire_at == next_fire_after(cron, zone, now)
    latest = latest_tick_between(cron, zone, due, now) or due
    if catch_up or (now - latest).total_seconds() <= SKIP_GRACE_S:
        assert firing.tick == latest
    else:
        assert firing.tick is None
