"""Receipts and replies from providers, applied to the database (the last step of a message's path).

`apply_twilio_status` moves a delivery with ONE conditional UPDATE whose WHERE clause comes from
`campaigns.states.allowed_from`, so the transition check and the write are atomic: duplicate and
out-of-order callbacks cannot move a delivery backwards, whatever the interleaving of requests.
`apply_signed_twilio_status` is the same UPDATE for the fast path (`webhooks.fastpath`), guarded
also by the auth token the signature verified with, run on a driver connection in autocommit.
`apply_inbound` turns STOP/START-style replies into opt-outs/opt-ins. It and `apply_twilio_status`
take the session first and never commit; the web layer verifies signatures and owns the
transaction (for the fast path, the statement is the transaction).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.models import Delivery
from campaigns.models import DeliveryStatus as S
from campaigns.states import TWILIO_STATUS, allowed_from
from segments.models import SmsOptOut, User
from segments.people import opt_in, opt_out  # noqa: F401  (the consent services the views use)
from tidings.config import Settings, provider_config
from tidings.db import utcnow
from tidings.models import App

log = logging.getLogger(__name__)

deliveries = Delivery.__table__
users = User.__table__
optouts = SmsOptOut.__table__
apps = App.__table__

# Twilio error 21610: "Attempt to send to unsubscribed recipient" (the number texted STOP to the sender).
TWILIO_UNSUBSCRIBED = "21610"

# Largest id a BIGINT column holds; a bigger `d` can only be junk.
MAX_ID = 2**63 - 1


class DeliveryApp(NamedTuple):
    app_id: int
    app_settings: Mapping


def delivery_app(session: Session, delivery_id: int) -> DeliveryApp | None:
    """The app a delivery belongs to, with its provider settings (for its auth token), or None."""
    row = session.execute(_DELIVERY_APP, {"d": delivery_id}).first()
    return None if row is None else DeliveryApp(row.app_id, row.settings or {})


_DELIVERY_APP = (
    sa.select(deliveries.c.app_id, apps.c.settings)
    .join_from(deliveries, apps, deliveries.c.app_id == apps.c.id)
    .where(deliveries.c.id == sa.bindparam("d"))
)


def _status_update(new: S) -> sa.Update:
    """The one UPDATE that moves a delivery to `new`, built once per target status.

    `provider_id` is recorded when still NULL (the worker may have died between Twilio's answer
    and its own write); a callback about another message (a different sid already recorded:
    a duplicate send) never moves this delivery. Any callback means Twilio accepted the message
    (our "sent"), so `sent_at` is set if still unset, whichever callback comes first.
    """
    c = deliveries.c
    now = sa.bindparam("now", type_=c.updated_at.type)
    values: dict = {
        "status": new.value,
        "provider_id": sa.func.coalesce(c.provider_id, sa.bindparam("sid", type_=c.provider_id.type)),
        "sent_at": sa.func.coalesce(c.sent_at, now),
        "updated_at": now,
    }
    if new is S.DELIVERED:
        values["delivered_at"] = now
    if new is S.FAILED:
        values["failed_at"] = now
        values["error"] = sa.bindparam("error", type_=c.error.type)
    return (
        sa.update(deliveries)
        .where(c.id == sa.bindparam("d"),
               _status_in(allowed_from(new)),
               sa.or_(c.provider_id.is_(None), c.provider_id == sa.bindparam("sid")))
        .values(values)
        .returning(c.app_id, c.user_id)
    )


def _status_in(statuses: Sequence[str]) -> sa.ColumnElement[bool]:
    """`status IN ('a', 'b')` with the statuses written into the SQL: they are constants of the
    transition table (plain identifiers), and inline they need no expanding parameter rendered
    again at every execution."""
    assert all(re.fullmatch(r"[a-z_]+", s) for s in statuses)
    return deliveries.c.status.in_([sa.literal_column(f"'{s}'", deliveries.c.status.type) for s in statuses])


_UPDATES = {status: _status_update(status) for status in set(TWILIO_STATUS.values())}


def apply_twilio_status(session: Session, delivery_id: int, message_sid: str, twilio_status: str,
                        error_code: str | None, now: dt.datetime | None = None, *,
                        to: str | None = None) -> bool:
    """Apply one Twilio status callback; True when the delivery moved.

    Unknown `twilio_status` values (e.g. "receiving") change nothing. A failure with error 21610
    (recipient unsubscribed at Twilio) also opts the number out for the delivery's app: `to`
    (the callback's signed `To`) or else the user's number on file.
    """
    twilio_status = (twilio_status or "").strip().lower()
    new = TWILIO_STATUS.get(twilio_status)
    if new is None:
        return False
    now = now or utcnow()
    error_code = (error_code or "").strip() or None
    params = {"d": delivery_id, "sid": message_sid, "now": now}
    if new is S.FAILED:
        # The error code when Twilio gives one, else Twilio's own status ("canceled", ...).
        params["error"] = error_code or twilio_status
    row = session.execute(_UPDATES[new], params).first()
    if new is S.FAILED and error_code == TWILIO_UNSUBSCRIBED:
        _opt_out_recipient(session, delivery_id, to, now)
    if row is None:
        log.debug("twilio %s for delivery %s (%s) changed nothing", twilio_status, delivery_id, message_sid)
    return row is not None


def _token_in_force() -> sa.ColumnElement[bool]:
    """`:token` is the auth token in force for the delivery's app (joined as `apps`): its own
    `twilio_auth_token` when set (non-empty), else the env one (`:env_token`), as
    `tidings.config.provider_config` resolves it."""
    own = sa.func.nullif(sa.func.jsonb_extract_path_text(apps.c.settings, "twilio_auth_token"), "")
    return sa.func.coalesce(own, sa.bindparam("env_token", type_=sa.Text)) == sa.bindparam("token", type_=sa.Text)


def _signed_status_update(new: S) -> sa.Update:
    """`_status_update(new)`, applied only when `:token` is the one in force for the delivery's app.

    This lets the web layer verify a signature against a token it merely guessed (the env
    token, or one it verified earlier) and still write nothing unless the database agrees, in
    the same statement as the write: no token cache can go stale, a rotated token stops
    working at once.
    """
    return _status_update(new).where(apps.c.id == deliveries.c.app_id, _token_in_force())


_SIGNED_UPDATES = {status: _signed_status_update(status) for status in set(TWILIO_STATUS.values())}
# Is there such a delivery, of an app whose token is `:token`? (For callbacks that move nothing.)
_SIGNED_DELIVERY = (
    sa.select(deliveries.c.app_id)
    .join_from(deliveries, apps, apps.c.id == deliveries.c.app_id)
    .where(deliveries.c.id == sa.bindparam("d"), _token_in_force())
)

_PER_CALLBACK = frozenset({"d", "sid", "now", "error", "token", "env_token"})


class _DriverStatement(NamedTuple):
    sql: str
    constants: dict


@functools.cache
def _driver_statement(key: S | None) -> _DriverStatement:
    """A signed UPDATE (or, for None, the delivery check) as psycopg SQL and its constant
    parameters, compiled once."""
    from sqlalchemy.dialects.postgresql import psycopg

    compiled = (_SIGNED_DELIVERY if key is None else _SIGNED_UPDATES[key]).compile(dialect=psycopg.dialect())
    return _DriverStatement(compiled.string, {k: v for k, v in compiled.params.items() if k not in _PER_CALLBACK})


class SignedReceipt(enum.StrEnum):
    APPLIED = "applied"      # the delivery moved
    UNCHANGED = "unchanged"  # the token's app's delivery, and nothing to move (answer as the view does)
    HAND_OVER = "hand_over"  # not decided here: no such delivery for this token, or a 21610 failure


def apply_signed_twilio_status(cursor, delivery_id: int, message_sid: str, twilio_status: str,
                               error_code: str | None, token: str, env_token: str | None,
                               now: dt.datetime) -> SignedReceipt:
    """Apply a status callback already verified with `token`: ONE statement when it moves the
    delivery, one more (a primary-key read) when it does not.

    `cursor` is on a psycopg connection in autocommit mode, so the receipt is durable on return
    (the statements are SQLAlchemy's, compiled once; executed on the driver and prepared
    server-side they cost a fraction of the CPU of a Core execution). UNCHANGED covers what the
    full path (`delivery_app` + `apply_twilio_status`) also answers with no change: a duplicate, an
    out-of-order callback, another message's sid, an unknown status. HAND_OVER: no delivery of an
    app using `token` (unknown id, or the signature was made with another app's token), or a
    21610 failure, which must also opt the number out; the caller takes the full path.
    """
    twilio_status = (twilio_status or "").strip().lower()
    new = TWILIO_STATUS.get(twilio_status)
    error_code = (error_code or "").strip() or None
    if new is S.FAILED and error_code == TWILIO_UNSUBSCRIBED:
        return SignedReceipt.HAND_OVER
    params = {"d": delivery_id, "token": token, "env_token": env_token}
    if new is not None:
        statement = _driver_statement(new)
        values = {**statement.constants, **params, "sid": message_sid, "now": now}
        if new is S.FAILED:
            values["error"] = error_code or twilio_status
        cursor.execute(statement.sql, values, prepare=True)
        if cursor.fetchone() is not None:
            return SignedReceipt.APPLIED
    statement = _driver_statement(None)
    cursor.execute(statement.sql, {**statement.constants, **params}, prepare=True)
    return SignedReceipt.HAND_OVER if cursor.fetchone() is None else SignedReceipt.UNCHANGED


def _opt_out_recipient(session: Session, delivery_id: int, to: str | None, now: dt.datetime) -> None:
    row = session.execute(
        sa.select(deliveries.c.app_id, users.c.phone)
        .join_from(deliveries, users, deliveries.c.user_id == users.c.id)
        .where(deliveries.c.id == delivery_id)
    ).first()
    if row is None:
        return
    phone = (to or "").strip() or row.phone
    if phone:
        opt_out(session, [row.app_id], phone, now)


# -- inbound messages ----------------------------------------------------------------------------

class InboundAction(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


# Twilio's default opt-out and opt-in keywords (CONTRACT.md "Providers"), in their matching form.
OPT_OUT_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
OPT_IN_KEYWORDS = frozenset({"start", "yes", "unstop"})

_NOT_WORD = re.compile(r"[\W_]+")


def keyword_of(body: str | None) -> str:
    """The matching form of a reply: Unicode-normalised, case-folded, with everything that is not a
    letter or digit removed, so " stop ", "Stop.", "STOP!", "Opt  Out", "opt-out" and "OPTOUT" are all
    one keyword. Only a reply that is nothing but a keyword counts: "stop texting me" is not "stop".
    """
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", body or "").casefold())


def inbound_action(body: str | None, opt_out_type: str | None = None) -> InboundAction | None:
    """What a reply asks for. Twilio's Advanced Opt-Out names its own match in `OptOutType`
    (STOP/START/HELP, covering custom and localised keywords); it wins when present."""
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP":
        return InboundAction.OPT_OUT
    if kind == "START":
        return InboundAction.OPT_IN
    word = keyword_of(body)
    if word in OPT_OUT_KEYWORDS:
        return InboundAction.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return InboundAction.OPT_IN
    return None


class SenderApp(NamedTuple):
    app_id: int
    auth_token: str | None


def apps_for_sender(session: Session, settings: Settings, to: str | None,
                    messaging_service_sid: str | None) -> list[SenderApp]:
    """Apps whose effective Twilio sender (env settings overridden per app) received this message:
    `twilio_from` equal to `To`, or `twilio_messaging_service_sid` equal to `MessagingServiceSid`."""
    to = (to or "").strip()
    service = (messaging_service_sid or "").strip()
    if not to and not service:
        return []
    found = []
    for app_id, app_settings in session.execute(sa.select(apps.c.id, apps.c.settings).order_by(apps.c.id)):
        config = provider_config(settings, app_settings)
        sender = (config.get("twilio_from") or "").strip()
        sender_service = (config.get("twilio_messaging_service_sid") or "").strip()
        if (to and sender == to) or (service and sender_service == service):
            found.append(SenderApp(app_id, config.get("twilio_auth_token")))
    return found


def apply_inbound(session: Session, app_ids: Sequence[int], from_number: str | None, body: str | None, *,
                  opt_out_type: str | None = None, now: dt.datetime | None = None) -> InboundAction | None:
    """Apply a reply from `from_number` to the apps it concerns (their signatures already checked).

    STOP-style keywords opt the number out at once; START/YES/UNSTOP opt it back in; anything
    else changes nothing. Returns what was done.
    """
    phone = (from_number or "").strip()
    action = inbound_action(body, opt_out_type)
    if action is None or not phone or not app_ids:
        return None
    if action is InboundAction.OPT_OUT:
        opt_out(session, app_ids, phone, now)
    else:
        opt_in(session, app_ids, phone, now)
    log.info("sms %s for apps %s from %s", action, list(app_ids), _mask(phone))
    return action


def _mask(phone: str) -> str:
    """Logs name a number by its last digits only."""
    return "..." + phone[-4:]
