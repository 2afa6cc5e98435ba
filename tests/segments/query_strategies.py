"""Hypothesis strategies for segment queries and the people they run on, shared by the
query tests: random ASTs (printed and re-parsed), and random populations written to a real
database and read back as Profiles."""

from __future__ import annotations

import datetime as dt
import random

import sqlalchemy as sa
from hypothesis import strategies as st

from segments.models import Device, Event, User
from segments.query.ast import (
    COMPARE_OPS, COUNT_OPS, Ago, And, Between, Bool, Compare, Count, Did, Duration, Exists, In,
    Match, Near, Not, Num, Or, Str,
)
from segments.query.memory import DeviceView, EventView, Profile
from segments.versions import version_key

NOW = dt.datetime(2025, 3, 10, 14, 37, 12, 345678, tzinfo=dt.UTC)

# ---- shared pools: queries and people draw from the same small sets so they meet ------------

TEXTS = ["", "a", "ab", "abc", "B", "Ber", "Berlin", "berlin", "é", "e\u0301", "Z", "ä", "😀",
         "a b", "x\"y", "\\", "Ünïcode", "10", "true"]
COUNTRIES = ["", "U", "US", "DE", "FR", "UA", "ZZ", "É"]
LANGUAGES = ["", "en", "EN", "en-US", "fr", "de-AT", "zh-Hant"]
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Europe/Berlin", "Pacific/Chatham",
         "Asia/Kathmandu", "Etc/GMT+12", "Pacific/Kiritimati", "Mars/Base", "", "utc",
         "America/St_Johns"]
PLATFORMS = ["ios", "android", "web", "IOS", ""]
DEVICE_TYPES = ["phone", "tablet", "desktop"]
VERSIONS = ["3", "3.2", "3.2.0", "3.10", "3.9.1", "4", "0", "v4", "17.0.1-beta", "10.0.0.1",
            "3.2.0.0.1"]
BAD_VERSIONS = ["beta", "", "x1"]
ATTR_KEYS = ["a", "b", "n", "s", "nope"]
PROP_KEYS = ["amount", "tag", "flag", "nope"]
EVENT_NAMES = ["purchase", "open", "Purchase"]
NUMBERS = [0, 1, -1, 2, 3, 0.5, -0.5, 2.5, 1e20, 9007199254740993, 10**19, -0.0, 1e-7]
OFFSETS = [  # how long before NOW things happened; negative: in the future
    dt.timedelta(0), dt.timedelta(minutes=30), dt.timedelta(hours=1),
    dt.timedelta(hours=1, microseconds=1), dt.timedelta(days=2), dt.timedelta(days=7),
    dt.timedelta(days=7, microseconds=-1), dt.timedelta(days=7, microseconds=1),
    dt.timedelta(days=30), dt.timedelta(days=400), dt.timedelta(hours=-1),
]
DURATIONS = [Duration(0, "m"), Duration(30, "m"), Duration(1, "h"), Duration(2, "d"),
             Duration(7, "d"), Duration(1, "w"), Duration(30, "d"), Duration(4, "w")]
DATES = [(NOW - dt.timedelta(days=7)).isoformat(), "2025-03-03", "2025-03-10",
         "2025-03-10T16:37:12+02:00", "2024-02-05T14:37:12.345678", "2025-03-10T14:37:12.345678Z"]
CENTERS = [(40.71, -74.0), (52.52, 13.405), (89.9, 10.0), (0.0, 179.9), (-33.87, 151.21),
           (-89.5, -170.0)]

# ---- queries --------------------------------------------------------------------------------

texts = st.sampled_from(TEXTS)
numbers = st.one_of(st.sampled_from(NUMBERS), st.integers(-5, 5),
                    st.floats(-10, 10, allow_nan=False, allow_infinity=False))
json_literals = st.one_of(texts.map(Str), numbers.map(Num), st.booleans().map(Bool))


def _leaves(field: str, values, *, text: bool, order: bool = True, match_texts=texts):
    """Every condition shape on one field with literals from `values`."""
    ops = st.sampled_from(COMPARE_OPS if order else ("=", "!="))
    shapes = [
        st.builds(Compare, st.just(field), ops, values),
        st.builds(In, st.just(field), st.lists(values, min_size=1, max_size=3).map(tuple)),
        st.builds(Exists, st.just(field)),
    ]
    if order:
        shapes.append(st.builds(Between, st.just(field), values, values))
    if text:
        shapes.append(st.builds(Match, st.just(field), st.sampled_from(["contains", "starts_with"]),
                                match_texts))
    return st.one_of(shapes)


