"""Shared fixtures: a real PostgreSQL database and a real Redis, cleaned around every test.

`TIDINGS_TEST_DATABASE_URL` / `TIDINGS_TEST_REDIS_URL` point elsewhere; the defaults are the
services every machine of ours runs. The schema is built once per run through the Alembic
migrations (so they are tested too), then every test starts from empty tables.
"""

from __future__ import annotations

import os

import pytest
import redis as redis_lib
import sqlalchemy as sa

from tidings import db, migrate
from tidings.schema import metadata

DATABASE_URL = os.environ.get("TIDINGS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def database_url() -> str:
    return DATABASE_URL


@pytest.fixture(scope="session")
def engine(database_url):
    from tidings.config import normalize_database_url

    url = normalize_database_url(database_url)
    eng = db.configure(url)
    with eng.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    migrate.upgrade(url)
    yield eng
    eng.dispose()


def truncate_all(eng: sa.Engine) -> None:
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_db(engine):
    """Empty tables before the test (and after, so a failing test leaves nothing behind)."""
    truncate_all(engine)
    yield engine
    truncate_all(engine)


@pytest.fixture
def session(clean_db):
    with db.SessionFactory() as s:
        yield s


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_conn(redis_url):
    conn = redis_lib.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()
