"""SQL and in-memory evaluation of segment queries select exactly the same people.

Random queries (generated as ASTs, printed with to_text and re-parsed) run against random
people stored in the real PostgreSQL database (and, in a smaller run, SQLite): the rows
`select_user_ids` returns must be exactly the profiles `compile_predicate` accepts. On
PostgreSQL part of the events is summed into the event rollups first, and the SQL must agree
both reading events alone and reading the rollups plus the events after their mark.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import rollups
from segments.models import Event, User
from segments.query import (
    compile_predicate, load_profile, parse, select_user_ids, to_text, user_condition,
)
from tests.segments.query_strategies import (
    NOW, insert_people, queries, random_person, read_profiles,
)
from tidings.models import App

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


def _make_app(conn: sa.Connection, name: str) -> int:
    return conn.execute(sa.insert(App.__table__).values(
        name=name, server_key_hash=name + "s", client_key_hash=name + "c", server_key_hint="",
        client_key_hint="", settings={}, created_at=NOW).returning(App.__table__.c.id)).scalar_one()


class Population:
    """People stored in one app, and their Profiles as read back (short repr for Hypothesis)."""

    def __init__(self, engine: sa.Engine, app_id: int, profiles: dict, mark: int | None = None):
        self.engine, self.app_id, self.profiles, self.mark = engine, app_id, profiles, mark

    def __repr__(self) -> str:
        return f"<Population of {len(self.profiles)} in app {self.app_id}>"


def _check(conn: sa.Connection, app_id: int, profiles: dict, node, dialect: str,
           mark: int | None = None) -> None:
    selected = set(conn.execute(select_user_ids(node, app_id=app_id, now=NOW, dialect=dialect))
                   .scalars())
    predicate = compile_predicate(node, NOW)
    expected = {uid for uid, profile in profiles.items() if predicate(profile)}
    # The plain condition (what callers compose into their own queries) agrees too.
    users = User.__table__
    plain = set(conn.execute(sa.select(users.c.id).where(
        users.c.app_id == app_id,
        user_condition(node, app_id=app_id, now=NOW, dialect=dialect))).scalars())
    assert plain == selected, to_text(node)
    if mark is not None:  # the same through the rollups
        rolled = conn.execute(select_user_ids(node, app_id=app_id, now=NOW, dialect=dialect,
                                              rolled_up_to=mark)).scalars().all()
        assert len(rolled) == len(set(rolled)), f"a person selected twice: {to_text(node)}"
        assert set(rolled) == selected, f"with rollups to {mark}: {to_text(node)}"
        plain_rolled = set(conn.execute(sa.select(users.c.id).where(
            users.c.app_id == app_id, user_condition(node, app_id=app_id, now=NOW, dialect=dialect,
                                                     rolled_up_to=mark))).scalars())
        assert plain_rolled == selected, f"condition with rollups to {mark}: {to_text(node)}"
    assert selected == expected, (
        f"query: {to_text(node)}\n"
        f"only SQL: {[profiles[i] for i in selected - expected]}\n"
        f"only memory: {[profiles[i] for i in expected - selected]}")


def _roll_up_part(engine: sa.Engine, fraction: float) -> int:
    """Sum the events stored so far, up to `fraction` of the way through their ids, into the
    rollups; returns the mark."""
    events = Event.__table__
    with engine.connect() as conn:
        ids = conn.execute(sa.select(events.c.id).order_by(events.c.id)).scalars().all()
    upto = ids[min(len(ids) - 1, int(len(ids) * fraction))] if ids else 0
    mark = rollups.roll_up(engine, upto=upto)["upto"]
    assert mark is not None
    return mark


@pytest.fixture
def population(clean_db):
    """~60 random people in one app, plus a decoy app whose people must never be selected."""
    rnd = random.Random(20250310)
    with clean_db.begin() as conn:
        app_id = _make_app(conn, "agreement")
        insert_people(conn, app_id, [random_person(rnd) for _ in range(64)])
        decoy = _make_app(conn, "decoy")
        insert_people(conn, decoy, [random_person(rnd) for _ in range(8)])
    with clean_db.connect() as conn:
        profiles = read_profiles(conn, app_id)
    return Population(clean_db, app_id, profiles, _roll_up_part(clean_db, 0.5))


@settings(max_examples=500, **SETTINGS)
@given(query=queries)
def test_sql_and_memory_agree_on_a_fixed_population(population, query):
    engine, app_id, profiles = population.engine, population.app_id, population.profiles
    node = parse(to_text(query))
    with engine.connect() as conn:
        _check(conn, app_id, profiles, node, "postgresql", population.mark)


@settings(max_examples=120, **SETTINGS)
@given(people=st.randoms(use_true_random=False), size=st.integers(1, 10),
       query_list=st.lists(queries, min_size=1, max_size=3), rolled=st.floats(0, 1))
def test_sql_and_memory_agree_on_fresh_people(clean_db, people, size, query_list, rolled):
    """New people every example, each read through load_profile (which loads only the events
    the query needs, inside its widest window); a random part of their events rolled up."""
    with clean_db.begin() as conn:
        conn.execute(sa.delete(App.__table__))
        app_id = _make_app(conn, "fresh")
        insert_people(conn, app_id, [random_person(people) for _ in range(size)])
    mark = _roll_up_part(clean_db, rolled)
    with clean_db.connect() as conn, sa.orm.Session(bind=conn) as session:
        for query in query_list:
            node = parse(to_text(query))
            profiles = {u.id: load_profile(session, u, node, NOW)
                        for u in session.scalars(sa.select(User).where(User.app_id == app_id))}
            _check(conn, app_id, profiles, node, "postgresql", mark)


LAPSED = [
    'did "open" and not did "open" in last 7d',
    'did "open" in last 30d and not did "open" in last 1d',
    'did "open" and did "open" in last 400d and not did "open" in last 30d and not did "open" in last 2h',
    'not did "open" in last 7d and did "open"',
    'did "open" and not did "open"',
    'did "open" and not did "Purchase" in last 30d and (did "purchase" or not did "open" in last 1d)',
    'country = "US" and did "open" and not did "open" in last 7d or did "purchase" in last 2d',
]


@pytest.mark.parametrize("rolled", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("text", LAPSED)
def test_lapsed_people_agree_through_the_rollups(population, text, rolled):
    """The range over last_at that `did X and not did X in last d` becomes, with rollups that
    cover none, part or all of the events."""
    with population.engine.begin() as conn:  # start the rollups over
        conn.execute(sa.delete(rollups.rollups))
        conn.execute(sa.delete(rollups.marks))
    mark = _roll_up_part(population.engine, rolled)
    with population.engine.connect() as conn:
        _check(conn, population.app_id, population.profiles, parse(text), "postgresql", mark)


@pytest.fixture
def sqlite_population(tmp_path):
    from tests.segments.test_query_sql import sqlite_engine

    engine = sqlite_engine(tmp_path / "agreement.db")
    rnd = random.Random(7)
    with engine.begin() as conn:
        app_id = _make_app(conn, "agreement")
        insert_people(conn, app_id, [random_person(rnd) for _ in range(48)])
    with engine.connect() as conn:
        profiles = read_profiles(conn, app_id)
    yield Population(engine, app_id, profiles)
    engine.dispose()


@settings(max_examples=200, **SETTINGS)
@given(query=queries)
def test_sql_and_memory_agree_on_sqlite(sqlite_population, query):
    engine, app_id, profiles = (sqlite_population.engine, sqlite_population.app_id,
                                sqlite_population.profiles)
    node = parse(to_text(query))
    with engine.connect() as conn:
        _check(conn, app_id, profiles, node, "sqlite")
