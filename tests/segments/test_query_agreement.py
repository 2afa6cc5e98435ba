"""SQL and in-memory evaluation of segment queries select exactly the same people.

Random queries (generated as ASTs, printed with to_text and re-parsed) run against random
people stored in the real PostgreSQL database (and, in a smaller run, SQLite): the rows
`select_user_ids` returns must be exactly the profiles `compile_predicate` accepts.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.models import User
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

    def __init__(self, engine: sa.Engine, app_id: int, profiles: dict):
        self.engine, self.app_id, self.profiles = engine, app_id, profiles

    def __repr__(self) -> str:
        return f"<Population of {len(self.profiles)} in app {self.app_id}>"


def _check(conn: sa.Connection, app_id: int, profiles: dict, node, dialect: str) -> None:
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
    assert selected == expected, (
        f"query: {to_text(node)}\n"
        f"only SQL: {[profiles[i] for i in selected - expected]}\n"
        f"only memory: {[profiles[i] for i in expected - selected]}")


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
    return Population(clean_db, app_id, profiles)


@settings(max_examples=500, **SETTINGS)
@given(query=queries)
def test_sql_and_memory_agree_on_a_fixed_population(population, query):
    engine, app_id, profiles = population.engine, population.app_id, population.profiles
    node = parse(to_text(query))
    with engine.connect() as conn:
        _check(conn, app_id, profiles, node, "postgresql")


@settings(max_examples=120, **SETTINGS)
@given(people=st.randoms(use_true_random=False), size=st.integers(1, 10),
       query_list=st.lists(queries, min_size=1, max_size=3))
def test_sql_and_memory_agree_on_fresh_people(clean_db, people, size, query_list):
    """New people every example, each read through load_profile (which loads only the events
    the query needs, inside its widest window)."""
    with clean_db.begin() as conn:
        conn.execute(sa.delete(App.__table__))
        app_id = _make_app(conn, "fresh")
        insert_people(conn, app_id, [random_person(people) for _ in range(size)])
    with clean_db.connect() as conn, sa.orm.Session(bind=conn) as session:
        for query in query_list:
            node = parse(to_text(query))
            profiles = {u.id: load_profile(session, u, node, NOW)
                        for u in session.scalars(sa.select(User).where(User.app_id == app_id))}
            _check(conn, app_id, profiles, node, "postgresql")


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
