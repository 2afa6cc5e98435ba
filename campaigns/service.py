"""Campaign services: validate and save definitions, the lifecycle, and preview for one person."""

from __future__ import annotations

import datetime as dt
from typing import Any

import nh3
import sqlalchemy as sa
from croniter import croniter
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from campaigns import hooks
from campaigns.models import Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryStatus, RunStatus
from campaigns.schemas import CONTENT_SCHEMAS, CampaignSchema
from campaigns.targeting import Arm, CompiledCampaign
from campaigns.templates import InvalidTemplateError, RenderError, build_context, validate_content
from segments.query import QueryError, load_profile
from segments.query.ast import Or
from segments.service import compile_query
from tidings.config import Settings, provider_config, push_configured, sms_configured
from tidings.db import utcnow
from tidings.errors import ConflictError, InvalidError, NotFoundError
from tidings.models import App, bump_config_version

S = CampaignStatus
MAX_UTC_OFFSET = dt.timedelta(hours=14)  # the earliest zone (Pacific/Kiritimati) is UTC+14
EDITABLE = {S.DRAFT, S.SCHEDULED, S.PAUSED}
LIVE_EDITABLE_CHANNELS = {"inapp", "config"}  # pulled content may change while running
SMS_QUIET_HOURS = {"start": "21:00", "end": "08:00"}


# -- validation --------------------------------------------------------------------------------


def _query_error(exc: QueryError, field: str) -> InvalidError:
    return InvalidError(f"{field}: {exc.message}", {**exc.details, "field": field})


def validate_spec(session: Session, app_id: int, data: Any) -> dict:
    """Check a full campaign definition; returns it as stored (JSON-ready). 422 on any problem."""
    spec = CampaignSchema().load(data)
    channel = spec["channel"]
    if spec.get("audience"):
        try:
            compile_query(session, app_id, spec["audience"])
        except QueryError as exc:
            raise _query_error(exc, "audience") from None
    for ti, target in enumerate(spec["targets"]):
        where = f"targets.{ti}"
        if target.get("segment"):
            try:
                compile_query(session, app_id, target["segment"])
            except QueryError as exc:
                raise _query_error(exc, f"{where}.segment") from None
        for vi, variant in enumerate(target["variants"]):
            vwhere = f"{where}.variants.{vi}"
            try:
                content = CONTENT_SCHEMAS[channel]().load(variant["content"])
            except ValidationError as exc:
                raise ValidationError({"targets": {ti: {"variants": {vi: {"content": exc.messages}}}}}) from None
            if channel == "inapp" and "html" in content:
                content["html"] = sanitize_html(content["html"])
            if channel == "config":
                hooks.check_overrides(session, app_id, content["hooks"], f"{vwhere}.content")
            problems = validate_content(content, channel=channel)
            if problems:
                error = InvalidTemplateError(problems, prefix=f'target {ti} variant "{variant["name"]}": content')
                path = problems[0].path.replace("[", ".").replace("]", "")
                error.details["field"] = f"{vwhere}.content.{path}"
                raise error
            variant["content"] = content
    schedule = spec["schedule"]
    if schedule.get("at") is not None:
        schedule["at"] = schedule["at"].isoformat()
    if spec.get("schedule", {}).get("type") == "triggered":
        schedule.setdefault("delay_minutes", 0)
    return spec


def sanitize_html(html: str) -> str:
    """No script, no event handlers, no javascript: URLs (nh3's allow-lists), templates kept."""
    return nh3.clean(html, url_schemes={"http", "https", "mailto", "tel"})


def effective_quiet_hours(campaign: Campaign) -> dict | None:
    if "quiet_hours" in campaign.spec:
        return campaign.spec["quiet_hours"]
    return SMS_QUIET_HOURS if campaign.channel == "sms" else None


# -- CRUD --------------------------------------------------------------------------------------


