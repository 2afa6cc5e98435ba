"""Deterministic assignment: same answer everywhere, configured shares, stable under edits."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.assignment import Assignment, InvalidSplitError, Splitter, assign

ROOT = Path(__file__).resolve().parents[2]
THREE = [("A", 1), ("B", 2), ("C", 3)]


def test_assignments_match_the_pinned_values():
    # Any change to the hash input or the race reshuffles running campaigns: it must be a
    # deliberate new scheme (SCHEME "v2"), never an accident.
    splitter = Splitter(1001, 10, THREE)
    expected = {
        "alice": "C",
        "bob": "C",
        "dave": "B",
        "frank": "A",
        7: "C",
        123456789: "A",
        "ünïcødé": "A",
        "": "B",
        "user-2": None,
        "user-11": None,
    }
    assert {key: splitter.assign(key).variant for key in expected} == expected
    nine = Splitter(5, 0, [(f"V{i}", i + 1) for i in range(9)])
    assert {k: nine.assign(k).variant for k in ["alice", "bob", "carol", 99]} == {
        "alice": "V5",
        "bob": "V1",
        "carol": "V4",
        99: "V6",
    }


def test_same_user_same_assignment_on_every_call():
    splitter = Splitter(3, 25, THREE)
    for key in ["u1", "u2", 17, "x" * 300]:
        first = splitter.assign(key)
        assert all(splitter.assign(key) == first for _ in range(5))
        assert Splitter(3, 25, THREE).assign(key) == first
        assert assign(3, key, 25, THREE) == first
        assert assign(3, key, 25.0, [{"name": n, "weight": w} for n, w in THREE]) == first


def test_assignment_is_the_same_in_another_process():
    keys = [f"user-{i}" for i in range(250)] + list(range(50))
    here = [_encode(assign(77, key, 12.5, THREE)) for key in keys]
    script = (
        "import json, sys\n"
        "from campaigns.assignment import assign\n"
        "keys = json.loads(sys.stdin.read())\n"
        "variants = [('A', 1), ('B', 2), ('C', 3)]\n"
        "out = [assign(77, k, 12.5, variants) for k in keys]\n"
        "print(json.dumps([[a.control, a.variant, a.variant_index] for a in out]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == here


def _encode(a: Assignment) -> list:
    return [a.control, a.variant, a.variant_index]


def test_int_and_decimal_string_keys_are_the_same_user():
    splitter = Splitter(9, 30, THREE)
    for n in [0, 1, 42, 10**12, -5]:
        assert splitter.assign(n) == splitter.assign(str(n))


def test_control_assignment_has_no_variant_and_treated_has_its_index():
    splitter = Splitter(1001, 10, THREE)
    control = splitter.assign("user-2")
    assert control == Assignment(control=True, variant=None, variant_index=None)
    treated = splitter.assign("dave")
    assert treated == Assignment(control=False, variant="B", variant_index=1)


def test_campaigns_draw_independently():
    users = range(20_000)
    a = Splitter(1, 0, [("A", 1), ("B", 1)])
    b = Splitter(2, 0, [("A", 1), ("B", 1)])
    same = sum(a.assign(u).variant == b.assign(u).variant for u in users)
    assert abs(same / len(users) - 0.5) < 0.02


SHARES = [
    pytest.param(0, [("A", 1)], id="no-control-one-variant"),
    pytest.param(100, [("A", 1), ("B", 1)], id="all-control"),
    pytest.param(10, [("A", 50), ("B", 50)], id="ten-percent-even"),
    pytest.param(2.5, [("A", 1), ("B", 99)], id="fractional-control-1-99"),
    pytest.param(20, [("A", 1), ("B", 2), ("C", 3), ("D", 4)], id="uneven-four"),
    pytest.param(0, [(f"V{i}", i + 1) for i in range(10)], id="ten-variants-two-blocks"),
    pytest.param(33.3, [("A", 0), ("B", 1), ("C", 1)], id="retired-variant"),
]


@pytest.mark.parametrize(("control_percent", "variants"), SHARES)
def test_shares_over_100k_users_are_within_one_point(control_percent, variants):
    users = 100_000
    splitter = Splitter(4242, control_percent, variants)
    counts = Counter(splitter.assign(f"user-{i}").variant for i in range(users))
    total_weight = sum(w for _, w in variants)
    treated = 100 - control_percent
    assert abs(counts[None] / users * 100 - control_percent) < 1
    for name, weight in variants:
        expected = treated * weight / total_weight
        assert abs(counts[name] / users * 100 - expected) < 1, (name, counts)
    if control_percent == 100:
        assert counts[None] == users
    if control_percent == 0:
        assert counts[None] == 0
    for name, weight in variants:
        if weight == 0:
            assert counts[name] == 0


def test_raising_control_only_moves_variant_users_into_control():
    before = Splitter(8, 10, THREE)
    after = Splitter(8, 20, THREE)
    moved = 0
    for i in range(20_000):
        a, b = before.assign(i), after.assign(i)
        if a.control:
            assert b.control
        elif b.control:
            moved += 1
        else:
            assert a.variant == b.variant
    assert 1_600 < moved < 2_400  # about 10% of everyone


def test_adding_a_variant_at_the_end_moves_users_only_into_it():
    before = Splitter(8, 10, [("A", 1), ("B", 1)])
    after = Splitter(8, 10, [("A", 1), ("B", 1), ("C", 1)])
    moved = Counter()
    for i in range(30_000):
        a, b = before.assign(i), after.assign(i)
        if a.variant != b.variant:
            assert b.variant == "C"
            moved[a.variant] += 1
    # A third of the treated users move, taken evenly from A and B.
    assert abs(sum(moved.values()) / 27_000 - 1 / 3) < 0.02
    assert abs(moved["A"] - moved["B"]) < 0.1 * sum(moved.values())


def test_renaming_a_variant_moves_nobody():
    before = Splitter(8, 10, THREE)
    after = Splitter(8, 10, [("A", 1), ("Bee", 2), ("C", 3)])
    for i in range(5_000):
        assert before.assign(i).variant_index == after.assign(i).variant_index


def test_retiring_a_variant_with_weight_zero_moves_only_its_users():
    before = Splitter(8, 0, THREE)
    after = Splitter(8, 0, [("A", 1), ("B", 0), ("C", 3)])
    for i in range(10_000):
        a, b = before.assign(i), after.assign(i)
        if a.variant != "B":
            assert b.variant == a.variant


def test_from_target_reads_the_stored_shape():
    target = {
        "segment": None,
        "control_percent": 15,
        "variants": [
            {"name": "A", "weight": 1, "content": {"body": "hi"}},
            {"name": "B", "weight": 2, "content": {"body": "yo"}},
        ],
    }
    splitter = Splitter.from_target(3, target)
    assert splitter.variants == (("A", 1.0), ("B", 2.0))
    assert splitter.assign("u") == assign(3, "u", 15, [("A", 1), ("B", 2)])
    assert Splitter.from_target(3, {"variants": [{"name": "A"}]}).control_percent == 0


@pytest.mark.parametrize(
    ("control_percent", "variants", "message"),
    [
        (10, [("A", -1)], "weight must be a finite number >= 0, got -1"),
        (10, [("A", 1), ("B", math.nan)], "'B' weight must be a finite number"),
        (10, [("A", math.inf)], "weight must be a finite number"),
        (10, [("A", 10**400)], "weight must be a finite number"),
        (10, [("A", "50")], "weight must be a finite number >= 0, got '50'"),
        (10, [("A", True)], "weight must be a finite number"),
        (10, [], "a target needs at least one variant"),
        (10, [("A", 0), ("B", 0)], "at least one variant needs a weight above 0"),
        (10, [("A", 1), ("A", 2)], "variant name 'A' is used twice"),
        (10, [("", 1)], "variant 0 needs a non-empty name"),
        (10, [(None, 1)], "variant 0 needs a non-empty name"),
        (10, [("A",)], "variant 0 must be a (name, weight) pair"),
        (10, "AB", "variants must be a list"),
        (-0.1, [("A", 1)], "control_percent must be a number from 0 to 100, got -0.1"),
        (100.5, [("A", 1)], "control_percent must be a number from 0 to 100"),
        (math.nan, [("A", 1)], "control_percent must be a number from 0 to 100"),
        ("10", [("A", 1)], "control_percent must be a number from 0 to 100"),
        (True, [("A", 1)], "control_percent must be a number from 0 to 100"),
    ],
)
def test_bad_splits_raise_value_error_with_a_clear_message(control_percent, variants, message):
    with pytest.raises(ValueError, match=_literal(message)) as caught:
        Splitter(1, control_percent, variants)
    assert isinstance(caught.value, InvalidSplitError)
    assert caught.value.status == 422
    with pytest.raises(ValueError, match=_literal(message)):
        assign(1, "u", control_percent, variants)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_campaign_id_and_user_key():
    with pytest.raises(ValueError, match="campaign_id must be an integer"):
        Splitter("7", 0, [("A", 1)])
    with pytest.raises(TypeError, match="user key must be a str or an int"):
        Splitter(7, 0, [("A", 1)]).assign(1.5)
    with pytest.raises(TypeError):
        Splitter(7, 0, [("A", 1)]).assign(True)


# -- properties ------------------------------------------------------------------------------

keys = st.one_of(st.text(max_size=40), st.integers(min_value=-(10**18), max_value=10**18))
percents = st.floats(min_value=0, max_value=100, allow_nan=False)
weights = st.lists(
    st.floats(min_value=0.001, max_value=1000, allow_nan=False), min_size=1, max_size=12
)


def _named(ws):
    return [(f"V{i}", w) for i, w in enumerate(ws)]


@settings(max_examples=150, deadline=None)
@given(
    campaign_id=st.integers(min_value=0, max_value=2**40),
    users=st.lists(keys, min_size=1, max_size=20),
    low=percents,
    high=percents,
    ws=weights,
)
def test_property_deterministic_and_monotone_in_control(campaign_id, users, low, high, ws):
    low, high = sorted((low, high))
    variants = _named(ws)
    at_low = Splitter(campaign_id, low, variants)
    at_high = Splitter(campaign_id, high, variants)
    for user in users:
        a = at_low.assign(user)
        assert a == assign(campaign_id, user, low, variants) == at_low.assign(user)
        b = at_high.assign(user)
        if a.control:
            assert b.control
        if not b.control:
            assert a.variant == b.variant
        assert a.control == (a.variant is None) == (a.variant_index is None)
        if not a.control:
            assert variants[a.variant_index][0] == a.variant


@settings(max_examples=150, deadline=None)
@given(
    users=st.lists(keys, min_size=1, max_size=20),
    ws=weights,
    extra=st.floats(min_value=0.001, max_value=1000, allow_nan=False),
    which=st.integers(min_value=0),
    factor=st.floats(min_value=1.01, max_value=100),
)
def test_property_edits_move_users_only_where_they_must(users, ws, extra, which, factor):
    base = Splitter(11, 0, _named(ws))
    appended = Splitter(11, 0, _named([*ws, extra]))
    j = which % len(ws)
    raised = Splitter(11, 0, _named([w * factor if i == j else w for i, w in enumerate(ws)]))
    for user in users:
        before = base.assign(user).variant_index
        assert appended.assign(user).variant_index in (before, len(ws))
        assert raised.assign(user).variant_index in (before, j)
