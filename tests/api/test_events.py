"""POST /events: batches, dedupe by client id, unknown users, last_seen_at."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

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


def test_event_batch_size_is_capped(api):
    r = api.post("/events", json={"events": [{"user": "u", "name": "x"}] * 1001})
    assert r.status_code == 422
