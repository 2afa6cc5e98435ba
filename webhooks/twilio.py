"""Twilio's callbacks: delivery receipts (status) and replies (inbound), signature first, always.

Every request is checked against `X-Twilio-Signature` over PUBLIC_BASE_URL + path + query
(CONTRACT.md) before anything is read or written; a bad or missing signature answers 403 and
changes nothing. The views only verify, call `webhooks.receipts` and commit.

Most status callbacks never reach the status view: `webhooks.fastpath` verifies and applies a
well-formed, signed receipt in one statement in front of Flask. Whatever it does not take
(forged, unknown delivery, malformed, 21610, a token it has not seen verify yet, SQLite) comes
here, and this view decides it with the app's token read afresh.
"""

from __future__ import annotations

import logging
import re

from flask import Response, current_app, request
from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from tidings.api.errors import error_response
from tidings.config import Settings, provider_config
from tidings.db import utcnow
from tidings.web import db_session
from webhooks import bp, fastpath, receipts

log = logging.getLogger(__name__)

_DELIVERY_ID = re.compile(r"[0-9]{1,19}")


def _settings() -> Settings:
    return current_app.config["TIDINGS"]


def signed_url(settings: Settings) -> str:
    """The URL Twilio signed: the public base URL (not what the proxy in front of us rewrote it
    to) + path + the query string exactly as received."""
    query = request.query_string.decode("latin-1")
    return settings.public_base_url + request.path + ("?" + query if query else "")


def signature_valid(settings: Settings, token: str | None) -> bool:
    """True when the request carries Twilio's signature made with `token` over this URL and form."""
    signature = request.headers.get(SIGNATURE_HEADER)
    if not token or not signature:
        return False
    if RequestValidator(token).validate(signed_url(settings), request.form, signature):
        return True
    if request.headers.get(SIGNATURE_SETTINGS_HEADER):
        log.warning("a Twilio webhook was signed with a SharedKey (%s); Tidings verifies with the "
                    "account auth token only: remove the webhook signing rule for this URL",
                    SIGNATURE_SETTINGS_HEADER)
    return False


def _forbidden():
    return error_response(403, "forbidden", "the request does not carry a valid Twilio signature for this URL")


def _parse_delivery_id(raw: str | None) -> int | None:
    if raw is None or not _DELIVERY_ID.fullmatch(raw):
        return None
    value = int(raw)
    return value if 0 < value <= receipts.MAX_ID else None


@bp.post("/twilio/status")
def twilio_status():
    """A delivery receipt for `?d={delivery_id}`: 204 when taken (applied, duplicate or ignored)."""
    settings = _settings()
    session = db_session()
    delivery_id = _parse_delivery_id(request.args.get("d"))
    target = receipts.delivery_app(session, delivery_id) if delivery_id is not None else None
    # No delivery, no app: only the env account can have signed it.
    token = (provider_config(settings, target.app_settings)["twilio_auth_token"] if target
             else settings.twilio_auth_token)
    if not signature_valid(settings, token):
        return _forbidden()
    if target is not None:
        fastpath.tokens.remember(token)  # the fast path may try it first next time
    if delivery_id is None:
        return error_response(400, "malformed", "`d` must be a delivery id", {"field": "d"})
    if target is None:
        return error_response(404, "not_found", f"no delivery {delivery_id}", {"delivery_id": delivery_id})
    sid = (request.form.get("MessageSid") or request.form.get("SmsSid") or "").strip()
    if not sid:
        return error_response(400, "malformed", "MessageSid is missing", {"field": "MessageSid"})
    status = request.form.get("MessageStatus") or request.form.get("SmsStatus") or ""
    receipts.apply_twilio_status(session, delivery_id, sid, status, request.form.get("ErrorCode"), utcnow(),
                                 to=request.form.get("To"))
    session.commit()
    return Response(status=204)


@bp.post("/twilio/inbound")
def twilio_inbound():
    """A reply to one of our senders: STOP-style keywords opt out, START/YES/UNSTOP opt back in.

    Answers an empty TwiML <Response/>: Twilio's own opt-out handling already texts the
    confirmation carriers require for STOP and START, and a second reply of ours would either
    duplicate it or (after STOP) be refused by Twilio with error 21610.
    """
    settings = _settings()
    session = db_session()
    form = request.form
    candidates = receipts.apps_for_sender(session, settings, form.get("To"), form.get("MessagingServiceSid"))
    # Verify once per distinct token: the apps concerned are those whose account signed this.
    verdicts: dict[str | None, bool] = {}
    app_ids = []
    for app in candidates:
        if app.auth_token not in verdicts:
            verdicts[app.auth_token] = signature_valid(settings, app.auth_token)
        if verdicts[app.auth_token]:
            app_ids.append(app.app_id)
    if not app_ids:
        return _forbidden()
    receipts.apply_inbound(session, app_ids, form.get("From"), form.get("Body"),
                           opt_out_type=form.get("OptOutType"), now=utcnow())
    session.commit()
    return Response(str(MessagingResponse()), status=200, mimetype="text/xml")
