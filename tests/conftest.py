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
    ensure_database(url)
    eng = db.configure(url)
    with eng.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    migrate.upgrade(url)
    yield eng
    eng.dispose()


def ensure_database(url: str) -> None:
    """Create the test database when it does not exist (lets parallel runs use their own)."""
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def truncate_all(eng: sa.Engine) -> None:
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))


@pytest.fixture
def clean_db(engine):
    """Empty tables before the test (and after, so a failing test leaves nothing behind).

    Ids are not restarted, so per-process caches keyed by ids (compiled campaigns, pull
    snapshots) never see an old id reused, as in production.
    """
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


@pytest.fixture
def import_helper_pids(monkeypatch) -> set[int]:
    """The pids of the helper processes CSV imports start (filled in as they get work)."""
    import concurrent.futures

    from segments import imports

    pids: set[int] = set()

    class Recording(concurrent.futures.ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            future = super().submit(fn, *args, **kwargs)
            pids.update(p.pid for p in self._processes.values())
            return future

    monkeypatch.setattr(imports, "ProcessPoolExecutor", Recording)
    return pids


@pytest.fixture
def settings(database_url, redis_url, tmp_path):
    from tidings.config import Settings

    return Settings.from_env({}, database_url=database_url, redis_url=redis_url,
                             instance_path=str(tmp_path / "instance"), secret_key="test-secret")


@pytest.fixture
def app(clean_db, redis_conn, settings):
    from tidings.app import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """A test client bound to one app's key: `api.put("/users/u1", json={...})`."""

    def __init__(self, client, app_id: int, key: str):
        self.client, self.app_id, self.key = client, app_id, key

    def _call(self, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return self.client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self._call("GET", path, **kw)

    def post(self, path, **kw):
        return self._call("POST", path, **kw)

    def put(self, path, **kw):
        return self._call("PUT", path, **kw)

    def delete(self, path, **kw):
        return self._call("DELETE", path, **kw)

    def with_key(self, key: str) -> "Api":
        return Api(self.client, self.app_id, key)


@pytest.fixture
def app_keys(app):
    """A fresh app: (app_id, server_key, client_key)."""
    from tidings.apps import create_app_record
    from tidings.db import session_scope

    with session_scope() as session:
        record, server_key, client_key = create_app_record(session, "Test app")
        return record.id, server_key, client_key


@pytest.fixture
def api(client, app_keys) -> Api:
    app_id, server_key, _ = app_keys
    return Api(client, app_id, server_key)


@pytest.fixture
def client_api(client, app_keys) -> Api:
    app_id, _, client_key = app_keys
    return Api(client, app_id, client_key)


@pytest.fixture
def other_api(client, app) -> Api:
    """A second app, to check that one app never sees another's objects."""
    from tidings.apps import create_app_record
    from tidings.db import session_scope

    with session_scope() as session:
        record, server_key, _ = create_app_record(session, "Other app")
        return Api(client, record.id, server_key)


@pytest.fixture
def run_jobs(app):
    """Drain the RQ queues with a real SimpleWorker in burst mode."""
    from scheduler import queues

    def run() -> None:
        queues.make_worker().work(burst=True, with_scheduler=False, logging_level="WARNING")

    return run