@st.composite
def _json_leaf(draw, keys):
    """attr.* or event-property conditions: any literal type, like the parser allows."""
    field = draw(keys)
    shape = draw(st.sampled_from(["compare", "in", "between", "exists", "match"]))
    if shape == "compare":
        value = draw(json_literals)
        ops = ("=", "!=") if isinstance(value, Bool) else COMPARE_OPS
        return Compare(field, draw(st.sampled_from(ops)), value)
    if shape == "in":
        return In(field, tuple(draw(st.lists(json_literals, min_size=1, max_size=3))))
    if shape == "between":
        kind = draw(st.sampled_from([Str, Num]))
        values = texts if kind is Str else numbers
        return Between(field, kind(draw(values)), kind(draw(values)))
    if shape == "exists":
        return Exists(field)
    return Match(field, draw(st.sampled_from(["contains", "starts_with"])), draw(texts))


def _boolean(leaves, max_leaves):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=max_leaves,
    )


prop_queries = _boolean(_json_leaf(st.sampled_from(PROP_KEYS)), max_leaves=3)

times = st.one_of(st.sampled_from(DURATIONS).map(Ago), st.sampled_from(DATES).map(Str))
hours = st.integers(0, 23).map(Num)

leaf_queries = st.one_of(
    _json_leaf(st.sampled_from(ATTR_KEYS).map(lambda k: "attr." + k)),
    st.sampled_from(["language", "region", "city", "timezone"]).flatmap(
        lambda f: _leaves(f, st.sampled_from(TEXTS + LANGUAGES + ZONES).map(Str), text=True)),
    _leaves("country", st.sampled_from(COUNTRIES).map(Str), text=True,
            match_texts=texts.map(str.upper)),  # the parser upper-cases country literals
    st.sampled_from(["platform", "device_type"]).flatmap(
        lambda f: _leaves(f, st.sampled_from(PLATFORMS + DEVICE_TYPES).map(Str), text=True)),
    st.sampled_from(["os_version", "app_version"]).flatmap(
        lambda f: _leaves(f, st.sampled_from(VERSIONS).map(Str), text=False)),
    st.sampled_from(["created_at", "last_seen_at"]).flatmap(lambda f: _leaves(f, times, text=False)),
    _leaves("local_hour", hours, text=False),
    st.sampled_from(["sms_opt_in", "push_opt_in"]).flatmap(
        lambda f: st.builds(Compare, st.just(f), st.sampled_from(["=", "!="]),
                            st.booleans().map(Bool))),
    st.builds(Did, st.sampled_from(EVENT_NAMES), st.none() | prop_queries,
              st.none() | st.builds(Count, st.sampled_from(COUNT_OPS), st.integers(0, 3)),
              st.none() | st.sampled_from(DURATIONS)),
    st.builds(lambda c, d, unit: Near(c[0], c[1], d, unit), st.sampled_from(CENTERS),
              st.one_of(st.sampled_from([0, 1, 25, 100, 500, 2000, 20100]),
                        st.floats(0, 800, allow_nan=False)),
              st.sampled_from(["km", "mi"])),
)

queries = _boolean(leaf_queries, max_leaves=6)

# ---- people ---------------------------------------------------------------------------------


def _json_value(rnd: random.Random):
    r = rnd.random()
    if r < 0.3:
        return rnd.choice(TEXTS)
    if r < 0.6:
        return rnd.choice(NUMBERS + [rnd.randint(-5, 5), round(rnd.uniform(-10, 10), rnd.randint(0, 3))])
    if r < 0.75:
        return rnd.choice([True, False])
    if r < 0.85:
        return None
    return rnd.choice([[1, "a"], {"x": 1}, [], {}])


def _json_object(rnd: random.Random, keys: list[str]) -> dict:
    return {k: _json_value(rnd) for k in keys if rnd.random() < 0.6}


def _maybe(rnd: random.Random, values, p_none: float = 0.25):
    return None if rnd.random() < p_none else rnd.choice(values)


