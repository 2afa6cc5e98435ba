"""The SQL compiler, construct by construct, on PostgreSQL with hand-made people (and SQLite).

Every PostgreSQL case also checks that the in-memory evaluator picks the same people.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql as pg_dialect

from segments.models import User
from segments.query import (
    compile_predicate, load_profile, parse, resolve, select_user_ids, user_condition,
)
from segments.query.ast import Near
from segments.query.fields import EARTH_RADIUS_KM, Haversine
from tests.factories import make_app, make_user
from tidings import db
from tidings.schema import metadata


def sqlite_engine(path: Path) -> sa.Engine:
    """A separate SQLite database with the whole schema (leaves the process-wide engine be)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", db._sqlite_on_connect)
    metadata.create_all(engine)
    return engine


# ---- PostgreSQL, construct by construct ----------------------------------------------------

NOW = dt.datetime(2025, 3, 10, 14, 37, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def tenant(session):
    application, _, _ = make_app(session)
    other, _, _ = make_app(session, "Other app")
    # The same kind of person in another tenant: never selected by this tenant's queries.
    make_user(session, other, "stranger", country="US", attributes={"age": 30},
              devices=[{"platform": "ios"}], events=[{"name": "purchase", "time": NOW}])
    return application


def select(session, tenant, text: str, segments: dict[str, str] | None = None) -> set[str]:
    """External ids SQL selects, after checking the in-memory evaluator picks the same."""
    node = resolve(parse(text), (segments or {}).get)
    ids = set(session.scalars(select_user_ids(node, app_id=tenant.id, now=NOW, dialect="postgresql")))
    people = session.scalars(sa.select(User).where(User.app_id == tenant.id)).all()
    predicate = compile_predicate(node, NOW)
    in_memory = {u.id for u in people if predicate(load_profile(session, u, node, NOW))}
    assert ids == in_memory, text
    return {u.external_id for u in people if u.id in ids}


def test_attribute_comparisons_are_typed(session, tenant):
    make_user(session, tenant, "int", attributes={"age": 30})
    make_user(session, tenant, "float", attributes={"age": 30.0})
    make_user(session, tenant, "text", attributes={"age": "30"})
    make_user(session, tenant, "bool", attributes={"age": True})
    make_user(session, tenant, "null", attributes={"age": None})
    make_user(session, tenant, "missing", attributes={})
    make_user(session, tenant, "older", attributes={"age": 41.5})
    assert select(session, tenant, "attr.age = 30") == {"int", "float"}
    assert select(session, tenant, 'attr.age = "30"') == {"text"}
    assert select(session, tenant, "attr.age = true") == {"bool"}
    assert select(session, tenant, "attr.age = 1") == set()  # true is not a number
    assert select(session, tenant, "attr.age != 30") == {"older"}
    assert select(session, tenant, 'attr.age != "31"') == {"text"}
    assert select(session, tenant, "not attr.age = 30") == {"text", "bool", "null", "missing", "older"}
    assert select(session, tenant, "attr.age > 29.5") == {"int", "float", "older"}
    assert select(session, tenant, "attr.age between 30 and 41.5") == {"int", "float", "older"}
    assert select(session, tenant, 'attr.age in (41.5, "30", false)') == {"older", "text"}
    assert select(session, tenant, "attr.age exists") == {"int", "float", "text", "bool", "older"}
    assert select(session, tenant, "not attr.age exists") == {"null", "missing"}


def test_numbers_beyond_the_double_range_compare_as_infinity_or_zero(session, tenant):
    huge = make_user(session, tenant, "huge")
    make_user(session, tenant, "small", attributes={"x": 5})
    tiny = make_user(session, tenant, "tiny")
    minus = make_user(session, tenant, "minus")
    for user, number in ((huge, "1" + "0" * 400), (tiny, "1e-400"), (minus, "-1e400")):
        session.execute(sa.text("UPDATE users SET attributes = CAST(:doc AS jsonb) WHERE id = :id"),
                        {"doc": f'{{"x": {number}}}', "id": user.id})
    session.expire_all()
    assert select(session, tenant, "attr.x > " + "9" * 308) == {"huge"}
    assert select(session, tenant, "attr.x < -1000") == {"minus"}
    assert select(session, tenant, "attr.x = 0") == {"tiny"}
    assert select(session, tenant, "attr.x between 0 and 10") == {"small", "tiny"}


def test_attribute_text_is_ordered_by_code_point_and_matched_case_sensitively(session, tenant):
    for name in ("Zebra", "apple", "éclair", "Berlin", "berlin"):
        make_user(session, tenant, name, attributes={"s": name})
    make_user(session, tenant, "number", attributes={"s": 5})
    assert select(session, tenant, 'attr.s < "a"') == {"Zebra", "Berlin"}
    assert select(session, tenant, 'attr.s >= "b"') == {"éclair", "berlin"}
    assert select(session, tenant, 'attr.s contains "erl"') == {"Berlin", "berlin"}
    assert select(session, tenant, 'attr.s contains "ERL"') == set()
    assert select(session, tenant, 'attr.s starts_with "B"') == {"Berlin"}
    assert select(session, tenant, 'attr.s starts_with ""') == {"Zebra", "apple", "éclair", "Berlin",
                                                             "berlin"}
    assert select(session, tenant, 'attr.s != "apple"') == {"Zebra", "éclair", "Berlin", "berlin"}


def test_attribute_booleans(session, tenant):
    make_user(session, tenant, "yes", attributes={"vip": True})
    make_user(session, tenant, "no", attributes={"vip": False})
    make_user(session, tenant, "text", attributes={"vip": "true"})
    make_user(session, tenant, "none")
    assert select(session, tenant, "attr.vip = true") == {"yes"}
    assert select(session, tenant, "attr.vip != true") == {"no"}
    assert select(session, tenant, "attr.vip = false") == {"no"}
    assert select(session, tenant, "not attr.vip = true") == {"no", "text", "none"}


def test_profile_text_fields(session, tenant):
    make_user(session, tenant, "us-paris", country="US", city="Paris", language="en")
    make_user(session, tenant, "fr-paris", country="FR", city="paris", language="fr")
    make_user(session, tenant, "nowhere")
    assert select(session, tenant, 'country = "us"') == {"us-paris"}
    assert select(session, tenant, 'country != "US"') == {"fr-paris"}
    assert select(session, tenant, 'not country = "US"') == {"fr-paris", "nowhere"}
    assert select(session, tenant, 'city = "Paris"') == {"us-paris"}
    assert select(session, tenant, 'city < "a"') == {"us-paris"}
    assert select(session, tenant, 'country in ("fr", "de")') == {"fr-paris"}
    assert select(session, tenant, 'language between "de" and "en"') == {"us-paris"}
    assert select(session, tenant, 'city contains "ari"') == {"us-paris", "fr-paris"}
    assert select(session, tenant, 'city starts_with "P"') == {"us-paris"}
    assert select(session, tenant, "city exists") == {"us-paris", "fr-paris"}
    assert select(session, tenant, 'country starts_with "f"') == {"fr-paris"}


def test_timestamps(session, tenant):
    make_user(session, tenant, "new", created_at=NOW - DAY, last_seen_at=NOW)
    make_user(session, tenant, "old", created_at=NOW - 40 * DAY, last_seen_at=NOW - 20 * DAY)
    make_user(session, tenant, "never-seen", created_at=NOW - 7 * DAY)
    assert select(session, tenant, "created_at > 7d ago") == {"new"}
    assert select(session, tenant, "created_at >= 7d ago") == {"new", "never-seen"}
    assert select(session, tenant, "created_at < 1w ago") == {"old"}
    assert select(session, tenant, 'created_at >= "2025-03-03T14:37:12Z"') == {"new", "never-seen"}
    assert select(session, tenant, 'created_at < "2025-03-03"') == {"old"}
    assert select(session, tenant, 'created_at >= "2025-03-03T15:37:12+01:00"') == {"new", "never-seen"}
    assert select(session, tenant, "created_at between 30d ago and 1d ago") == {"new", "never-seen"}
    assert select(session, tenant, "last_seen_at < 1d ago") == {"old"}
    assert select(session, tenant, "not last_seen_at > 1d ago") == {"old", "never-seen"}
    assert select(session, tenant, "last_seen_at exists") == {"new", "old"}


def test_local_hour_uses_each_users_zone_and_utc_without_one(session, tenant):
    # At NOW (14:37 UTC, 10 March 2025): Kolkata 20:07, New York 10:37 (EDT), Chatham 04:22.
    make_user(session, tenant, "kolkata", timezone="Asia/Kolkata")
    make_user(session, tenant, "new-york", timezone="America/New_York")
    make_user(session, tenant, "chatham", timezone="Pacific/Chatham")
    make_user(session, tenant, "no-zone")
    make_user(session, tenant, "bad-zone", timezone="Mars/Base")
    assert select(session, tenant, "local_hour = 14") == {"no-zone"}
    assert select(session, tenant, "local_hour >= 20") == {"kolkata"}
    assert select(session, tenant, "local_hour between 4 and 10") == {"new-york", "chatham"}
    assert select(session, tenant, "local_hour in (10, 20)") == {"new-york", "kolkata"}
    assert select(session, tenant, "local_hour != 14") == {"kolkata", "new-york", "chatham"}
    assert select(session, tenant, "not local_hour exists") == {"bad-zone"}


def test_opt_in_flags(session, tenant):
    make_user(session, tenant, "sms", sms_opt_in=True, push_opt_in=False)
    make_user(session, tenant, "push", sms_opt_in=False, push_opt_in=True)
    assert select(session, tenant, "sms_opt_in = true") == {"sms"}
    assert select(session, tenant, "sms_opt_in != true") == {"push"}
    assert select(session, tenant, "push_opt_in = false or sms_opt_in = false") == {"sms", "push"}


def test_device_fields_match_when_any_device_matches(session, tenant):
    make_user(session, tenant, "both", devices=[
        {"platform": "ios", "device_type": "phone", "os_version": "17.1", "app_version": "3.10.0"},
        {"platform": "android", "device_type": "tablet", "os_version": "14", "app_version": "3.2"}])
    make_user(session, tenant, "old-ios", devices=[
        {"platform": "ios", "os_version": "16", "app_version": "3.9"}])
    make_user(session, tenant, "beta", devices=[{"platform": "web", "app_version": "beta"}])
    make_user(session, tenant, "no-device")
    assert select(session, tenant, 'platform = "ios"') == {"both", "old-ios"}
    assert select(session, tenant, 'platform = "android" and platform = "ios"') == {"both"}
    assert select(session, tenant, 'not platform = "ios"') == {"beta", "no-device"}
    assert select(session, tenant, 'platform != "ios"') == {"both", "beta"}
    assert select(session, tenant, 'app_version > "3.9"') == {"both"}  # 3.10 > 3.9
    assert select(session, tenant, 'app_version = "3.2.0"') == {"both"}
    assert select(session, tenant, 'app_version != "3.9"') == {"both"}  # "beta" is no version
    assert select(session, tenant, 'app_version in ("3.9", "4")') == {"old-ios"}
    assert select(session, tenant, 'os_version between "16" and "17"') == {"old-ios"}
    assert select(session, tenant, "app_version exists") == {"both", "old-ios", "beta"}
    assert select(session, tenant, 'device_type contains "abl"') == {"both"}


def test_did_counts_and_windows(session, tenant):
    make_user(session, tenant, "thrice", events=[
        {"name": "purchase", "time": NOW - 1 * DAY, "properties": {"amount": 80}},
        {"name": "purchase", "time": NOW - 10 * DAY, "properties": {"amount": 20}},
        {"name": "purchase", "time": NOW - 40 * DAY, "properties": {"amount": 60, "sku": "b"}}])
    make_user(session, tenant, "once", events=[
        {"name": "purchase", "time": NOW - 7 * DAY, "properties": {"amount": "80"}},
        {"name": "open", "time": NOW}])
    make_user(session, tenant, "opener", events=[{"name": "open", "time": NOW - DAY}])
    make_user(session, tenant, "nothing")
    assert select(session, tenant, 'did "purchase"') == {"thrice", "once"}
    assert select(session, tenant, 'not did "purchase"') == {"opener", "nothing"}
    assert select(session, tenant, 'did "purchase" >= 2 times') == {"thrice"}
    assert select(session, tenant, 'did "purchase" in last 7d') == {"thrice", "once"}  # inclusive
    assert select(session, tenant, 'did "purchase" >= 2 times in last 30d') == {"thrice"}
    assert select(session, tenant, 'did "purchase" > 1 times in last 7d') == set()
    # Counts zero satisfies include people who never did it at all.
    assert select(session, tenant, 'did "purchase" < 2 times') == {"once", "opener", "nothing"}
    assert select(session, tenant, 'did "purchase" = 0 times') == {"opener", "nothing"}
    assert select(session, tenant, 'did "purchase" <= 1 times in last 30d') == {"once", "opener",
                                                                            "nothing"}
    assert select(session, tenant, 'did "purchase" >= 0 times') == {"thrice", "once", "opener",
                                                                 "nothing"}
    assert select(session, tenant, 'did "purchase" = 1 times') == {"once"}
    # `where` filters events by their properties, typed like attributes.
    assert select(session, tenant, 'did "purchase" where (amount > 50)') == {"thrice"}
    assert select(session, tenant, 'did "purchase" where (amount > 50) >= 2 times') == {"thrice"}
    assert select(session, tenant, 'did "purchase" where (amount > 50) in last 30d') == {"thrice"}
    assert select(session, tenant, 'did "purchase" where (amount = "80")') == {"once"}
    assert select(session, tenant, 'did "purchase" where (not sku exists) = 2 times') == {"thrice"}
    assert select(session, tenant, 'did "purchase" where (amount < 50) < 1 times') == {
        "once", "opener", "nothing"}


def test_near(session, tenant):
    make_user(session, tenant, "manhattan", lat=40.7831, lon=-73.9712)       # ~8 km
    make_user(session, tenant, "newark", lat=40.7357, lon=-74.1724)          # ~15 km
    make_user(session, tenant, "philadelphia", lat=39.9526, lon=-75.1652)    # ~130 km
    make_user(session, tenant, "no-location")
    make_user(session, tenant, "lat-only", lat=40.71)
    assert select(session, tenant, "near(40.71, -74.0, 10km)") == {"manhattan"}
    assert select(session, tenant, "near(40.71, -74.0, 10mi)") == {"manhattan", "newark"}
    assert select(session, tenant, "near(40.71, -74.0, 200km)") == {"manhattan", "newark",
                                                                "philadelphia"}
    assert select(session, tenant, "not near(40.71, -74.0, 10km)") == {
        "newark", "philadelphia", "no-location", "lat-only"}
    assert select(session, tenant, "near(0, 0, 20100km)") == {"manhattan", "newark", "philadelphia"}


def test_near_across_the_antimeridian_and_the_poles(session, tenant):
    make_user(session, tenant, "fiji-east", lat=0.0, lon=-179.95)   # ~17 km from (0, 179.9)
    make_user(session, tenant, "fiji-west", lat=0.0, lon=179.7)     # ~22 km
    make_user(session, tenant, "over-the-pole", lat=89.9, lon=-170.0)  # ~22 km from (89.9, 10)
    make_user(session, tenant, "pole", lat=90.0, lon=0.0)
    assert select(session, tenant, "near(0, 179.9, 25km)") == {"fiji-east", "fiji-west"}
    assert select(session, tenant, "near(0, 179.9, 20km)") == {"fiji-east"}
    assert select(session, tenant, "near(89.9, 10, 25km)") == {"over-the-pole", "pole"}


def test_near_with_tiny_coordinates_and_differences(session, tenant):
    """PostgreSQL errors where a product of nonzero doubles underflows to 0 (found by
    test_sql_and_memory_agree_on_fresh_people): tiny latitudes and differences are taken as 0 on
    both sides (see Haversine), so such people never break a query."""
    for name, lat, lon in [("tiny-lat", 1e-200, 179.9), ("subnormal", 5e-324, 179.9), ("a-hair-off", 5e-324, 179.9 + 5e-14),
                           ("near-equal", 1e-120, 0.0), ("origin", 0.0, 0.0)]:
        make_user(session, tenant, name, lat=lat, lon=lon)
    for text, want in [("near(0, 179.9, 0km)", {"tiny-lat", "subnormal"}), ("near(0, 0, 0km)", {"near-equal", "origin"}),
                       ("near(0, 0, 1km)", {"near-equal", "origin"}), ("near(90, 0, 0km)", set())]:
        assert select(session, tenant, text) == want, text  # select checks the memory side agrees


def _destination(lat: float, lon: float, bearing: float, km: float) -> tuple[float, float]:
    """The point `km` away from (lat, lon) along `bearing` degrees, on the same sphere."""
    d = km / EARTH_RADIUS_KM
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing)
    phi2 = math.asin(max(-1.0, min(1.0, math.sin(phi) * math.cos(d)
                                   + math.cos(phi) * math.sin(d) * math.cos(theta))))
    lam2 = lam + math.atan2(math.sin(theta) * math.sin(d) * math.cos(phi),
                            math.cos(d) - math.sin(phi) * math.sin(phi2))
    lon2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return math.degrees(phi2), lon2


