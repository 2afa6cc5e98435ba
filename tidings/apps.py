"""Apps (workspaces): creation with a server and a client key, shown once and stored hashed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tidings.errors import InvalidError
from tidings.models import App, KeyKind


def create_app_record(session: Session, name: str) -> tuple[App, str, str]:
    """Returns the new app and its plain server and client keys (never stored in plain)."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidError("an app needs a name of 1 to 200 characters", {"field": "name"})
    app = App(name=name, settings={})
    server_key = app.rotate_key(KeyKind.SERVER)
    client_key = app.rotate_key(KeyKind.CLIENT)
    session.add(app)
    session.flush()
    return app, server_key, client_key
