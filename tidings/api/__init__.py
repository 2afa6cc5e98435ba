"""The JSON API under /api/v1: authentication by app key, error shape, and the route modules."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def init_app(app) -> None:
    from tidings.api import errors, fastpull

    app.register_blueprint(bp)
    errors.init_app(app)
    app.wsgi_app = fastpull.PullFastPath(app.wsgi_app)


# Route modules attach their views (and auth its before_request hook) to `bp` on import.
from tidings.api import auth, campaigns, openapi, people, pulls, segments  # noqa: E402, F401
