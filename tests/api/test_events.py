"""POST /events: batches, dedupe by client id, unknown users, last_seen_at."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from sqlalchemy.orm import Session

from segments.models import Event, User
from tidings.db import session_scope


def events_of(external_id):
    with session_scope() as s:
        return s.execute(
            sa.select(Event.name, Event.time, Event.properties).join(User, User.id == Event.user_id)
            .where(User.external_id == external_id).order_by(Event.time)
        ).all()


def test_events_create_unknown_users_and_answer_202(client_api):
    r = client_api.post("/events", json={"events": [
        {"user": "new", "name": "purchase", "properties": {"amount": 12.5}, "time": "2026-01-02T03:04:05Z"}]})
    assert r.status_code == 202 and r.json == {"accepted": 1}
    [(name, time, props)] = events_of("new")
    assert name == "purchase" and props == {"amount": 12.5}
    assert time == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_retried_event_ids_are_stored_once(api):
    batch = {"events": [{"user": "u", "name": "open", "id": "e1"}, {"user": "u", "name": "open", "id": "e1"}]}
    assert api.post("/events", json=batch).json == {"accepted": 2}
    assert api.post("/events", json=batch).status_code == 202
    assert len(events_of("u")) == 1


def test_last_seen_follows_newest_event(api):
    api.post("/events", json={"events": [{"user": "u", "name": "a", "time": "2026-01-02T00:00:00Z"}]})
    api.post("/events", json={"events": [{"user": "u", "name": "b", "time": "2026-01-01T00:00:00Z"}]})
    assert api.get("/users/u").json["last_seen_at"].startswith("2026-01-02T00:00:00")


def test_invalid_event_rejects_the_whole_batch(api):
    r = api.post("/events", json={"events": [{"user": "u", "name": "ok"}, {"user": "u", "name": ""}]})
    assert r.status_code == 422 and r.json["error"]["details"]["index"] == 1
    assert r.json["error"]["details"]["field"] == "name"
    r = api.post("/events", json={"events": [{"user": "u", "name": "ok", "time": "yesterday"}]})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "time"
    assert events_of("u") == []


def test_events_far_in_the_future_are_refused(api):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    assert api.post("/events", json={"events": [{"user": "u", "name": "x", "time": later}]}).status_code == 422


def test_a_nul_anywhere_in_a_batch_is_refused_however_the_body_is_encoded(api):
    """The fast path skips its NUL checks for a body that cannot hold one; these bodies can."""
    for event in ({"user": "u", "name": "a\x00"}, {"user": "u", "name": "a", "id": "e\x00"},
                  {"user": "u", "name": "a", "properties": {"k": ["v\x00"]}}):
        text = json.dumps({"events": [{"user": "u", "name": "ok"}, event]})
        for body in (text.encode(), text.encode("utf-16"), text.encode("utf-32-le")):
            r = api.post("/events", data=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (event, body[:20])
            assert r.json["error"]["details"]["index"] == 1
    assert events_of("u") == []


def test_event_batch_size_is_capped(api):
    r = api.post("/events", json={"events": [{"user": "u", "name": "x"}] * 1001})
    assert r.status_code == 422


def test_ingest_returns_only_the_events_it_stored(app_keys):
    from segments import people

    app_id = app_keys[0]
    t1, t2 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, 12, 30, tzinfo=dt.UTC)
    with session_scope() as s:
        first = people.ingest_events(s, app_id, [{"user": "a", "name": "open", "id": "e1", "time": t1}])
    batch = [{"user": "a", "name": "open", "id": "e1", "time": t1},  # sent before
             {"user": "b", "name": "buy", "id": "e2", "time": t2, "properties": {"amount": 3}},
             {"user": "b", "name": "buy", "id": "e2", "time": t2},  # twice in this batch
             {"user": "a", "name": "view", "time": t2}]
    with session_scope() as s:
        stored = people.ingest_events(s, app_id, batch)
    assert sorted((e["name"], e["time"]) for e in stored) == [("buy", t2), ("view", t2)]
    assert all(e["time"].tzinfo is dt.UTC for e in stored)
    with session_scope() as s:
        ids = dict(s.execute(sa.select(User.external_id, User.id)).all())
        assert {e["user_id"] for e in stored} == {ids["a"], ids["b"]}
        assert len({e["id"] for e in first + stored}) == 3
        assert s.scalar(sa.select(sa.func.count()).select_from(Event)) == 3


def test_ingest_returns_the_named_events_only_but_stores_them_all(app_keys, tmp_path):
    """`returning`: what triggered campaigns wait for comes back; everything is stored (both dialects)."""
    from segments import people
    from tidings import migrate
    from tidings.apps import create_app_record

    t = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    batch = [{"user": "a", "name": "open", "time": t}, {"user": "b", "name": "buy", "time": t},
             {"user": "a", "name": "buy", "time": t}, {"user": "a", "name": "view", "time": t}]
    url = f"sqlite:///{tmp_path / 'e.sqlite'}"
    migrate.upgrade(url)
    with session_scope() as pg, Session(sa.create_engine(url)) as lite:
        for s, app_id in ((pg, app_keys[0]), (lite, create_app_record(lite, "lite")[0].id)):
            assert sorted(e["name"] for e in people.ingest_events(s, app_id, batch, returning={"buy", "x"})) == \
                ["buy", "buy"]
            assert people.ingest_events(s, app_id, batch, returning=set()) == []
            assert s.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.app_id == app_id)) == 8
            lite.commit()


def test_last_seen_is_the_newest_event_of_the_batch_and_never_moves_back(api):
    api.post("/events", json={"events": [{"user": "u", "name": "a", "time": "2026-01-01T00:00:00Z"},
                                         {"user": "u", "name": "b", "time": "2026-01-03T00:00:00+01:00"},
                                         {"user": "u", "name": "c", "time": "2026-01-02T00:00:00"}]})
    user = api.get("/users/u").json
    assert dt.datetime.fromisoformat(user["last_seen_at"]) == dt.datetime(2026, 1, 2, 23, tzinfo=dt.UTC)
    api.post("/events", json={"events": [{"user": "u", "name": "d", "time": "2025-12-31T00:00:00Z"}]})
    again = api.get("/users/u").json
    assert again["last_seen_at"] == user["last_seen_at"] and again["updated_at"] == user["updated_at"]
