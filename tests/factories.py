"""Small helpers that write rows straight through the ORM for tests."""

from __future__ import annotations

import datetime as dt

from segments.models import Device, Event, User
from segments.versions import version_key
from tidings.apps import create_app_record
from tidings.models import App


def make_app(session, name: str = "Test app") -> tuple[App, str, str]:
    """Returns the app with its plain server and client keys."""
    return create_app_record(session, name)


def make_user(session, app: App, external_id: str, *, devices=(), events=(), **fields) -> User:
    fields.setdefault("attributes", {})
    user = User(app_id=app.id, external_id=external_id, **fields)
    session.add(user)
    session.flush()
    for i, d in enumerate(devices):
        d = dict(d)
        d.setdefault("device_id", f"{external_id}-dev{i}")
        d["os_version_key"] = version_key(d.get("os_version"))
        d["app_version_key"] = version_key(d.get("app_version"))
        session.add(Device(app_id=app.id, user_id=user.id, **d))
    for e in events:
        e = dict(e)
        e.setdefault("properties", {})
        e.setdefault("time", dt.datetime.now(dt.UTC))
        session.add(Event(app_id=app.id, user_id=user.id, **e))
    session.flush()
    return user