@settings(max_examples=1000, deadline=None)
@given(lat0=st.floats(-90, 90), lon0=st.floats(-180, 180),
       km=st.one_of(st.floats(0, 25000), st.sampled_from([0.001, 1, 25, 500])),
       bearing=st.floats(0, 360), fraction=st.floats(0.98, 1.0))
def test_the_bounding_box_never_drops_a_point_the_distance_keeps(lat0, lon0, km, bearing, fraction):
    geo = Haversine(Near(lat0, lon0, km, "km"))
    lat, lon = _destination(lat0, lon0, bearing, km * fraction)
    if geo.matches(lat, lon) and not geo.everywhere:
        assert geo.lat_box[0] <= lat <= geo.lat_box[1]
        if geo.lon_box is not None:
            assert geo.lon_box[0] <= lon <= geo.lon_box[1]


def test_segment_references_and_boolean_structure(session, tenant):
    make_user(session, tenant, "us-buyer", country="US", events=[{"name": "purchase", "time": NOW}])
    make_user(session, tenant, "us", country="US")
    make_user(session, tenant, "de-buyer", country="DE", events=[{"name": "purchase", "time": NOW}])
    segments = {"buyers": 'did "purchase"', "americans": 'country = "US"',
                "american buyers": 'segment("buyers") and segment("americans")'}
    assert select(session, tenant, 'segment("american buyers")', segments) == {"us-buyer"}
    assert select(session, tenant, 'segment("americans") or segment("buyers")', segments) == {
        "us-buyer", "us", "de-buyer"}
    assert select(session, tenant, 'not (segment("americans") and not segment("buyers"))',
                  segments) == {"us-buyer", "de-buyer"}