def get_campaign(session: Session, app_id: int, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = sa.select(Campaign).where(Campaign.id == campaign_id, Campaign.app_id == app_id)
    campaign = session.scalar(stmt.with_for_update() if lock else stmt)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    return campaign


def list_campaigns(session: Session, app_id: int, status: str | None = None) -> list[Campaign]:
    stmt = sa.select(Campaign).where(Campaign.app_id == app_id).order_by(Campaign.id.desc())
    if status:
        stmt = stmt.where(Campaign.status == status)
    return list(session.scalars(stmt))


def create_campaign(session: Session, app_id: int, data: Any) -> Campaign:
    spec = validate_spec(session, app_id, data)
    campaign = Campaign(app_id=app_id, name=spec.pop("name"), channel=spec.pop("channel"), spec=spec,
                        status=S.DRAFT, version=1)
    session.add(campaign)
    session.flush()
    bump_config_version(session, app_id)
    return campaign


def update_campaign(session: Session, app_id: int, campaign_id: int, data: Any) -> Campaign:
    """Replace fields of the definition (keys not given stay). Not while sending or once ended."""
    campaign = get_campaign(session, app_id, campaign_id, lock=True)
    live_ok = campaign.status == S.RUNNING and campaign.channel in LIVE_EDITABLE_CHANNELS
    if campaign.status not in EDITABLE and not live_ok:
        raise ConflictError(f"a {campaign.status} {campaign.channel} campaign cannot be edited"
                            + ("; pause it first" if campaign.status == S.RUNNING else ""),
                            {"status": campaign.status})
    if not isinstance(data, dict):
        raise InvalidError("the body must be a JSON object")
    merged = {"name": campaign.name, "channel": campaign.channel, **campaign.spec, **data}
    if merged["channel"] != campaign.channel and campaign.status != S.DRAFT:
        raise ConflictError("the channel of a launched campaign cannot change", {"field": "channel"})
    for key in ("quiet_hours", "frequency_cap", "rate_limit_per_second"):
        if merged.get(key) is None and key not in data and key not in campaign.spec:
            merged.pop(key, None)
    spec = validate_spec(session, app_id, merged)
    campaign.name, campaign.channel = spec.pop("name"), spec.pop("channel")
    campaign.spec = spec
    campaign.version += 1
    if campaign.status == S.SCHEDULED or (campaign.status == S.PAUSED and campaign.paused_from == S.SCHEDULED):
        campaign.next_run_at, _ = first_run(campaign, utcnow())
    session.flush()
    bump_config_version(session, app_id)
    return campaign


# -- lifecycle ---------------------------------------------------------------------------------


def _wall(value: dt.datetime) -> dt.datetime:
    """A local wall-clock time kept as a UTC-tagged datetime (its offset is ignored)."""
    return value.replace(tzinfo=dt.UTC)


def first_run(campaign: Campaign, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(next_run_at, occurrence) for a once/recurring schedule; the run starts at next_run_at.

    With local_time the occurrence is a wall-clock time, and its run starts when the earliest
    zone reaches it (occurrence - 14 h); each delivery then waits for its user's own zone.
    """
    schedule, local = campaign.spec["schedule"], campaign.spec.get("local_time", False)
    if schedule["type"] == "once":
        at = dt.datetime.fromisoformat(schedule["at"])
        occurrence = _wall(at) if local else at.astimezone(dt.UTC)
        start = occurrence - MAX_UTC_OFFSET if local else occurrence
        return start, occurrence
    if schedule["type"] == "recurring":
        base = now + MAX_UTC_OFFSET if local else now
        occurrence = croniter(schedule["cron"], base).get_next(dt.datetime)
        occurrence = occurrence.astimezone(dt.UTC) if occurrence.tzinfo else occurrence.replace(tzinfo=dt.UTC)
        return (occurrence - MAX_UTC_OFFSET if local else occurrence), occurrence
    return None, None


def next_occurrence(campaign: Campaign, occurrence: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The recurring schedule's next (next_run_at, occurrence) after `occurrence`."""
    nxt = croniter(campaign.spec["schedule"]["cron"], occurrence).get_next(dt.datetime)
    nxt = nxt.astimezone(dt.UTC) if nxt.tzinfo else nxt.replace(tzinfo=dt.UTC)
    local = campaign.spec.get("local_time", False)
    return (nxt - MAX_UTC_OFFSET if local else nxt), nxt


def occurrence_of(campaign: Campaign) -> dt.datetime:
    """The occurrence a due campaign's next_run_at stands for."""
    local = campaign.spec.get("local_time", False)
    return campaign.next_run_at + MAX_UTC_OFFSET if local else campaign.next_run_at


def check_provider(campaign: Campaign, settings: Settings, app: App) -> None:
    config = provider_config(settings, app.settings)
    if campaign.channel == "sms" and not sms_configured(config):
        raise ConflictError("SMS is not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM "
                            "(or TWILIO_MESSAGING_SERVICE_SID), or the app's Twilio settings",
                            code="provider_not_configured")
    if campaign.channel == "push" and not push_configured(config):
        raise ConflictError("push is not configured: set FCM_CREDENTIALS or the app's Firebase settings",
                            code="provider_not_configured")


def start_run(session: Session, campaign: Campaign, occurrence: dt.datetime, now: dt.datetime,
              status: RunStatus = RunStatus.PENDING) -> CampaignRun | None:
    """Create the run for one occurrence; None when it exists already (another scheduler won)."""
    from tidings.db import insert_for

    table = CampaignRun.__table__
    stmt = insert_for(session, table).on_conflict_do_nothing(index_elements=["campaign_id", "scheduled_for"])
    row = session.execute(stmt.returning(table.c.id), {
        "app_id": campaign.app_id, "campaign_id": campaign.id, "scheduled_for": occurrence,
        "status": status, "cursor_user_id": 0, "audience_count": 0, "started_at": now, "updated_at": now,
    }).first()
    return session.get(CampaignRun, row.id) if row else None


def standing_run(session: Session, campaign: Campaign) -> CampaignRun:
    """The one run of a triggered, in-app or config campaign (keyed by its launch time)."""
    run = session.scalar(sa.select(CampaignRun).where(CampaignRun.campaign_id == campaign.id)
                         .order_by(CampaignRun.id).limit(1))
    if run is None:
        run = start_run(session, campaign, campaign.launched_at, utcnow(), RunStatus.SENDING)
    return run


def launch(session: Session, campaign: Campaign, settings: Settings, now: dt.datetime | None = None) -> list[int]:
    """draft -> scheduled or running. Returns ids of runs whose fan-out must be queued (after commit)."""
    now = now or utcnow()
    if campaign.status != S.DRAFT:
        raise ConflictError(f"only a draft can be launched; this campaign is {campaign.status}",
                            {"status": campaign.status})
    app = session.get(App, campaign.app_id)
    check_provider(campaign, settings, app)
    validate_spec(session, campaign.app_id, {"name": campaign.name, "channel": campaign.channel, **campaign.spec})
    campaign.launched_at = now
    campaign.version += 1
    bump_config_version(session, campaign.app_id)
    kind = campaign.spec["schedule"]["type"]
    if kind == "now" and campaign.channel in ("sms", "push"):
        campaign.status = S.RUNNING
        run = start_run(session, campaign, now, now)
        return [run.id]
    if kind in ("now", "triggered"):
        campaign.status = S.RUNNING
        campaign.trigger_event = campaign.spec["schedule"].get("event")
        standing_run(session, campaign)
        return []
    start, occurrence = first_run(campaign, now)
    if kind == "once" and occurrence + (MAX_UTC_OFFSET * 2 if campaign.spec.get("local_time") else dt.timedelta()) < now - dt.timedelta(minutes=1):
        raise InvalidError("the send time is in the past", {"field": "schedule.at"})
    campaign.status = S.SCHEDULED
    campaign.next_run_at = start
    return []


def pause(session: Session, campaign: Campaign) -> None:
    if campaign.status not in (S.SCHEDULED, S.RUNNING):
        raise ConflictError(f"only a scheduled or running campaign can be paused; this one is {campaign.status}",
                            {"status": campaign.status})
    campaign.paused_from, campaign.status = campaign.status, S.PAUSED
    campaign.version += 1
    bump_config_version(session, campaign.app_id)


def resume(session: Session, campaign: Campaign) -> None:
    if campaign.status != S.PAUSED:
        raise ConflictError(f"only a paused campaign can be resumed; this one is {campaign.status}",
                            {"status": campaign.status})
    campaign.status, campaign.paused_from = campaign.paused_from or S.RUNNING, None
    campaign.version += 1
    bump_config_version(session, campaign.app_id)


def cancel(session: Session, campaign: Campaign, now: dt.datetime | None = None) -> None:
    """Stop for good: queued sends are suppressed (reason "cancelled"); sent ones stay sent."""
    now = now or utcnow()
    if campaign.status in (S.FINISHED, S.CANCELLED):
        raise ConflictError(f"the campaign is {campaign.status} already", {"status": campaign.status})
    campaign.status, campaign.next_run_at, campaign.finished_at = S.CANCELLED, None, now
    campaign.version += 1
    bump_config_version(session, campaign.app_id)
    session.execute(sa.update(Delivery)
                    .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.PENDING)
                    .values(status=DeliveryStatus.SUPPRESSED, reason="cancelled", updated_at=now))
    session.execute(sa.update(CampaignRun)
                    .where(CampaignRun.campaign_id == campaign.id,
                           CampaignRun.status.in_([RunStatus.PENDING, RunStatus.FANNING_OUT, RunStatus.SENDING]))
                    .values(status=RunStatus.CANCELLED, finished_at=now, updated_at=now))


# -- one person --------------------------------------------------------------------------------


def profile_for(session: Session, compiled: CompiledCampaign, user, now: dt.datetime):
    return load_profile(session, user, Or(tuple(compiled.nodes())), now)


def render_for(compiled: CompiledCampaign, arm: Arm, user) -> dict:
    """The arm's content rendered for this user (RenderError on a bad template or value)."""
    content = compiled.contents[arm.target_index][arm.variant]
    context = {} if content.constant else build_context(
        {f: getattr(user, f) for f in ("language", "country", "region", "city", "timezone")},
        user.attributes, external_id=user.external_id,
        campaign={"id": compiled.campaign_id, "name": compiled.campaign.name}, variant=arm.variant,
    )
    rendered = content.render(context)
    if compiled.campaign.channel == "inapp" and "html" in rendered:
        rendered["html"] = sanitize_html(rendered["html"])
    return rendered


def preview(session: Session, campaign: Campaign, user, now: dt.datetime | None = None) -> dict:
    """Exactly what a send or pull would give this user (CONTRACT.md preview shape)."""
    now = now or utcnow()
    compiled = CompiledCampaign(session, campaign)
    arm = compiled.arm_for(profile_for(session, compiled, user, now), user.external_id, now)
    if arm is None:
        return {"target": None, "variant": None, "control": False, "content": None}
    if arm.control:
        return {"target": arm.target_index, "variant": None, "control": True, "content": None}
    try:
        content = render_for(compiled, arm, user)
    except RenderError as exc:
        return {"target": arm.target_index, "variant": arm.variant, "control": False, "content": None,
                "error": exc.message}
    return {"target": arm.target_index, "variant": arm.variant, "control": False, "content": content}


TEST_RUN_AT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # the run that holds a campaign's test sends


def create_test_delivery(session: Session, campaign: Campaign, user, variant: str | None = None,
                         now: dt.datetime | None = None) -> Delivery:
    """A one-off send of one variant to one user, outside the audience, caps and quiet hours.

    Test deliveries live in their own run and carry a `test:` dedupe key; reports leave them out.
    """
    import uuid

    now = now or utcnow()
    if campaign.channel not in ("sms", "push"):
        raise ConflictError("test sends are for SMS and push campaigns; preview in-app and config campaigns")
    compiled = CompiledCampaign(session, campaign)
    arm = compiled.arm_for(profile_for(session, compiled, user, now), user.external_id, now)
    names = [(ti, v["name"]) for ti, t in enumerate(campaign.spec["targets"]) for v in t["variants"]]
    if variant is not None:
        matches = [(ti, name) for ti, name in names if name == variant]
        if not matches:
            raise InvalidError(f'no variant "{variant}" in this campaign', {"field": "variant"})
        target_index, variant = matches[0]
    elif arm is not None and not arm.control:
        target_index, variant = arm.target_index, arm.variant
    else:
        target_index, variant = names[0]
    run = session.scalar(sa.select(CampaignRun).where(CampaignRun.campaign_id == campaign.id,
                                                      CampaignRun.scheduled_for == TEST_RUN_AT))
    if run is None:
        run = start_run(session, campaign, TEST_RUN_AT, now, RunStatus.SENDING)
    delivery = Delivery(app_id=campaign.app_id, campaign_id=campaign.id, run_id=run.id, user_id=user.id,
                        dedupe_key=f"test:{uuid.uuid4().hex}", target_index=target_index, variant=variant,
                        control=False, status=DeliveryStatus.PENDING, send_after=now, attempts=0)
    session.add(delivery)
    session.flush()
    return delivery
