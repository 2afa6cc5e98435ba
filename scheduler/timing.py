"""When a delivery may go out: each user's local time, and quiet hours that delay (never drop)."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo:
    """The user's zone; no zone (or an unknown one) is UTC, as CONTRACT.md says."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ValueError, KeyError, OSError):
        return ZoneInfo("UTC")


def local_occurrence(wall: dt.datetime, tz: str | None) -> dt.datetime:
    """A wall-clock time (kept UTC-tagged) as the UTC instant it happens in `tz`."""
    return wall.replace(tzinfo=zone(tz)).astimezone(dt.UTC)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def quiet_until(at: dt.datetime, tz: str | None, quiet: dict | None) -> dt.datetime | None:
    """If `at` falls in the user's quiet hours, the UTC instant they end; else None.

    A window may wrap midnight ("21:00"-"08:00"). The end is computed on the local calendar,
    so daylight-saving shifts land on the right wall-clock time.
    """
    if not quiet:
        return None
    start, end = _minutes(quiet["start"]), _minutes(quiet["end"])
    local = at.astimezone(zone(tz))
    now_min = local.hour * 60 + local.minute
    inside = start <= now_min < end if start < end else (now_min >= start or now_min < end)
    if not inside:
        return None
    day = local.date()
    if start > end and now_min >= start:  # evening part of a window that ends tomorrow
        day += dt.timedelta(days=1)
    end_local = dt.datetime.combine(day, dt.time(end // 60, end % 60), tzinfo=zone(tz))
    return end_local.astimezone(dt.UTC)


def send_time(now: dt.datetime, tz: str | None, *, local_wall: dt.datetime | None = None,
              quiet: dict | None = None) -> dt.datetime:
    """The earliest moment a delivery may go: not before its local occurrence, never in quiet hours."""
    at = now
    if local_wall is not None:
        at = max(now, local_occurrence(local_wall, tz))
    return quiet_until(at, tz, quiet) or at
