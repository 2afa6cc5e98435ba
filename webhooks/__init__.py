"""Provider callbacks, the end of a message's path: verify the signature, then apply receipts and
replies through `webhooks.receipts` (which moves deliveries only along `campaigns.states`)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def init_app(app) -> None:
    app.register_blueprint(bp)
    # Signed status callbacks for known deliveries are taken in front of Flask; the rest reach `bp`.
    app.wsgi_app = fastpath.StatusFastPath(app, app.wsgi_app)


# View modules attach their routes to `bp` on import (before any app registers it).
from webhooks import fastpath, twilio  # noqa: E402, F401
