"""The send job: one batch of deliveries through one channel, exactly once each.

Order of work, after GOV.UK Notify: re-read the batch's `pending` deliveries (so a repeat job
does nothing), decide each (defer for local time or quiet hours, suppress with a reason,
render), reserve frequency-cap slots, mark the survivors `sending` and COMMIT, close the
session, call the provider, then record the outcomes with conditional updates that never move a
delivery backwards (`campaigns.states`). A worker killed after the commit leaves deliveries in
`sending`: an SMS's status callback settles it, and the sweeper returns what no provider ever
saw to `pending` after a grace period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import threading
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa

from campaigns.models import BatchStatus, Campaign, CampaignStatus, Delivery, DeliveryBatch, DeliveryStatus
from campaigns.service import effective_quiet_hours, profile_for, render_for
from campaigns.states import allowed_from
from campaigns.targeting import Arm, CompiledCampaign
from campaigns.templates import RenderError
from channels.base import Channel, OutboundMessage, SendResult
from channels.errors import ChannelError, PermanentChannelError
from channels.registry import build_channel
from scheduler import queues, throttle, timing
from segments.models import Device, SmsOptOut, User
from segments import people
from segments.people import phone_hash
from tidings import config as tconfig
from tidings.db import bulk_update, session_scope, utcnow
from tidings.models import App

log = logging.getLogger(__name__)

JOB = "scheduler.send.send_batch"
MAX_ATTEMPTS = 6
RETRY_BASE = dt.timedelta(seconds=30)
S = DeliveryStatus
deliveries = Delivery.__table__


@dataclasses.dataclass
class Outcome:
    delivery_id: int
    user_id: int
    status: str | None = None  # sent / failed / pending (retry)
    provider_id: str | None = None
    reason: str | None = None
    error: str | None = None
    retry_after: float | None = None


# -- channels, one per provider configuration per process ------------------------------------

_channels: dict[tuple, Channel] = {}
_channels_lock = threading.Lock()


def channel_settings(channel: str, config: dict) -> dict:
    if channel == "sms":
        return {"account_sid": config["twilio_account_sid"], "auth_token": config["twilio_auth_token"],
                "from_number": config.get("twilio_from"),
                "messaging_service_sid": config.get("twilio_messaging_service_sid"),
                "api_base_url": config.get("twilio_api_base_url")}
    return {"credentials_path": _credentials_file(config["fcm_credentials"]),
            "api_base_url": config.get("fcm_api_base_url")}


def _credentials_file(value: str) -> str:
    """A path as given, or (per-app settings saved in the UI) the JSON document written to a file."""
    if not value.lstrip().startswith("{"):
        return value
    folder = Path(tconfig.current().instance_path) / "credentials"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fcm-{hashlib.sha256(value.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        path.write_text(value)
        path.chmod(0o600)
    return str(path)


def close_channels() -> None:
    """Close every cached channel (their pooled connections); tests and shutdown call this."""
    with _channels_lock:
        for channel in _channels.values():
            channel.close()
        _channels.clear()


def get_channel(channel: str, config: dict) -> Channel:
    settings = channel_settings(channel, config)
    key = (channel, json.dumps(settings, sort_keys=True))
    with _channels_lock:
        if key not in _channels:
            _channels[key] = build_channel(channel, settings)
        return _channels[key]


# -- compiled campaigns, cached per (id, version, last change) ---------------------------------------------

_compiled: dict[tuple, CompiledCampaign] = {}


def compiled_campaign(session, campaign: Campaign) -> CompiledCampaign:
    key = (campaign.id, campaign.version, campaign.updated_at)
    if key not in _compiled:
        if len(_compiled) > 256:
            _compiled.clear()
        _compiled[key] = CompiledCampaign(session, campaign)
    return _compiled[key]


# -- the job -----------------------------------------------------------------------------------


def send_batch(batch_id: int, force: bool = False) -> dict:
    """The RQ job. Safe to run twice, or after a crash: only `pending` deliveries are taken.

    `force` (test sends): send even though the campaign is not running, outside quiet hours
    and frequency caps.
    """
    now = utcnow()
    settings = tconfig.current()
    with session_scope() as session:
        batch = session.get(DeliveryBatch, batch_id)
        if batch is None or batch.status == BatchStatus.DONE:
            return {"skipped": "done"}
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign.status == CampaignStatus.CANCELLED and not force:
            batch.status = BatchStatus.DONE
            return {"skipped": "cancelled"}
        if campaign.status != CampaignStatus.RUNNING and not force:
            return {"skipped": campaign.status}  # paused: queued again on resume
        app = session.get(App, campaign.app_id)
        provider = tconfig.provider_config(settings, app.settings)
        prepared = _prepare(session, campaign, batch, provider, now, force)
    if prepared is None:
        return {"sent": 0}
    channel_name, messages, owners, reserved = prepared
    outcomes, dead_tokens, unsubscribed = _deliver(campaign, channel_name, provider, messages, owners)
    with session_scope() as session:
        _record(session, campaign, outcomes, dead_tokens, unsubscribed, reserved, now)
        _close_batch(session, batch_id)
    return {"sent": sum(1 for o in outcomes.values() if o.status == S.SENT)}


def _prepare(session, campaign: Campaign, batch: DeliveryBatch, provider: dict, now: dt.datetime,
             force: bool = False):
    rows = session.execute(
        sa.select(Delivery.id, Delivery.user_id, Delivery.target_index, Delivery.variant, Delivery.control,
                  Delivery.send_after, Delivery.attempts, User)
        .join(User, User.id == Delivery.user_id)
        .where(Delivery.batch_id == batch.id, Delivery.status == S.PENDING)
        .order_by(Delivery.id)
    ).all()
    if not rows:
        batch.status = BatchStatus.DONE
        return None
    compiled = compiled_campaign(session, campaign)
    quiet = None if force else effective_quiet_hours(campaign)
    channel = campaign.channel
    opted_out: set[str] = set()
    tokens: dict[int, list[str]] = defaultdict(list)
    if channel == "sms":
        hashes = {phone_hash(campaign.app_id, r.User.phone): r.User.phone for r in rows if r.User.phone}
        opted_out = {hashes[h] for h in session.scalars(
            sa.select(SmsOptOut.phone_hash).where(SmsOptOut.app_id == campaign.app_id,
                                                  SmsOptOut.phone_hash.in_(list(hashes))))}
    else:
        for user_id, token in session.execute(
            sa.select(Device.user_id, Device.push_token)
            .where(Device.user_id.in_([r.user_id for r in rows]), Device.push_token.is_not(None),
                   Device.push_token_valid.is_(True)).order_by(Device.id)
        ):
            tokens[user_id].append(token)

    updates, candidates, dropped, held_out, assigned = [], [], [], [], []
    for r in rows:
        user = r.User
        later = timing.quiet_until(max(now, r.send_after), user.timezone, quiet) if r.send_after <= now else r.send_after
        if later is not None and later > now:
            updates.append({"id": r.id, "status": S.PENDING, "reason": None, "error": None,
                            "send_after": later, "batch_id": None})
            continue
        if r.target_index is None:  # a triggered send: who it is for is decided now
            arm = compiled.arm_for(profile_for(session, compiled, user, now), user.external_id, now)
            if arm is None or arm.control:
                (dropped if arm is None else held_out).append((r.id, arm))
                continue
            assigned.append({"id": r.id, "target_index": arm.target_index, "variant": arm.variant})
        else:
            arm = Arm(r.target_index, r.control, r.variant, None)
        reason = _suppression(channel, user, opted_out, tokens)
        if reason:
            updates.append({"id": r.id, "status": S.SUPPRESSED, "reason": reason, "error": None,
                            "send_after": r.send_after, "batch_id": None})
            continue
        try:
            content = render_for(compiled, arm, user)
        except RenderError as exc:
            updates.append({"id": r.id, "status": S.FAILED, "reason": "render_error", "error": exc.message,
                            "send_after": r.send_after, "batch_id": None})
            continue
        candidates.append((r, user, content))
    if dropped:  # no longer in the audience when the delay ran out: nothing to send or count
        session.execute(sa.delete(deliveries).where(deliveries.c.id.in_([d for d, _ in dropped]),
                                                    deliveries.c.status == S.PENDING))
    bulk_update(session, deliveries, [
        {"id": delivery_id, "target_index": arm.target_index} for delivery_id, arm in held_out],
        values={"status": S.CONTROL, "reason": "control", "control": True, "batch_id": None, "updated_at": now})
    bulk_update(session, deliveries, assigned)
    bulk_update(session, deliveries, updates, where=deliveries.c.status == S.PENDING, values={"updated_at": now})
    if not candidates:
        return None

    allowed = throttle.reserve(queues.connection(), campaign.app_id, [r.user_id for r, _, _ in candidates],
                               [r.id for r, _, _ in candidates], None if force else campaign.spec.get("frequency_cap"))
    capped = [r.id for (r, _, _), ok in zip(candidates, allowed, strict=True) if not ok]
    if capped:
        session.execute(sa.update(deliveries).where(deliveries.c.id.in_(capped), deliveries.c.status == S.PENDING)
                        .values(status=S.SUPPRESSED, reason="frequency_cap", batch_id=None, updated_at=now))
    candidates = [c for c, ok in zip(candidates, allowed, strict=True) if ok]
    if not candidates:
        return None
    # Mark `sending` and commit BEFORE any provider call: a repeat of this job skips them.
    marked = {row.id for row in bulk_update(
        session, deliveries, [{"id": r.id, "content": content} for r, _, content in candidates],
        where=deliveries.c.status == S.PENDING,
        values={"status": S.SENDING, "sending_at": now, "attempts": deliveries.c.attempts + 1, "updated_at": now},
        returning=(deliveries.c.id,))}
    lost = [r for r, _, _ in candidates if r.id not in marked]  # a concurrent copy of this job took them
    if lost:
        throttle.release(queues.connection(), campaign.app_id, [r.user_id for r in lost], [r.id for r in lost])
    base = provider.get("public_base_url") or tconfig.current().public_base_url
    messages, owners = [], []
    for r, user, content in candidates:
        if r.id not in marked:
            continue
        if channel == "sms":
            messages.append(OutboundMessage(r.id, user.phone, content,
                                            f"{base}/webhooks/twilio/status?d={r.id}"))
            owners.append((r.id, r.user_id, None))
        else:
            for token in tokens[r.user_id]:
                messages.append(OutboundMessage(r.id, token, content))
                owners.append((r.id, r.user_id, token))
    return channel, messages, owners, {r.id: r.user_id for r, _, _ in candidates if r.id in marked}


def _suppression(channel: str, user: User, opted_out: set[str], tokens: dict[int, list[str]]) -> str | None:
    if channel == "sms":
        if not user.phone:
            return "no_phone"
        if user.phone in opted_out:
            return "opted_out"
        if not user.sms_opt_in:
            return "not_opted_in"
        return None
    if not user.push_opt_in:
        return "push_opted_out"
    if not tokens.get(user.id):
        return "no_push_token"
    return None


def _deliver(campaign: Campaign, channel_name: str, provider: dict, messages: list[OutboundMessage],
             owners: list[tuple]) -> tuple[dict[int, Outcome], list[str], list[str]]:
    """Call the provider under the campaign's rate limit.

    Returns one Outcome per delivery, push tokens that are dead, and numbers that opted out.
    """
    outcomes: dict[int, Outcome] = {}
    for delivery_id, user_id, _ in owners:
        outcomes.setdefault(delivery_id, Outcome(delivery_id, user_id))
    per_second = campaign.spec.get("rate_limit_per_second")
    channel = get_channel(channel_name, provider)
    results: list[SendResult | ChannelError | None] = [None] * len(messages)
    start = 0
    while start < len(messages):
        granted = throttle.acquire(queues.connection(), campaign.id, per_second, len(messages) - start)
        if granted == 0:
            break  # the rest stays `sending` -> back to pending below
        chunk = messages[start:start + granted]
        results[start:start + granted] = channel.send_batch(chunk)
        start += granted
    dead_tokens, unsubscribed = [], []
    for message, (delivery_id, _, token), result in zip(messages, owners, results, strict=True):
        o = outcomes[delivery_id]
        if isinstance(result, SendResult):
            o.status, o.provider_id = S.SENT, o.provider_id or result.provider_id
        elif o.status == S.SENT:
            pass  # another device of the same person got it
        elif isinstance(result, PermanentChannelError):
            if getattr(result, "deactivate_token", False) and token:
                dead_tokens.append(token)
            if channel_name == "sms" and result.code == "unsubscribed":  # Twilio 21610: STOP was sent
                unsubscribed.append(message.to)
            if o.status is None or o.status == S.FAILED:
                o.status, o.reason, o.error = S.FAILED, result.code, result.message
        else:  # transient, or not attempted under the rate limit
            o.status = S.PENDING
            o.reason = result.code if isinstance(result, ChannelError) else "rate_limited"
            o.error = result.message if isinstance(result, ChannelError) else None
            o.retry_after = getattr(result, "retry_after", None)
    return outcomes, dead_tokens, unsubscribed


def _record(session, campaign: Campaign, outcomes: dict[int, Outcome], dead_tokens: list[str],
            unsubscribed: list[str], reserved: dict[int, int], now: dt.datetime) -> None:
    for phone in unsubscribed:
        people.opt_out(session, [campaign.app_id], phone, now)
    if dead_tokens:
        session.execute(sa.update(Device).where(Device.app_id == campaign.app_id,
                                                Device.push_token.in_(dead_tokens))
                        .values(push_token_valid=False, updated_at=now))
    sent = [o for o in outcomes.values() if o.status == S.SENT]
    failed = [o for o in outcomes.values() if o.status == S.FAILED]
    retry = [o for o in outcomes.values() if o.status == S.PENDING]
    # A receipt may have arrived first (and moved it on): these only move forward.
    bulk_update(session, deliveries, [{"id": o.delivery_id, "provider_id": o.provider_id} for o in sent],
                where=_status_in(allowed_from(S.SENT)), values={"status": S.SENT, "sent_at": now, "updated_at": now})
    bulk_update(session, deliveries, [{"id": o.delivery_id, "reason": o.reason, "error": o.error} for o in failed],
                where=_status_in(allowed_from(S.FAILED)), values={"status": S.FAILED, "failed_at": now, "updated_at": now})
    if retry:
        attempts = dict(session.execute(sa.select(deliveries.c.id, deliveries.c.attempts)
                                        .where(deliveries.c.id.in_([o.delivery_id for o in retry]))).all())
        rows = []
        for o in retry:
            n = attempts.get(o.delivery_id, 1)
            wait = max(o.retry_after or 0, (RETRY_BASE * 2 ** (n - 1)).total_seconds())
            gave_up = n >= MAX_ATTEMPTS
            rows.append({"id": o.delivery_id, "status": S.FAILED if gave_up else S.PENDING,
                         "reason": "gave_up" if gave_up else o.reason, "error": o.error,
                         "send_after": now + dt.timedelta(seconds=wait), "failed_at": now if gave_up else None})
        bulk_update(session, deliveries, rows, where=deliveries.c.status == S.SENDING,
                    values={"batch_id": None, "updated_at": now})
    not_sent = [o for o in outcomes.values() if o.status != S.SENT and o.delivery_id in reserved]
    if not_sent:
        throttle.release(queues.connection(), campaign.app_id, [reserved[o.delivery_id] for o in not_sent],
                         [o.delivery_id for o in not_sent])


def _status_in(statuses: list[str]) -> sa.ColumnElement[bool]:
    """`status IN (...)` spelled with literals, so it also works in executemany updates."""
    return sa.or_(*(deliveries.c.status == sa.literal(s) for s in statuses))


def _close_batch(session, batch_id: int) -> None:
    left = session.scalar(sa.select(sa.func.count()).select_from(deliveries)
                          .where(deliveries.c.batch_id == batch_id, deliveries.c.status == S.PENDING))
    if not left:
        session.execute(sa.update(DeliveryBatch).where(DeliveryBatch.id == batch_id)
                        .values(status=BatchStatus.DONE, updated_at=utcnow()))
