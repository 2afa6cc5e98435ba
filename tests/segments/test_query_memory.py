"""The in-memory evaluator on hand-made Profiles, and load_profile's choice of events."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from segments.query import (
    DeviceView, EventView, Profile, compile_predicate, evaluate, load_profile, parse,
    referenced_event_names,
)
from segments.query.memory import event_windows
from tests.factories import make_app, make_user

NOW = dt.datetime(2025, 3, 10, 14, 37, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def matches(text: str, profile: Profile) -> bool:
    return evaluate(parse(text), profile, NOW)


def test_missing_values_fail_every_comparison_and_not_flips_that():
    nobody = Profile()
    for text in ['country = "US"', 'country != "US"', "attr.x != 1", 'attr.x != "a"',
                 "attr.x exists", 'platform != "ios"', 'app_version != "1"', "last_seen_at < 1d ago",
                 'did "x"', "near(0, 0, 20000km)", 'city contains ""']:
        assert not matches(text, nobody), text
        assert matches(f"not {text}", nobody), text
    assert not matches("attr.x = 1", Profile(attributes={"x": None}))
    assert not matches("attr.x exists", Profile(attributes={"x": None}))
    assert matches("attr.x exists", Profile(attributes={"x": [1]}))


def test_attribute_literals_only_match_their_own_json_type():
    assert matches("attr.x = 1", Profile(attributes={"x": 1.0}))
    assert not matches("attr.x = 1", Profile(attributes={"x": True}))
    assert not matches("attr.x = true", Profile(attributes={"x": 1}))
    assert not matches('attr.x = "1"', Profile(attributes={"x": 1}))
    assert not matches("attr.x < 5", Profile(attributes={"x": "3"}))
    assert matches('attr.x in (1, "a")', Profile(attributes={"x": "a"}))
    assert matches("attr.x between 9007199254740992 and 9007199254740992",
                   Profile(attributes={"x": 9007199254740993}))  # compared as doubles, like SQL


def test_text_is_ordered_by_code_point_and_matched_case_sensitively():
    assert matches('attr.s < "a"', Profile(attributes={"s": "Z"}))
    assert matches('attr.s > "z"', Profile(attributes={"s": "é"}))
    assert not matches('city contains "PAR"', Profile(city="Paris"))
    assert matches('city starts_with "Par"', Profile(city="Paris"))
    assert not matches("attr.s contains \"1\"", Profile(attributes={"s": 10}))


def test_devices_any_of_them():
    phone = DeviceView.with_versions(platform="ios", os_version="17.1", app_version="3.10")
    tablet = DeviceView.with_versions(platform="android", app_version="beta")
    person = Profile(devices=(phone, tablet))
    assert phone.app_version_key is not None and tablet.app_version_key is None
    assert matches('platform = "android" and platform = "ios"', person)
    assert matches('app_version > "3.9"', person)
    assert not matches('app_version < "3"', person)
    assert matches('not platform = "web"', person)
    assert matches('not platform = "web"', Profile())


def test_local_hour():
    assert matches("local_hour = 14", Profile())  # no zone: UTC
    assert matches("local_hour = 20", Profile(timezone="Asia/Kolkata"))
    assert not matches("local_hour exists", Profile(timezone="Nowhere/Special"))
    assert not matches("local_hour exists", Profile(timezone=""))


def test_did_counts_and_windows():
    person = Profile(events=(
        EventView("buy", NOW - DAY, {"amount": 80}),
        EventView("buy", NOW - 8 * DAY, {"amount": 10}),
        EventView("buy", NOW + DAY, {}),  # in the future: inside every window
        EventView("open", NOW, {}),
    ))
    assert matches('did "buy" = 3 times', person)
    assert matches('did "buy" = 2 times in last 7d', person)
    assert matches('did "buy" where (amount >= 10) = 2 times', person)
    assert matches('did "buy" where (not amount exists) in last 1h', person)
    assert matches('did "sell" = 0 times', person)
    assert not matches('did "Buy"', person)
    assert matches('did "buy" > 2 times and did "buy" <= 3 times', person)


def test_near():
    assert matches("near(40.71, -74.0, 10km)", Profile(lat=40.7831, lon=-73.9712))
    assert not matches("near(40.71, -74.0, 5km)", Profile(lat=40.7831, lon=-73.9712))
    assert matches("near(40.71, -74.0, 0km)", Profile(lat=40.71, lon=-74.0))
    assert not matches("near(40.71, -74.0, 10km)", Profile(lat=40.71))


def test_now_must_be_aware_and_references_resolved():
    with pytest.raises(ValueError):
        compile_predicate(parse('country = "US"'), NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        compile_predicate(parse('segment("x")'), NOW)
    with pytest.raises(ValueError):
        referenced_event_names(parse('did "a" or segment("x")'))


def test_referenced_events_and_their_widest_windows():
    node = parse('did "a" in last 7d or (did "a" >= 2 times in last 30d and not did "b") or '
                 'did "c" in last 1h or did "b" in last 2d')
    assert referenced_event_names(node) == {"a", "b", "c"}
    assert event_windows(node) == {"a": 30 * DAY, "b": None, "c": dt.timedelta(hours=1)}
    assert referenced_event_names(parse('country = "US"')) == set()


def test_load_profile_reads_devices_and_only_the_events_needed(session):
    app, _, _ = make_app(session)
    user = make_user(session, app, "u", country="US", timezone="Europe/Paris",
                     attributes={"tier": "gold"}, lat=1.5, lon=2.5, created_at=NOW - DAY,
                     devices=[{"platform": "ios", "app_version": "3.2"}],
                     events=[{"name": "a", "time": NOW - 3 * DAY},
                             {"name": "a", "time": NOW - 40 * DAY},
                             {"name": "b", "time": NOW - 400 * DAY, "properties": {"k": 1}},
                             {"name": "c", "time": NOW}])
    node = parse('did "a" in last 7d or not did "b"')
    profile = load_profile(session, user, node, NOW)
    assert profile.id == user.id and profile.country == "US" and profile.lat == 1.5
    assert profile.attributes == {"tier": "gold"} and profile.timezone == "Europe/Paris"
    assert profile.devices == (DeviceView.with_versions(platform="ios", app_version="3.2"),)
    assert [(e.name, e.time) for e in profile.events] == [
        ("b", NOW - 400 * DAY), ("a", NOW - 3 * DAY)]
    assert profile.events[0].properties == {"k": 1}
    assert load_profile(session, user, parse('country = "US"'), NOW).events == ()
    assert evaluate(node, profile, NOW)


def test_a_compiled_predicate_is_cheap_to_run():
    node = parse('country = "US" and app_version >= "3.2" and attr.age between 20 and 30 and '
                 'did "purchase" >= 3 times in last 30d and not did "uninstall" and '
                 'local_hour between 9 and 20')
    predicate = compile_predicate(node, NOW)
    person = Profile(country="US", attributes={"age": 25},
                     devices=(DeviceView.with_versions(app_version="3.4"),),
                     events=tuple(EventView("purchase", NOW - i * DAY) for i in range(5)))
    assert predicate(person)
    start = time.perf_counter()
    for _ in range(2000):
        predicate(person)
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 0.001  # tens of microseconds in practice; generous for slow CI boxes
