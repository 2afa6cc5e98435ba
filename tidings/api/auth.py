"""App keys: a server key may call everything of its app, a client key only what mobile apps need."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app, g, request

from tidings.api import bp, fastpull
from tidings.errors import ForbiddenError, TidingsError
from tidings.models import App, KeyKind, bearer_digest
from tidings.web import db_session


class UnauthorizedError(TidingsError):
    status = 401
    code = "unauthorized"


@dataclass(frozen=True)
class Caller:
    app_id: int
    kind: KeyKind
    config_version: int = 0


PUBLIC_ENDPOINTS = {"api.openapi_json"}
_apps = App.__table__
# Built once: every API request runs it, and a prebuilt Core statement costs a third of an ORM one.
_KEY_LOOKUP = sa.select(_apps.c.id, _apps.c.server_key_hash, _apps.c.config_version).where(
    sa.or_(_apps.c.server_key_hash == sa.bindparam("digest"), _apps.c.client_key_hash == sa.bindparam("digest")))


def client_allowed(view):
    """Mark a view a client key (shipped inside mobile apps) may call."""
    view.client_allowed = True
    return view


@bp.before_request
def authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    digest = bearer_digest(request.headers.get("Authorization", ""))
    if digest is None:
        raise UnauthorizedError("send your app key as 'Authorization: Bearer <key>'")
    row = db_session().execute(_KEY_LOOKUP, {"digest": digest}).first()
    if row is None:
        raise UnauthorizedError("unknown or revoked key")
    kind = KeyKind.SERVER if row.server_key_hash == digest else KeyKind.CLIENT
    g.caller = Caller(app_id=row.id, kind=kind, config_version=row.config_version)
    fastpull.keys.remember(digest, row.id, kind)
    view = current_app.view_functions.get(request.endpoint)
    if kind is KeyKind.CLIENT and not getattr(view, "client_allowed", False):
        raise ForbiddenError("a client key may not call this endpoint; use the server key")


def caller() -> Caller:
    return g.caller
