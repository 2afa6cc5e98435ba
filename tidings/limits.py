"""Rate limits on what client keys may call (flask-limiter; Redis when REDIS_URL is set)."""

from __future__ import annotations

import functools
import math
import os
import time

from flask import g, request
from flask_limiter import Limiter
from limits import parse_many

# Per app client key: generous, since every installed copy of an app shares the key; it stops a
# leaked key from being used to flood us. TIDINGS_CLIENT_RATE_LIMIT overrides it.
DEFAULT_CLIENT_LIMIT = "3000 per second"


def limit_key(app_id: int, kind) -> str:
    return f"app:{app_id}:{kind}"


def _key() -> str:
    caller = g.get("caller")
    return limit_key(caller.app_id, caller.kind) if caller else "anonymous"


# One Redis call per request: a fixed window counter (a Lua INCR + EXPIRE). The X-RateLimit-*
# headers would cost a second call on every request, so only a refused request gets its
# Retry-After (see retry_after).
limiter = Limiter(key_func=_key, headers_enabled=False, strategy="fixed-window")


def init_app(app, redis_url: str | None) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = redis_url or "memory://"
    limiter.init_app(app)


def retry_after() -> int:
    """Seconds until the limit that refused this request lets requests through again."""
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))


def _limit() -> str:
    return os.environ.get("TIDINGS_CLIENT_RATE_LIMIT", DEFAULT_CLIENT_LIMIT)


# One budget per key across every endpoint a client key may call. A request the pull fast path
# (tidings.api.fastpull) already counted is not counted again when it hands over to the view.
CLIENT_SCOPE = "client"
COUNTED = "tidings.rate_counted"
client_limit = limiter.shared_limit(_limit, scope=CLIENT_SCOPE, key_func=_key,
                                    exempt_when=lambda: request.environ.get(COUNTED, False))


def hit_client(app_id: int, kind: str) -> bool:
    """Count one request against the client budget outside Flask, exactly where `client_limit`
    counts (same storage, key and scope); False when it is over the limit."""
    key = limit_key(app_id, kind)
    return all(limiter.limiter.hit(item, key, CLIENT_SCOPE) for item in _items(_limit()))


@functools.lru_cache(maxsize=16)
def _items(text: str) -> list:
    return sorted(parse_many(text))