def random_person(rnd: random.Random) -> dict:
    """One person's fields, devices and events, drawn from the shared pools."""
    location = None
    if rnd.random() < 0.7:
        lat0, lon0 = rnd.choice(CENTERS)
        spread = rnd.choice([0.01, 0.2, 1.0, 5.0])
        location = (max(-90.0, min(90.0, lat0 + rnd.uniform(-spread, spread))),
                    max(-180.0, min(180.0, lon0 + rnd.uniform(-spread, spread))))
        if rnd.random() < 0.1:
            location = (lat0, lon0)
    person = {
        "attributes": _json_object(rnd, ATTR_KEYS[:-1]),
        "language": _maybe(rnd, LANGUAGES + TEXTS),
        "timezone": _maybe(rnd, ZONES),
        "country": _maybe(rnd, COUNTRIES),
        "region": _maybe(rnd, TEXTS),
        "city": _maybe(rnd, TEXTS),
        "lat": location[0] if location else None,
        "lon": location[1] if location else None,
        "sms_opt_in": rnd.random() < 0.5,
        "push_opt_in": rnd.random() < 0.5,
        "created_at": NOW - rnd.choice(OFFSETS),
        "last_seen_at": None if rnd.random() < 0.3 else NOW - rnd.choice(OFFSETS),
        "devices": [
            {"platform": _maybe(rnd, PLATFORMS), "device_type": _maybe(rnd, DEVICE_TYPES),
             "os_version": _maybe(rnd, VERSIONS + BAD_VERSIONS),
             "app_version": _maybe(rnd, VERSIONS + BAD_VERSIONS)}
            for _ in range(rnd.choice([0, 0, 1, 1, 2, 3]))
        ],
        "events": [
            {"name": rnd.choice(EVENT_NAMES), "time": NOW - rnd.choice(OFFSETS),
             "properties": _json_object(rnd, PROP_KEYS[:-1])}
            for _ in range(rnd.choice([0, 1, 2, 3, 5, 8]))
        ],
    }
    if rnd.random() < 0.05:
        person["attributes"] = {}
    return person


def insert_people(conn: sa.Connection, app_id: int, people: list[dict]) -> list[int]:
    """Write people with Core (fast), returning their user ids in order."""
    ids = []
    for i, person in enumerate(people):
        fields = {k: v for k, v in person.items() if k not in ("devices", "events")}
        uid = conn.execute(
            sa.insert(User.__table__).values(app_id=app_id, external_id=f"p{i}",
                                             updated_at=NOW, **fields)
            .returning(User.__table__.c.id)).scalar_one()
        ids.append(uid)
        for j, d in enumerate(person["devices"]):
            conn.execute(sa.insert(Device.__table__).values(
                app_id=app_id, user_id=uid, device_id=f"p{i}-d{j}", push_token_valid=True,
                created_at=NOW, updated_at=NOW,
                os_version_key=version_key(d["os_version"]),
                app_version_key=version_key(d["app_version"]), **d))
        if person["events"]:
            conn.execute(sa.insert(Event.__table__), [
                dict(app_id=app_id, user_id=uid, received_at=NOW, **e) for e in person["events"]])
    return ids


def read_profiles(conn: sa.Connection, app_id: int) -> dict[int, Profile]:
    """Every person of the app as stored (JSON read back), with all their events."""
    users, devices, events = User.__table__, Device.__table__, Event.__table__
    devs: dict[int, list[DeviceView]] = {}
    for row in conn.execute(sa.select(devices).where(devices.c.app_id == app_id)
                            .order_by(devices.c.id)):
        devs.setdefault(row.user_id, []).append(DeviceView(
            row.platform, row.device_type, row.os_version, row.app_version,
            row.os_version_key, row.app_version_key))
    evs: dict[int, list[EventView]] = {}
    for row in conn.execute(sa.select(events).where(events.c.app_id == app_id)
                            .order_by(events.c.id)):
        evs.setdefault(row.user_id, []).append(EventView(row.name, row.time, row.properties))
    profiles = {}
    for u in conn.execute(sa.select(users).where(users.c.app_id == app_id)):
        profiles[u.id] = Profile(
            attributes=u.attributes, language=u.language, timezone=u.timezone,
            country=u.country, region=u.region, city=u.city, lat=u.lat, lon=u.lon,
            sms_opt_in=u.sms_opt_in, push_opt_in=u.push_opt_in, created_at=u.created_at,
            last_seen_at=u.last_seen_at, devices=tuple(devs.get(u.id, ())),
            events=tuple(evs.get(u.id, ())), id=u.id)
    return profiles
