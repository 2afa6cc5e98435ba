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
    ATTRIBUTE_NAME, FUTURE_SLACK, LANGUAGE_TAG, MAX_ATTRIBUTES, MAX_BATCH, MAX_LANGUAGE, country_codes, known_timezones,
    normalize_phone, nul_free, parse_iso,
)

_EVENT_KEYS = frozenset({"user", "name", "properties", "time", "id"})


def _text(value: Any, longest: int = 255) -> bool:
    return type(value) is str and 0 < len(value) <= longest


def may_hold_nul(body: bytes | None) -> bool:
    """Whether a JSON document parsed from `body` can hold a U+0000 (True when unknown).

    In JSON text a NUL can only be written `\\u0000` (a raw one is rejected by the parser), and
    a body in UTF-16 or UTF-32 has NUL bytes; a body with neither holds no NUL anywhere.
    """
    return body is None or b"\x00" in body or b"\\u0000" in body


def events_batch(data: Any, body: bytes | None = None) -> list[dict] | None:
    """The loaded `{"events": [...]}` body, or None when the schema must decide.

    `body`, the bytes `data` was parsed from, lets the per-string NUL checks go when it cannot
    hold one (`may_hold_nul`).
    """
    nul_possible = may_hold_nul(body)
    if type(data) is not dict or data.keys() != {"events"}:
        return None
    items = data["events"]
    if type(items) is not list or not 0 < len(items) <= MAX_BATCH:
        return None
    latest = dt.datetime.now(dt.UTC) + FUTURE_SLACK
    out = []
    for item in items:  # checks written out inline: this loop runs for every event ingested
        if type(item) is not dict or not item.keys() <= _EVENT_KEYS:
            return None
        user, name = item.get("user"), item.get("name")
        if not (type(user) is str and 0 < len(user) <= 255 and type(name) is str and 0 < len(name) <= 255):
            return None
        if nul_possible and ("\x00" in user or "\x00" in name):
            return None
        event = dict(item)
        if "properties" in item:
            props = item["properties"]
            if type(props) is not dict or not all(type(k) is str and 0 < len(k) <= 255 for k in props):
                return None
            if props and nul_possible and not nul_free(props):
                return None
        if "time" in item:
            when = item["time"]
            if type(when) is not str:
                return None
            try:
                when = parse_iso(when)
            except ValueError:
                return None
            if when > latest:
                return None
            event["time"] = when
        if "id" in item:
            client_id = item["id"]
            if not (type(client_id) is str and 0 < len(client_id) <= 255):
                return None
            if nul_possible and "\x00" in client_id:
                return None
        out.append(event)
    return out


_SIMPLE_TEXT = {"region": 128, "city": 128}


def user_fields(data: Any) -> dict | None:
    """A loaded `UserFieldsSchema` body for input without devices, or None."""
    if type(data) is not dict or not nul_free(data):
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
            if value is not None and not (type(value) is str and len(value) <= MAX_LANGUAGE
                                          and LANGUAGE_TAG.fullmatch(value)):
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
        if type(item) is not dict or not _text(item.get("external_id")) or "\x00" in item["external_id"]:
            return None
        loaded = user_fields({k: v for k, v in item.items() if k != "external_id"})
        if loaded is None:
            return None
        out.append({"external_id": item["external_id"], **loaded})
    return out


