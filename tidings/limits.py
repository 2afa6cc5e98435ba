"""Rate limits on what client keys may call (flask-limiter; Redis when REDIS_URL is set)."""

from __future__ import annotations

import functools
import math
import os
import threading
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
    leases.clear()  # blocks counted in another storage


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
    """Count one request against the client budget outside Flask, where `client_limit` counts
    (same storage, key and scope); False when it is over the limit. Counted through `leases`."""
    key = limit_key(app_id, kind)
    return all(leases.hit(item, key) for item in _items(_limit()))


# A budget of N requests per window is counted on Redis a block of up to N/64 (at most 64) at a
# time: the process takes the block in one call and spends it locally within the window, so
# the hottest requests do not each pay a Redis round trip. The price: a process may refuse up to
# a block early (a block it took and did not spend) or, when a window turns while it holds one,
# admit up to a block more in the next; budgets under 128 are counted one by one, exactly.
BLOCK_DIVISOR = 64
MAX_BLOCK = 64


class Leases:
    """Blocks of a budget this process has counted on the shared storage and not spent yet."""

    def __init__(self) -> None:
        self._held: dict[tuple, list] = {}  # (item, key) -> [hits left, monotonic deadline]
        self._lock = threading.Lock()

    def hit(self, item, key: str) -> bool:
        block = min(MAX_BLOCK, item.amount // BLOCK_DIVISOR)
        if block <= 1:
            return limiter.limiter.hit(item, key, CLIENT_SCOPE)
        now = time.monotonic()
        with self._lock:
            held = self._held.get((item, key))
            if held is not None and held[0] > 0 and held[1] > now:
                held[0] -= 1
                return True
        if not limiter.limiter.hit(item, key, CLIENT_SCOPE, cost=block):
            return False
        with self._lock:
            self._held[item, key] = [block - 1, now + item.get_expiry()]
        return True

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


leases = Leases()


@functools.lru_cache(maxsize=16)
def _items(text: str) -> list:
    return sorted(parse_many(text))
