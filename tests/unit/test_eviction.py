"""The eviction choice, as a table: what is loaded, what is wanted, the limits → the decision."""

from __future__ import annotations

import pytest

from runners.eviction import Limits, Loaded, Wanted, plan_start

GIB = 1024**3

CASES = [
    # (id, wanted, loaded, limits, action, victims, reason contains)
    ("an empty machine starts at once", Wanted("b"), [], Limits(1), "start", (), ""),
    ("a free slot starts at once", Wanted("b"), [Loaded("a")], Limits(2), "start", (), ""),
    ("no limit on count starts at once", Wanted("c"), [Loaded("a"), Loaded("b")], Limits(0), "start", (), ""),
    ("the one slot is taken: evict it", Wanted("b"), [Loaded("a")], Limits(1), "evict", ("a",), "'a'"),
    (
        "a busy victim is still chosen and the reason says it drains",
        Wanted("b"),
        [Loaded("a", in_flight=2)],
        Limits(1),
        "evict",
        ("a",),
        "finish 2 request(s)",
    ),
    (
        "least recently used goes first",
        Wanted("c"),
        [Loaded("a", last_used=5), Loaded("b", last_used=3)],
        Limits(2),
        "evict",
        ("b",),
        "",
    ),
    (
        "an idle runner goes before a busy one even if used more recently",
        Wanted("c"),
        [Loaded("a", last_used=1, in_flight=1), Loaded("b", last_used=9)],
        Limits(2),
        "evict",
        ("b",),
        "",
    ),
    (
        "a pinned runner is never evicted: the unpinned one goes",
        Wanted("c"),
        [Loaded("a", last_used=1, pinned=True), Loaded("b", last_used=9)],
        Limits(2),
        "evict",
        ("b",),
        "",
    ),
    (
        "only pinned runners loaded and no room: impossible",
        Wanted("b"),
        [Loaded("a", pinned=True)],
        Limits(1),
        "impossible",
        (),
        "pinned",
    ),
    (
        "a runner still starting is waited for, not evicted",
        Wanted("b"),
        [Loaded("a", state="starting")],
        Limits(1),
        "wait",
        (),
        "finish starting",
    ),
    (
        "a runner already stopping is waited for",
        Wanted("b"),
        [Loaded("a", state="stopping")],
        Limits(1),
        "wait",
        (),
        "to stop",
    ),
    (
        "a draining runner is waited for, not evicted twice",
        Wanted("b"),
        [Loaded("a", state="draining", in_flight=1)],
        Limits(1),
        "wait",
        (),
        "to stop",
    ),
    (
        "a stopping runner that is not in the way does not delay the start",
        Wanted("c"),
        [Loaded("a", state="stopping")],
        Limits(2),
        "start",
        (),
        "",
    ),
    (
        "memory budget: evict least recently used until it fits",
        Wanted("c", memory=4 * GIB),
        [Loaded("a", memory=3 * GIB, last_used=1), Loaded("b", memory=3 * GIB, last_used=2)],
        Limits(0, memory_budget=8 * GIB),
        "evict",
        ("a",),
        "",
    ),
    (
        "memory budget: both must go for a big model",
        Wanted("c", memory=7 * GIB),
        [Loaded("a", memory=3 * GIB, last_used=1), Loaded("b", memory=3 * GIB, last_used=2)],
        Limits(0, memory_budget=8 * GIB),
        "evict",
        ("a", "b"),
        "",
    ),
    (
        "memory budget: fits beside what runs",
        Wanted("c", memory=2 * GIB),
        [Loaded("a", memory=3 * GIB), Loaded("b", memory=3 * GIB)],
        Limits(0, memory_budget=8 * GIB),
        "start",
        (),
        "",
    ),
    (
        "a model bigger than the whole budget is impossible",
        Wanted("c", memory=9 * GIB),
        [],
        Limits(0, memory_budget=8 * GIB),
        "impossible",
        (),
        "memory budget",
    ),
    (
        "pinned models holding the memory make it impossible",
        Wanted("c", memory=4 * GIB),
        [Loaded("a", memory=6 * GIB, pinned=True)],
        Limits(0, memory_budget=8 * GIB),
        "impossible",
        (),
        "pinned",
    ),
    (
        "an exclusive model evicts its group peers even with room to spare",
        Wanted("c", group="gpu", exclusive=True),
        [Loaded("a", group="gpu"), Loaded("b", group="gpu"), Loaded("x", group="other")],
        Limits(0),
        "evict",
        ("a", "b"),
        "",
    ),
    (
        "a running exclusive member is evicted by a peer of its group",
        Wanted("b", group="gpu"),
        [Loaded("a", group="gpu", exclusive=True)],
        Limits(0),
        "evict",
        ("a",),
        "",
    ),
    (
        "non-exclusive members of a group share it",
        Wanted("b", group="gpu"),
        [Loaded("a", group="gpu")],
        Limits(0),
        "start",
        (),
        "",
    ),
    (
        "a pinned exclusive peer makes it impossible",
        Wanted("b", group="gpu"),
        [Loaded("a", group="gpu", exclusive=True, pinned=True)],
        Limits(0),
        "impossible",
        (),
        "pinned",
    ),
    (
        "an exclusive peer still starting is waited for",
        Wanted("b", group="gpu", exclusive=True),
        [Loaded("a", group="gpu", state="starting")],
        Limits(0),
        "wait",
        (),
        "finish starting",
    ),
    (
        "the wanted model itself in the list is ignored",
        Wanted("a"),
        [Loaded("a", state="stopping")],
        Limits(1),
        "start",
        (),
        "",
    ),
]


@pytest.mark.parametrize(
    ("wanted", "loaded", "limits", "action", "victims", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_eviction_plan(wanted, loaded, limits, action, victims, reason) -> None:
    decision = plan_start(wanted, loaded, limits)
    assert decision.action == action, decision
    assert decision.victims == victims
    assert reason in decision.reason
