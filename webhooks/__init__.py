"""Provider callbacks, the end of a message's path: verify the signature, then apply receipts and
replies through `webhooks.receipts` (which moves deliveries only along `campaigns.states`)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def init_app(app) -> None:
    app.register_blueprint(bp)


# View modules attach their routes to `bp` on import (before any app registers it).
from webhooks import twilio  # noqa: E402, F401
