"""The `tidings` command as an installed console script, on PostgreSQL and on the SQLite default."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def tidings(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "tidings.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture
def pg_env(clean_db, database_url):
    return {"DATABASE_URL": database_url, "REDIS_URL": ""}


def test_apps_create_prints_keys_once(pg_env, client):
    out = json.loads(tidings("apps", "create", "Shop", env=pg_env).stdout)
    assert set(out) == {"app_id", "server_key", "client_key"}

    r = client.put("/api/v1/users/u1", json={}, headers={"Authorization": f"Bearer {out['server_key']}"})
    assert r.status_code in (200, 201) and r.json["id"] == "u1"


def test_events_rollup_sums_what_is_stored(pg_env, client):
    out = json.loads(tidings("apps", "create", "Shop", env=pg_env).stdout)
    headers = {"Authorization": f"Bearer {out['server_key']}"}
    r = client.post("/api/v1/events", headers=headers, json={"events": [
        {"user": "u1", "name": "open"}, {"user": "u1", "name": "open"}, {"user": "u2", "name": "buy"}]})
    assert r.status_code in (200, 202), r.json
    rolled = json.loads(tidings("events", "rollup", env=pg_env).stdout)
    assert rolled["upto"] is not None and rolled["events"] >= 3
    again = json.loads(tidings("events", "rollup", env=pg_env).stdout)
    assert again == {"upto": rolled["upto"], "events": 0}


def test_users_create_and_duplicate(pg_env):
    out = json.loads(tidings("users", "create", "Ann@Example.com", "--role", "marketer",
                             "--password", "correct horse", env=pg_env).stdout)
    assert out["email"] == "ann@example.com" and out["role"] == "marketer"
    dup = tidings("users", "create", "ann@example.com", "--role", "viewer", "--password", "x" * 9,
                  env=pg_env, check=False)
    assert dup.returncode == 2 and "exists" in dup.stderr


def test_sqlite_default_upgrade_and_demo(tmp_path):
    env = {"DATABASE_URL": "", "REDIS_URL": "", "TIDINGS_INSTANCE_PATH": str(tmp_path)}
    tidings("db", "upgrade", env=env)
    out = json.loads(tidings("demo", "--users", "150", env=env).stdout)
    assert out["created"] and out["server_key"] and (tmp_path / "tidings.sqlite").exists()
    import sqlite3

    with sqlite3.connect(tmp_path / "tidings.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM segments").fetchone()[0] >= 5
        assert conn.execute("SELECT count(*) FROM hooks").fetchone()[0] >= 3
        statuses = dict(conn.execute("SELECT channel, status FROM campaigns").fetchall())
        assert statuses["inapp"] == statuses["config"] == "running" and {"sms", "push"} <= set(statuses)
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] > 100
    again = json.loads(tidings("demo", "--users", "150", env=env).stdout)
    assert not again["created"] and again["server_key"] != out["server_key"]
    assert json.loads(tidings("events", "rollup", env=env).stdout)["upto"] is None  # PostgreSQL only


def test_worker_needs_redis(tmp_path):
    proc = tidings("worker", "--burst", env={"REDIS_URL": "", "TIDINGS_INSTANCE_PATH": str(tmp_path)}, check=False)
    assert proc.returncode == 2 and "REDIS_URL" in proc.stderr


def test_worker_process_runs_an_import_job(pg_env, redis_url, redis_conn, client, api):
    """A plain `tidings worker --burst` (a fresh process) can run every job, e.g. a CSV import."""
    import io

    r = api.post("/imports/users", data={"file": (io.BytesIO(b"external_id,country\nw1,US\n"), "u.csv")},
                 content_type="multipart/form-data")
    assert r.status_code == 202
    tidings("worker", "--burst", env={**pg_env, "REDIS_URL": redis_url})
    assert api.get(f"/imports/{r.json['id']}").json["status"] == "finished"
