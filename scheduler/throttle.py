"""Rate limits and frequency caps that hold across workers: Lua scripts on Redis, on Redis's clock."""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

# Fixed one-second windows per campaign: grant up to `want` of what is left this second.
_RATE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1] .. ':' .. math.floor(now_ms / 1000)
local used = tonumber(redis.call('GET', k) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant > 0 then
  redis.call('INCRBY', k, grant)
  redis.call('PEXPIRE', k, 2000)
else
  grant = 0
end
return {grant, 1000 - (now_ms % 1000)}
"""

# One user's sends across all campaigns of an app, as a sorted set of send times.
# ARGV: window_ms (0: no cap), max, member, keep_ms. Returns 1 when the send may go.
_CAP = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[4]))
local window = tonumber(ARGV[1])
if window > 0 and redis.call('ZCOUNT', KEYS[1], now_ms - window, '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""

CAP_KEEP_MS = 31 * 24 * 3600 * 1000  # the longest cap window allowed (720 h) and a day


def acquire(conn: redis.Redis, campaign_id: int, per_second: int | None, want: int,
            sleep=time.sleep, max_wait: float = 60.0) -> int:
    """Wait until up to `want` sends of this campaign fit its per-second limit; returns how many.

    Returns at least 1 unless `max_wait` runs out (then 0: the caller re-queues the rest).
    """
    if not per_second:
        return want
    waited = 0.0
    script = conn.register_script(_RATE)
    while True:
        granted, ms_left = script(keys=[f"tidings:rate:{campaign_id}"], args=[per_second, want])
        if granted > 0:
            return int(granted)
        if waited >= max_wait:
            return 0
        pause = max(int(ms_left), 1) / 1000
        sleep(pause)
        waited += pause


def reserve(conn: redis.Redis, app_id: int, user_ids: Sequence[int], delivery_ids: Sequence[int],
            cap: dict | None) -> list[bool]:
    """Record one send per user (atomic per user); False where the campaign's cap is reached."""
    window_ms = cap["per_hours"] * 3600 * 1000 if cap else 0
    limit = cap["max"] if cap else 0
    script = conn.register_script(_CAP)
    pipe = conn.pipeline(transaction=False)
    for user_id, delivery_id in zip(user_ids, delivery_ids, strict=True):
        script(keys=[f"tidings:cap:{app_id}:{user_id}"], args=[window_ms, limit, delivery_id, CAP_KEEP_MS],
               client=pipe)
    return [bool(ok) for ok in pipe.execute()]


def release(conn: redis.Redis, app_id: int, user_ids: Sequence[int], delivery_ids: Sequence[int]) -> None:
    """Give back reservations of sends that did not happen (failed, deferred)."""
    pipe = conn.pipeline(transaction=False)
    for user_id, delivery_id in zip(user_ids, delivery_ids, strict=True):
        pipe.zrem(f"tidings:cap:{app_id}:{user_id}", delivery_id)
    pipe.execute()