def test_every_literal_is_a_bind_parameter(session, tenant):
    evil = "x'); DROP TABLE users; --"
    text = (f'attr.name = "{evil}" or city contains "{evil}" or did "{evil}" where (k = "{evil}") '
            f'or platform starts_with "{evil}"')
    node = parse(text)
    sql = str(select_user_ids(node, app_id=tenant.id, now=NOW, dialect="postgresql")
              .compile(dialect=pg_dialect.dialect()))
    assert "DROP" not in sql
    assert select(session, tenant, text) == set()


def test_unresolved_references_are_refused():
    with pytest.raises(ValueError):
        user_condition(parse('segment("x")'), app_id=1, now=NOW, dialect="postgresql")
    with pytest.raises(ValueError):
        user_condition(parse('country = "US"'), app_id=1, now=NOW.replace(tzinfo=None),
                       dialect="postgresql")


def test_the_condition_composes_with_other_queries(session, tenant):
    make_user(session, tenant, "a", country="US")
    make_user(session, tenant, "b", country="US")
    cond = user_condition(parse('country = "US"'), app_id=tenant.id, now=NOW, dialect="postgresql")
    users = User.__table__
    count = session.scalar(sa.select(sa.func.count()).select_from(users)
                           .where(users.c.app_id == tenant.id, cond, users.c.external_id != "a"))
    assert count == 1


