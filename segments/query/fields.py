"""What each field of the query language is, and the few rules both evaluators share.

The SQL compiler and the in-memory evaluator must select exactly the same people, so every
value they derive from the query (cut-off instants, time-zone sets, geo constants) comes from
here, computed once in Python.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
import operator
import zoneinfo
from decimal import Decimal

from segments.query.ast import Duration, Near


class Kind(enum.StrEnum):
    PROFILE_TEXT = "profile_text"      # language, country, region, city, timezone
    DEVICE_TEXT = "device_text"        # platform, device_type
    VERSION = "version"                # os_version, app_version (on devices)
    TIME = "time"                      # created_at, last_seen_at
    LOCAL_HOUR = "local_hour"
    FLAG = "flag"                      # sms_opt_in, push_opt_in
    ATTRIBUTE = "attribute"            # attr.NAME, and event properties inside `did ... where`


FIELDS: dict[str, Kind] = {
    "platform": Kind.DEVICE_TEXT,
    "device_type": Kind.DEVICE_TEXT,
    "os_version": Kind.VERSION,
    "app_version": Kind.VERSION,
    "language": Kind.PROFILE_TEXT,
    "country": Kind.PROFILE_TEXT,
    "region": Kind.PROFILE_TEXT,
    "city": Kind.PROFILE_TEXT,
    "timezone": Kind.PROFILE_TEXT,
    "created_at": Kind.TIME,
    "last_seen_at": Kind.TIME,
    "local_hour": Kind.LOCAL_HOUR,
    "sms_opt_in": Kind.FLAG,
    "push_opt_in": Kind.FLAG,
}

ATTR_PREFIX = "attr."

OPS = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}

EARTH_RADIUS_KM = 6371.0088
DEG = math.pi / 180.0  # the one degrees-to-radians factor both sides multiply by


# JSON numbers are exact decimals (jsonb keeps them so); both sides compare them as the nearest
# double. Beyond the double range that is +-infinity, and below half the smallest subnormal it
# is zero, instead of an error (PostgreSQL) or an exception (Python), so one odd attribute value
# can never break every query that mentions it.
FLOAT_OVERFLOW = 2**1024 - 2**970   # the least magnitude that rounds to infinity
FLOAT_UNDERFLOW = Decimal(5**1075).scaleb(-1075)  # exactly 2**-1075: up to it rounds to zero


def json_number(value: int | float) -> float:
    """A JSON number (int or float, never bool) as the double both evaluators compare."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def field_kind(field: str) -> Kind:
    if field.startswith(ATTR_PREFIX):
        return Kind.ATTRIBUTE
    return FIELDS[field]


# ---- time -----------------------------------------------------------------------------------

_MIN = dt.datetime.min.replace(tzinfo=dt.UTC)


def since(now: dt.datetime, duration: Duration) -> dt.datetime:
    """`now - duration`, clamped at year 1 instead of overflowing."""
    return window_start(now, duration.delta)


def window_start(now: dt.datetime, window: dt.timedelta | None) -> dt.datetime:
    """The earliest time a look-back `window` (None: forever) sees from `now`, clamped at year 1."""
    if window is None:
        return _MIN
    try:
        return now - window
    except OverflowError:
        return _MIN


def parse_datetime(text: str) -> dt.datetime | None:
    """An ISO-8601 date or date-time as aware UTC (naive means UTC); None if it is not one."""
    text = text.strip()
    if not text or not text[0].isdigit():
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            value = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
        except ValueError:
            return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        return None


# ---- local hour -----------------------------------------------------------------------------

@functools.cache
def known_zones() -> frozenset[str]:
    """Every IANA zone name a user's `timezone` may hold; anything else never matches."""
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


@functools.lru_cache(maxsize=16)
def zone_hours(now: dt.datetime) -> dict[str, int]:
    """The local hour at `now` in every known zone."""
    hours = {}
    for name in known_zones():
        try:
            hours[name] = now.astimezone(zoneinfo.ZoneInfo(name)).hour
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # a broken tzdata entry
            continue
    return hours


def zones_where(now: dt.datetime, test) -> list[str]:
    """The known zones whose local hour at `now` passes `test` (sorted, for stable SQL)."""
    return sorted(name for name, hour in zone_hours(now).items() if test(hour))


def local_hour(timezone: str | None, now: dt.datetime) -> int | None:
    """The user's hour at `now`; no zone means UTC, an unknown zone means no hour at all.

    Computed directly (the hot path evaluates one person), yet always equal to
    `zone_hours(now)[zone]`, which is what the SQL side selects by.
    """
    name = "UTC" if timezone is None else timezone
    if name not in known_zones():
        return None
    try:
        return now.astimezone(zoneinfo.ZoneInfo(name)).hour
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def require_aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    return now


# ---- geo ------------------------------------------------------------------------------------

def _flush(x: float) -> float:
    return 0.0 if -Haversine.FLUSH < x < Haversine.FLUSH else x


class Haversine:
    """`near(lat, lon, d)` as `hav(distance / R) <= hav(d / R)`, a monotone form of the haversine.

    Both evaluators compute the haversine term

        a = s1 * s1 + cos_lat0 * cos(lat * DEG) * s2 * s2
        s1 = sin((lat - lat0) * DEG / 2),  s2 = sin((lon - lon0) * DEG / 2)

    with the same operations in the same order on IEEE doubles, and compare it with `limit`,
    so they agree to the last bit without the asin/sqrt domain errors of the textbook form.

    PostgreSQL raises an error ("value out of range: underflow") where a product or quotient of
    nonzero doubles rounds to zero, so both sides first take differences (and the latitude the
    cosine is of) below `FLUSH` in magnitude as 0: each term stays far above the smallest double
    or is exactly 0. For the cosine nothing changes (cos of anything that small is 1.0); a
    difference that small moves the term by less than 1e-200.
    """

    FLUSH = 1e-100

    def __init__(self, near: Near):
        self.lat0 = float(near.lat)
        self.lon0 = float(near.lon)
        theta = near.km / EARTH_RADIUS_KM  # angular radius, radians
        self.everywhere = theta >= math.pi
        self.cos_lat0 = math.cos(self.lat0 * DEG)
        self.limit = math.sin(theta / 2) ** 2 if not self.everywhere else 2.0
        # A generous bounding box, only ever a prefilter for the SQL side.
        pad_deg = math.degrees(theta) * 1.01 + 0.01
        self.lat_box = (self.lat0 - pad_deg, self.lat0 + pad_deg)
        self.lon_box: tuple[float, float] | None = None
        if (not self.everywhere and abs(self.lat0) + pad_deg < 89.0
                and math.sin(theta) < math.cos(self.lat0 * DEG)):
            half = math.degrees(math.asin(math.sin(theta) / math.cos(self.lat0 * DEG)))
            half = half * 1.01 + 0.01
            lo, hi = self.lon0 - half, self.lon0 + half
            if lo > -180.0 and hi < 180.0:  # no wrap across the antimeridian
                self.lon_box = (lo, hi)

    def term(self, lat: float, lon: float) -> float:
        s1 = math.sin(_flush(lat - self.lat0) * DEG / 2)
        s2 = math.sin(_flush(lon - self.lon0) * DEG / 2)
        return s1 * s1 + self.cos_lat0 * math.cos(_flush(lat) * DEG) * s2 * s2

    def matches(self, lat: float | None, lon: float | None) -> bool:
        if lat is None or lon is None:
            return False
        if self.everywhere:
            return True
        return self.term(lat, lon) <= self.limit
