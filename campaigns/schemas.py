"""Validation of campaign definitions (CONTRACT.md "Campaigns") and of per-channel content."""

from __future__ import annotations

import re

from croniter import croniter
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from segments.schemas import AwareDateTime, StrictBool, StrictFloat

MAX_TARGETS = 50
MAX_VARIANTS = 26
HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class StrictInt(fields.Integer):
    """A JSON integer (not a string, not a boolean, not 2.5)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("must be a whole number")
        return super()._deserialize(value, attr, data, **kwargs)


class VariantSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(1, 50))
    weight = StrictFloat(load_default=1.0, validate=validate.Range(min=0, max=1_000_000))
    content = fields.Dict(required=True, keys=fields.Str())


class TargetSchema(Schema):
    class Meta:
        unknown = RAISE

    segment = fields.Str(allow_none=True, load_default=None, validate=validate.Length(1, 10_000))
    control_percent = StrictFloat(load_default=0.0, validate=validate.Range(0, 100))
    variants = fields.List(fields.Nested(VariantSchema), required=True,
                           validate=validate.Length(1, MAX_VARIANTS))

    @validates_schema
    def _variants(self, data, **kwargs):
        names = [v["name"] for v in data.get("variants", [])]
        if len(names) != len(set(names)):
            raise ValidationError("variant names must be unique within a target", "variants")
        if data.get("variants") and sum(v["weight"] for v in data["variants"]) <= 0:
            raise ValidationError("at least one variant needs a weight above 0", "variants")


class ConversionSchema(Schema):
    class Meta:
        unknown = RAISE

    event = fields.Str(required=True, validate=validate.Length(1, 255))
    window_hours = StrictInt(load_default=72, validate=validate.Range(1, 24 * 365))


class ScheduleSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.Str(required=True, validate=validate.OneOf(["now", "once", "recurring", "triggered"]))
    at = AwareDateTime()
    cron = fields.Str(validate=validate.Length(1, 200))
    event = fields.Str(validate=validate.Length(1, 255))
    delay_minutes = StrictInt(validate=validate.Range(0, 60 * 24 * 30))

    @validates_schema
    def _by_type(self, data, **kwargs):
        kind = data.get("type")
        needs = {"now": set(), "once": {"at"}, "recurring": {"cron"}, "triggered": {"event"}}
        allowed = {"now": set(), "once": {"at"}, "recurring": {"cron"}, "triggered": {"event", "delay_minutes"}}
        if kind not in needs:
            return
        for key in needs[kind]:
            if key not in data:
                raise ValidationError(f'a "{kind}" schedule needs "{key}"', key)
        for key in set(data) - {"type"} - allowed[kind]:
            raise ValidationError(f'not used by a "{kind}" schedule', key)
        if kind == "recurring" and not croniter.is_valid(data["cron"]):
            raise ValidationError(f'"{data["cron"]}" is not a cron expression (e.g. "0 10 * * 1")', "cron")
        if kind == "recurring" and len(data["cron"].split()) != 5:
            raise ValidationError("use a 5-field cron expression: minute hour day month weekday", "cron")


class FrequencyCapSchema(Schema):
    class Meta:
        unknown = RAISE

    max = StrictInt(required=True, validate=validate.Range(1, 1000))
    per_hours = StrictInt(required=True, validate=validate.Range(1, 24 * 30))


class QuietHoursSchema(Schema):
    class Meta:
        unknown = RAISE

    start = fields.Str(required=True, validate=validate.Regexp(HHMM, error='use "HH:MM", e.g. "21:00"'))
    end = fields.Str(required=True, validate=validate.Regexp(HHMM, error='use "HH:MM", e.g. "08:00"'))

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if data.get("start") and data.get("start") == data.get("end"):
            raise ValidationError("start and end are the same: use null for no quiet hours", "end")


class CampaignSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(1, 200))
    channel = fields.Str(required=True, validate=validate.OneOf(["sms", "push", "inapp", "config"]))
    audience = fields.Str(allow_none=True, load_default=None, validate=validate.Length(1, 10_000))
    targets = fields.List(fields.Nested(TargetSchema), required=True, validate=validate.Length(1, MAX_TARGETS))
    conversion = fields.Nested(ConversionSchema, allow_none=True, load_default=None)
    schedule = fields.Nested(ScheduleSchema, load_default=lambda: {"type": "now"})
    local_time = StrictBool(load_default=False)
    frequency_cap = fields.Nested(FrequencyCapSchema, allow_none=True)
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True)
    rate_limit_per_second = StrictInt(allow_none=True, validate=validate.Range(1, 100_000))

    @validates_schema
    def _combinations(self, data, **kwargs):
        schedule = data.get("schedule") or {}
        if data.get("local_time") and schedule.get("type") not in ("once", "recurring"):
            raise ValidationError('local_time applies to "once" and "recurring" schedules', "local_time")
        if data.get("channel") in ("inapp", "config") and schedule.get("type") in ("once", "recurring"):
            raise ValidationError("in-app and config campaigns are pulled by apps: schedule them "
                                  '"now" or "triggered"', "schedule")


# -- content by channel ------------------------------------------------------------------------


class SmsContent(Schema):
    class Meta:
        unknown = RAISE

    body = fields.Str(required=True, validate=validate.Length(1, 1600))


class PushContent(Schema):
    class Meta:
        unknown = RAISE

    title = fields.Str(validate=validate.Length(max=500))
    body = fields.Str(validate=validate.Length(max=4000))
    data = fields.Dict(keys=fields.Str(validate=validate.Length(1, 100)),
                       values=fields.Str(validate=validate.Length(max=1000)))
    image_url = fields.Url(schemes={"https", "http"})

    @validates_schema
    def _something(self, data, **kwargs):
        if not data.get("title") and not data.get("body"):
            raise ValidationError("a push needs a title or a body", "body")
        if "delivery_id" in (data.get("data") or {}):
            raise ValidationError('"delivery_id" is set by Tidings', "data")


class ButtonSchema(Schema):
    class Meta:
        unknown = RAISE

    label = fields.Str(required=True, validate=validate.Length(1, 100))
    action = fields.Str(required=True, validate=validate.Length(1, 2000))


class InappContent(Schema):
    class Meta:
        unknown = RAISE

    layout = fields.Str(required=True, validate=validate.OneOf(["modal", "banner", "card"]))
    title = fields.Str(validate=validate.Length(max=500))
    body = fields.Str(validate=validate.Length(max=4000))
    image_url = fields.Str(validate=validate.Length(max=2000))
    buttons = fields.List(fields.Nested(ButtonSchema), validate=validate.Length(max=5))
    html = fields.Str(validate=validate.Length(max=100_000))
    expires_hours = StrictInt(validate=validate.Range(1, 24 * 365))


class ConfigContent(Schema):
    class Meta:
        unknown = RAISE

    hooks = fields.Dict(required=True, keys=fields.Str(validate=validate.Length(1, 100)), values=fields.Raw())


CONTENT_SCHEMAS = {"sms": SmsContent, "push": PushContent, "inapp": InappContent, "config": ConfigContent}