# ---- SQLite: the same compiler runs on the embedded default -------------------------------------

def test_the_compiler_runs_on_sqlite(tmp_path):
    from tests.segments.query_strategies import NOW as POP_NOW
    from tests.segments.query_strategies import insert_people, read_profiles

    engine = sqlite_engine(tmp_path / "tidings.db")
    people = [
        {"attributes": {"age": 30, "s": "Berlin", "vip": True}, "language": "en",
         "timezone": "Asia/Kolkata", "country": "US", "region": None, "city": "Berlin",
         "lat": 40.78, "lon": -73.97, "sms_opt_in": True, "push_opt_in": False,
         "created_at": POP_NOW - DAY, "last_seen_at": POP_NOW,
         "devices": [{"platform": "ios", "device_type": "phone", "os_version": "17.1",
                      "app_version": "3.10"}],
         "events": [{"name": "purchase", "time": POP_NOW - DAY, "properties": {"amount": 80}},
                    {"name": "purchase", "time": POP_NOW - 2 * DAY, "properties": {"amount": 8}}]},
        {"attributes": {"age": "30", "vip": False}, "language": None, "timezone": None,
         "country": None, "region": None, "city": None, "lat": None, "lon": None,
         "sms_opt_in": False, "push_opt_in": True, "created_at": POP_NOW - 30 * DAY,
         "last_seen_at": None, "devices": [], "events": []},
    ]
    queries = {
        "attr.age = 30 and attr.s contains \"erl\" and attr.vip = true": {0},
        "attr.age != 30": set(),
        "attr.vip != true": {1},
        'attr.age = "30"': {1},
        'city starts_with "Ber" and country = "us"': {0},
        "created_at > 7d ago and last_seen_at exists": {0},
        "local_hour = 20": {0},
        "local_hour = 14": {1},
        'app_version > "3.9" and platform = "ios"': {0},
        'not platform = "ios"': {1},
        'did "purchase" where (amount > 50) in last 7d': {0},
        'did "purchase" >= 2 times': {0},
        'did "purchase" < 2 times': {1},
        "near(40.71, -74.0, 10km)": {0},
        "sms_opt_in = true or push_opt_in = true": {0, 1},
    }
    try:
        with engine.begin() as conn:
            app_id = conn.execute(sa.text(
                "INSERT INTO apps (name, server_key_hash, client_key_hash, server_key_hint, "
                "client_key_hint, settings, created_at) VALUES ('a', 's', 'c', '', '', '{}', "
                "'2025-01-01') RETURNING id")).scalar_one()
            ids = insert_people(conn, app_id, people)
        with engine.connect() as conn:
            profiles = read_profiles(conn, app_id)
            for text, expected in queries.items():
                node = parse(text)
                got = set(conn.execute(select_user_ids(node, app_id=app_id, now=POP_NOW,
                                                       dialect="sqlite")).scalars())
                assert got == {ids[i] for i in expected}, text
                predicate = compile_predicate(node, POP_NOW)
                assert got == {i for i, p in profiles.items() if predicate(p)}, text
    finally:
        engine.dispose()
