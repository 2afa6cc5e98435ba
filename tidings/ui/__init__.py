"""The marketers' web UI: server-rendered pages over the same services as the JSON API.

One blueprint, `ui`, mounted at `/`. Sessions are Flask's signed cookie; every unsafe request
of this blueprint carries a CSRF token (flask-wtf), while the JSON API and the provider
webhooks, which authenticate by key or signature, are left alone.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")


def init_app(app) -> None:
    auth.init_app(app)
    app.register_blueprint(bp)


# View modules attach their routes to `bp` on import (before any app registers it).
from tidings.ui import (  # noqa: E402, F401
    admin, auth, campaign_views, home, hook_views, people_views, segment_views,
)
