"""Fast acceptance of well-formed event and user batches, with marshmallow as the authority.

Validating 1,000 events through marshmallow costs ~80 ms, most of an ingestion request. These
functions accept only input that is plainly valid and return exactly what the schema would
load; on anything else they return None and the caller runs the schema, which produces the
error report. tests/segments/test_fastpath.py checks on random input that the two agree.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from segments.schemas import (
    ATTRIBUTE_NAME, FUTURE_SLACK, LANGUAGE_TAG, MAX_ATTRIBUTES, MAX_BATCH, country_codes, known_timezones,
    normalize_phone, parse_iso,
)

_EVENT_KEYS = frozenset({"user", "name", "properties", "time", "id"})


def _text(value: Any, longest: int = 255) -> bool:
    return type(value) is str and 0 < len(value) <= longest


def _time(value: Any, now: dt.datetime) -> dt.datetime | None:
    if type(value) is not str:
        return None
    try:
        parsed = parse_iso(value)
    except ValueError:
        return None
    return parsed if parsed <= now + FUTURE_SLACK else None


def events_batch(data: Any) -> list[dict] | None:
    """The loaded `{"events": [...]}` body, or None when the schema must decide."""
    if type(data) is not dict or data.keys() != {"events"}:
        return None
    items = data["events"]
    if type(items) is not list or not 0 < len(items) <= MAX_BATCH:
        return None
    now = dt.datetime.now(dt.UTC)
    out = []
    for item in items:
        if type(item) is not dict or not item.keys() <= _EVENT_KEYS:
            return None
        if not (_text(item.get("user")) and _text(item.get("name"))):
            return None
        event = {"user": item["user"], "name": item["name"]}
        if "properties" in item:
            props = item["properties"]
            if type(props) is not dict or not all(_text(k) for k in props):
                return None
            event["properties"] = props
        if "time" in item:
            when = _time(item["time"], now)
            if when is None:
                return None
            event["time"] = when
        if "id" in item:
            if not _text(item["id"]):
                return None
            event["id"] = item["id"]
        out.append(event)
    return out


_SIMPLE_TEXT = {"region": 128, "city": 128}


def user_fields(data: Any) -> dict | None:
    """A loaded `UserFieldsSchema` body for input without devices, or None."""
    if type(data) is not dict:
        return None
    out: dict = {}
    for key, value in data.items():
        if key == "attributes":
            if type(value) is not dict or len(value) > MAX_ATTRIBUTES:
                return None
            if not all(type(k) is str and ATTRIBUTE_NAME.match(k) for k in value):
                return None
            out[key] = value
        elif key in _SIMPLE_TEXT:
            if value is not None and not (type(value) is str and len(value) <= _SIMPLE_TEXT[key]):
                return None
            out[key] = value
        elif key == "timezone":
            if value is not None and not (type(value) is str and value in known_timezones()):
                return None
            out[key] = value
        elif key in ("sms_opt_in", "push_opt_in"):
            if type(value) is not bool:
                return None
            out[key] = value
        elif key == "country":
            if value is not None:
                if not (type(value) is str and len(value) == 2 and value.upper() in country_codes()):
                    return None
                value = value.upper()
            out[key] = value
        elif key == "language":
            if value is not None and not (type(value) is str and LANGUAGE_TAG.fullmatch(value)):
                return None
            out[key] = value
        elif key in ("lat", "lon"):
            limit = 90 if key == "lat" else 180
            if value is not None and not (type(value) in (int, float) and math.isfinite(value)
                                          and -limit <= value <= limit):
                return None
            out[key] = None if value is None else float(value)
        elif key != "phone":  # devices, unknown keys: the schema decides
            return None
    if "phone" in data:
        phone = data["phone"]
        if phone is None or phone == "":
            out["phone"] = phone
        elif type(phone) is not str or len(phone) > 40:
            return None
        else:
            try:
                out["phone"] = normalize_phone(phone, (data.get("country") or "").upper() or None)
            except ValueError:
                return None
    return out


def users_batch(data: Any) -> list[dict] | None:
    """The loaded `{"users": [...]}` body (each with external_id), or None."""
    if type(data) is not dict or data.keys() != {"users"}:
        return None
    items = data["users"]
    if type(items) is not list or not 0 < len(items) <= MAX_BATCH:
        return None
    out = []
    for item in items:
        if type(item) is not dict or not _text(item.get("external_id")):
            return None
        loaded = user_fields({k: v for k, v in item.items() if k != "external_id"})
        if loaded is None:
            return None
        out.append({"external_id": item["external_id"], **loaded})
    return out


