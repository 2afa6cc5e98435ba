"""Per-request helpers shared by the API, the UI and the webhooks: the DB session and JSON bodies."""

from __future__ import annotations

from typing import Any

from flask import g, request
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from tidings import db
from tidings.errors import TidingsError


class MalformedError(TidingsError):
    status = 400
    code = "malformed"


def db_session() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = db.SessionFactory()
    return g.db_session


def close_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def json_body() -> Any:
    """The request's JSON document, or a 400 that says what is wrong with it."""
    if not request.is_json:
        raise MalformedError("send a JSON body with Content-Type: application/json")
    data = request.get_json(silent=True)
    if data is None and request.get_data():
        raise MalformedError("the body is not valid JSON")
    if data is None:
        raise MalformedError("the body is empty")
    return data


def load(schema: Schema, data: Any | None = None) -> Any:
    """Validate with a marshmallow schema; a non-object body is 422 like any other wrong type."""
    data = json_body() if data is None else data
    if not isinstance(data, dict) and not schema.many:
        raise ValidationError({"_schema": ["the body must be a JSON object"]})
    return schema.load(data)


def inactive_days_arg(default: str = "30") -> int:
    """`?inactive_days=N` (1-3650), or a 422 naming it."""
    from flask import request

    from tidings.errors import InvalidError

    raw = request.args.get("inactive_days", default)
    days = int(raw) if raw.isdigit() else 0
    if not 1 <= days <= 3650:
        raise InvalidError("inactive_days must be a whole number of days from 1 to 3650", {"field": "inactive_days"})
    return days
