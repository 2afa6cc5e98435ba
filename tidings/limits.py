"""Rate limits on what client keys may call (flask-limiter; Redis when REDIS_URL is set)."""

from __future__ import annotations

import os

from flask import g
from flask_limiter import Limiter

# Per app client key: generous, since every installed copy of an app shares the key; it stops a
# leaked key from being used to flood us. TIDINGS_CLIENT_RATE_LIMIT overrides it.
DEFAULT_CLIENT_LIMIT = "3000 per second"


def _key() -> str:
    caller = g.get("caller")
    return f"app:{caller.app_id}:{caller.kind}" if caller else "anonymous"


limiter = Limiter(key_func=_key, headers_enabled=True, strategy="moving-window")


def init_app(app, redis_url: str | None) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)


def _limit() -> str:
    return os.environ.get("TIDINGS_CLIENT_RATE_LIMIT", DEFAULT_CLIENT_LIMIT)


client_limit = limiter.limit(_limit, key_func=_key)
