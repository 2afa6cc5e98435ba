"""Validation of people, devices and events (marshmallow), shared by the API and CSV imports."""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from functools import cache, lru_cache

import phonenumbers
import pycountry
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_ATTRIBUTES = 200
MAX_DEVICES = 50
MAX_BATCH = 1000
FUTURE_SLACK = dt.timedelta(hours=24)


@cache
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


@cache
def country_codes() -> frozenset[str]:
    """ISO 3166 alpha-2 codes, upper case: `c.upper() in country_codes()` implies `_country(c)` passes."""
    return frozenset(c.alpha_2.upper() for c in pycountry.countries)


def normalize_phone(value: str, country: str | None = None) -> str:
    """E.164 form of a phone number, or ValueError saying why not."""
    number, error = _phone(value, country)
    if error is not None:
        raise ValueError(error)
    return number


@lru_cache(maxsize=32_768)
def _phone(value: str, country: str | None) -> tuple[str | None, str | None]:
    # phonenumbers takes ~25 us a number; the same number comes back with every profile update.
    try:
        number = phonenumbers.parse(value, None if value.strip().startswith("+") else country)
    except phonenumbers.NumberParseException as exc:
        hint = "" if country else " (give it in E.164 form, e.g. +14155550100, or set the user's country)"
        return None, f"not a phone number{hint}: {exc}"
    if not phonenumbers.is_valid_number(number):
        return None, "not a valid phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


class StrictBool(fields.Boolean):
    """Only JSON true/false (marshmallow's Boolean also takes "yes", 1, ...)."""

    def __init__(self, **kwargs):
        super().__init__(truthy={True}, falsy={False}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class StrictFloat(fields.Float):
    """A JSON number (not a numeric string, not a boolean, not NaN)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError("must be a number")
        return float(value)


def parse_iso(value: str) -> dt.datetime:
    """ISO-8601 (a trailing Z allowed); a time without offset is taken as UTC. ValueError if not."""
    parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class AwareDateTime(fields.DateTime):
    """ISO-8601; a time without offset is taken as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be an ISO-8601 date-time string")
        try:
            return parse_iso(value)
        except ValueError:
            raise ValidationError("not an ISO-8601 date-time") from None


def _attributes(value: dict) -> None:
    if len(value) > MAX_ATTRIBUTES:
        raise ValidationError(f"at most {MAX_ATTRIBUTES} attributes")
    for key in value:
        if not ATTRIBUTE_NAME.match(key):
            raise ValidationError(
                f'attribute name "{key}" must start with a letter or _ and use only letters, digits and _ (max 64)'
            )


def _timezone(value: str) -> None:
    if value not in known_timezones():
        raise ValidationError(f'"{value}" is not an IANA time zone (e.g. "Europe/Paris")')


def _country(value: str) -> None:
    if len(value) != 2 or pycountry.countries.get(alpha_2=value.upper()) is None:
        raise ValidationError(f'"{value}" is not an ISO 3166 alpha-2 country code (e.g. "US")')


LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
MAX_LANGUAGE = 35  # the column's width (BCP 47 tags are seldom longer than 15)


def _language(value: str) -> None:
    if len(value) > MAX_LANGUAGE or not LANGUAGE_TAG.fullmatch(value):
        raise ValidationError(f'"{value}" is not a language tag (e.g. "en" or "pt-BR")')


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def nul_free(value) -> bool:
    """Whether a JSON value holds no U+0000, which PostgreSQL text and JSONB cannot store."""
    if type(value) is str:
        return "\x00" not in value
    if type(value) is dict:
        return all(nul_free(k) and nul_free(v) for k, v in value.items())
    if type(value) is list:
        return all(nul_free(v) for v in value)
    return True


class NulFreeSchema(Schema):
    """Input with U+0000 anywhere is a 422 naming its field, not a database error (a 500)."""

    @pre_load
    def _no_nul(self, data, **kwargs):
        if type(data) is dict:
            bad = {str(k): [NUL_MESSAGE] for k, v in data.items() if not (nul_free(k) and nul_free(v))}
            if bad:
                raise ValidationError(bad)
        return data


class DeviceSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.Str(required=True, validate=validate.Length(1, 255))
    platform = fields.Str(allow_none=True, validate=validate.OneOf(["ios", "android", "web"]))
    device_type = fields.Str(allow_none=True, validate=validate.OneOf(["phone", "tablet", "desktop"]))
    os_version = fields.Str(allow_none=True, validate=validate.Length(max=64))
    app_version = fields.Str(allow_none=True, validate=validate.Length(max=64))
    push_token = fields.Str(allow_none=True, validate=validate.Length(1, 4096))


class UserFieldsSchema(NulFreeSchema):
    """The optional profile fields of `PUT /users/{id}` (CONTRACT.md)."""

    class Meta:
        unknown = RAISE

    attributes = fields.Dict(keys=fields.Str(), values=fields.Raw(allow_none=True), validate=_attributes)
    phone = fields.Str(allow_none=True, validate=validate.Length(max=40))
    language = fields.Str(allow_none=True, validate=_language)
    timezone = fields.Str(allow_none=True, validate=_timezone)
    country = fields.Str(allow_none=True, validate=_country)
    region = fields.Str(allow_none=True, validate=validate.Length(max=128))
    city = fields.Str(allow_none=True, validate=validate.Length(max=128))
    lat = StrictFloat(allow_none=True, validate=validate.Range(-90, 90))
    lon = StrictFloat(allow_none=True, validate=validate.Range(-180, 180))
    sms_opt_in = StrictBool()
    push_opt_in = StrictBool()
    devices = fields.List(fields.Nested(DeviceSchema), validate=validate.Length(max=MAX_DEVICES))

    @validates_schema
    def _phone_and_devices(self, data, **kwargs):
        if data.get("phone"):
            try:
                data["phone"] = normalize_phone(data["phone"], (data.get("country") or "").upper() or None)
            except ValueError as exc:
                raise ValidationError(str(exc), "phone") from None
        ids = [d["id"] for d in data.get("devices", [])]
        if len(ids) != len(set(ids)):
            raise ValidationError("device ids must be unique", "devices")

    @post_load
    def _normalize(self, data, **kwargs):
        if data.get("country"):
            data["country"] = data["country"].upper()
        return data


class BatchUserSchema(UserFieldsSchema):
    external_id = fields.Str(required=True, validate=validate.Length(1, 255))


class UsersBatchSchema(Schema):
    class Meta:
        unknown = RAISE

    users = fields.List(
        fields.Nested(BatchUserSchema), required=True,
        validate=validate.Length(1, MAX_BATCH, error=f"between 1 and {MAX_BATCH} users"),
    )


class EventSchema(NulFreeSchema):
    class Meta:
        unknown = RAISE

    user = fields.Str(required=True, validate=validate.Length(1, 255))
    name = fields.Str(required=True, validate=validate.Length(1, 255))
    properties = fields.Dict(keys=fields.Str(validate=validate.Length(1, 255)), values=fields.Raw(allow_none=True))
    time = AwareDateTime()
    id = fields.Str(validate=validate.Length(1, 255))

    @validates_schema
    def _not_in_future(self, data, **kwargs):
        when = data.get("time")
        if when is not None and when > dt.datetime.now(dt.UTC) + FUTURE_SLACK:
            raise ValidationError("is more than 24 hours in the future", "time")


class EventsBatchSchema(Schema):
    class Meta:
        unknown = RAISE

    events = fields.List(
        fields.Nested(EventSchema), required=True,
        validate=validate.Length(1, MAX_BATCH, error=f"between 1 and {MAX_BATCH} events"),
    )
