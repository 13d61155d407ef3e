"""Hypothesis over the two validators users feed free-form structure to: workflow graphs (acyclic ones are
accepted, any cycle is refused with a 422 naming a real cycle) and cron expressions (valid ones fire at strictly
increasing times on their minutes and hours; anything else is a ``ValueError`` naming it, never another exception).

``tests/unit/core/test_cron.py`` checks fire times against a model for a fixed set of expressions around DST
changes; these generate the expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engineroom.core.cron import check_cron, next_fire_times
from engineroom.models.workflow import WorkflowCreate
from tests.conftest import make_token

FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None)
Graph = dict[str, list[str]]


@st.composite
def dags(draw: st.DrawFn, min_steps: int = 1) -> Graph:
    """A DAG of 1 to 25 steps: each depends only on steps made before it, listed in a random order."""
    count = draw(st.integers(min_steps, 25))
    names = [f"s{index}" for index in range(count)]
    graph = {
        name: sorted(draw(st.sets(st.sampled_from(names[:index]), max_size=4)) if index else [])
        for index, name in enumerate(names)
    }
    order = draw(st.permutations(names))
    return {name: graph[name] for name in order}


@st.composite
def cyclic_graphs(draw: st.DrawFn) -> Graph:
    """A DAG with a cycle of 1 to 6 of its steps added (a step depending on itself counts)."""
    graph = draw(dags(min_steps=1))
    ring = draw(st.lists(st.sampled_from(sorted(graph)), min_size=1, max_size=6, unique=True))
    for step, dependency in zip(ring, ring[1:] + ring[:1], strict=True):
        if dependency not in graph[step]:
            graph[step].append(dependency)
    return graph


def body(graph: Graph) -> dict[str, Any]:
    steps = [{"id": step, "task": "general.demo", "depends_on": deps} for step, deps in graph.items()]
    return {"steps": steps}


def named_cycle(detail: str) -> list[str]:
    _, _, path = detail.partition("steps form a cycle: ")
    return path.split(" -> ") if path else []


def assert_is_a_cycle_of(cycle: list[str], graph: Graph) -> None:
    assert len(cycle) >= 2 and cycle[0] == cycle[-1], cycle
    for step, dependency in zip(cycle, cycle[1:], strict=False):
        assert dependency in graph[step], f"{cycle} is no cycle of {graph}"


@FAST
@given(dags())
def test_every_acyclic_workflow_is_accepted(graph: Graph) -> None:
    assert [step.id for step in WorkflowCreate.model_validate(body(graph)).steps] == list(graph)


@FAST
@given(cyclic_graphs())
def test_every_cyclic_workflow_is_refused_naming_one_of_its_cycles(graph: Graph) -> None:
    try:
        WorkflowCreate.model_validate(body(graph))
    except ValidationError as exc:
        assert_is_a_cycle_of(named_cycle(str(exc.errors()[0]["msg"])), graph)
    else:
        raise AssertionError(f"a cyclic workflow was accepted: {graph}")


@settings(max_examples=15, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(cyclic_graphs())
def test_a_cyclic_workflow_posted_gets_a_422_naming_the_cycle(fuzz_client: TestClient, graph: Graph) -> None:
    response = fuzz_client.post("/workflows", json=body(graph), headers={"Authorization": f"Bearer {make_token()}"})
    assert response.status_code == 422, response.text
    assert_is_a_cycle_of(named_cycle(response.json()["detail"][0]["msg"]), graph)


# -- cron ------------------------------------------------------------------------------------------------------------

#: Each field's range; days of the month stop at 28 so that every generated expression fires in every month.
FIELDS = [(0, 59), (0, 23), (1, 28), (1, 12), (0, 6)]
#: The names the month and day-of-week fields may spell their values with, from each field's first value on.
NAMES = {3: "jan feb mar apr may jun jul aug sep oct nov dec".split(), 4: "sun mon tue wed thu fri sat".split()}
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@dataclass(frozen=True)
class Cron:
    """A generated expression, the text ``check_cron`` gives back for it and the values each field matches."""

    expression: str
    normalized: str
    values: list[set[int]]


@st.composite
def cron_parts(draw: st.DrawFn, index: int) -> tuple[str, str, set[int]]:
    """One comma-separated field, as written and as normalized (a range of one value is that value), and the
    values it matches."""
    low, high = FIELDS[index]
    names = NAMES.get(index)

    def spelled(value: int) -> str:
        return names[value - low] if names and draw(st.booleans()) else str(value)

    parts, normalized, values = [], [], set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["*", "*/step", "value", "range", "range/step"]))
        start = draw(st.integers(low, high))
        end = draw(st.integers(start, high))
        step = draw(st.integers(1, max(1, high - low)))
        first, last = spelled(start), spelled(end)
        text, matched = {
            "*": ("*", range(low, high + 1)),
            "*/step": (f"*/{step}", range(low, high + 1, step)),
            "value": (first, range(start, start + 1)),
            "range": (f"{first}-{last}", range(start, end + 1)),
            "range/step": (f"{first}-{last}/{step}", range(start, end + 1, step)),
        }[kind]
        parts.append(text)
        normalized.append(first if kind.startswith("range") and start == end else text)
        values |= set(matched)
    return ",".join(parts), ",".join(normalized), values


@st.composite
def crons(draw: st.DrawFn) -> Cron:
    """A valid 5-field expression, with ranges of one value (``0-0``, ``jun-jun/3``) in any field."""
    fields = [draw(cron_parts(index)) for index in range(len(FIELDS))]
    return Cron(
        " ".join(text for text, _, _ in fields),
        " ".join(normalized for _, normalized, _ in fields),
        [values for _, _, values in fields],
    )


@FAST
@given(
    crons(),
    st.sampled_from(ZONES),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
)
def test_a_valid_expression_fires_at_strictly_increasing_times_on_its_minutes_and_hours(
    cron: Cron, zone: str, after: datetime
) -> None:
    minutes, hours, _, months, _ = cron.values
    assert check_cron(cron.expression) == cron.normalized
    times = next_fire_times(cron.expression, zone, after, 6)
    assert all(earlier < later for earlier, later in zip([after, *times], times, strict=False)), times
    assert all(time.tzinfo is UTC and time.second == 0 for time in times)
    if zone == "UTC":  # elsewhere a tick skipped by DST fires at the jump, off its minutes
        assert all(time.minute in minutes and time.hour in hours and time.month in months for time in times)
    assert times[-1] - after < timedelta(days=366 * 8)


@FAST
@given(crons())
def test_every_field_of_a_valid_expression_matches_exactly_the_values_it_names(cron: Cron) -> None:
    # croniter's own reading of each field ("*": all of it), within the generated ranges (days stop at 28)
    expanded, _ = croniter.expand(check_cron(cron.expression))
    for field, (low, high), values in zip(expanded, FIELDS, cron.values, strict=True):
        generated = set(range(low, high + 1))
        read = generated if "*" in field else {int(value) for value in field} & generated
        assert read == values, (cron.expression, field)


#: A range with its step or nth, which normalizing may drop: only ranges of one value are rewritten.
RANGE_TAIL = re.compile(r"-[^-/#,\s]+(/\d+)?")


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet="0123456789*/,-?LW#HR @ abcdefghijklmnopqrstuvwxyz", max_size=40),
        st.lists(st.text(alphabet="0123456789*/,-LW#", min_size=1, max_size=8), min_size=5, max_size=5).map(" ".join),
    )
)
def test_any_other_text_is_a_value_error_naming_it_or_a_valid_expression(text: str) -> None:
    try:
        normalized = check_cron(text)
    except ValueError as exc:
        assert "cron expression" in str(exc)
        return
    assert RANGE_TAIL.sub("", normalized) == RANGE_TAIL.sub("", " ".join(text.split()))
    assert check_cron(normalized) == normalized
    assert next_fire_times(normalized, "UTC", datetime(2024, 1, 1, tzinfo=UTC), 2)
