"""POST /webhooks/twilio/inbound: STOP-style replies opt out at once, START/YES/UNSTOP opt back in."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from segments.models import SmsOptOut, User
from segments.people import is_sms_opted_out
from tests.conftest import Api
from tests.factories import make_app, make_user
from tidings.db import session_scope
from webhooks.receipts import keyword_of

BASE = "https://tidings.example.com"
URL = f"{BASE}/webhooks/twilio/inbound"
ACCOUNT = "AC" + "1" * 32
ENV_TOKEN = "env-auth-token-0123456789abcdef"
ENV_SENDER = "+15005550006"
B_SENDER, B_TOKEN = "+15005550001", "b-own-token"
C_SERVICE, C_TOKEN, C_POOL_NUMBER = "MG" + "c" * 32, "c-own-token", "+15005550009"
PHONE = "+14155550134"
OTHER_PHONE = "+14155550199"


@pytest.fixture
def wh_app(clean_db, redis_conn, settings):
    import webhooks
    from tidings.app import create_app

    application = create_app(dataclasses.replace(
        settings, public_base_url=BASE, twilio_account_sid=ACCOUNT, twilio_auth_token=ENV_TOKEN,
        twilio_from=ENV_SENDER))
    application.config["TESTING"] = True
    if "webhooks" not in application.blueprints:  # until tidings/app.py registers it
        webhooks.init_app(application)
    return application


@pytest.fixture
def client(wh_app):
    return wh_app.test_client()


@pytest.fixture
def apps(wh_app):
    """A and D send from the env number; B from its own number and account; C through a
    messaging service of its own account. Users with PHONE in A (two), B, C and D."""
    with session_scope() as s:
        a, a_key, _ = make_app(s, "A")
        b, _, _ = make_app(s, "B")
        c, _, _ = make_app(s, "C")
        d, _, _ = make_app(s, "D")
        b.settings = {"twilio_from": B_SENDER, "twilio_auth_token": B_TOKEN, "twilio_account_sid": "AC" + "b" * 32}
        c.settings = {"twilio_messaging_service_sid": C_SERVICE, "twilio_auth_token": C_TOKEN,
                      "twilio_from": C_POOL_NUMBER}
        for app in (a, b, c, d):
            make_user(s, app, "u1", phone=PHONE, sms_opt_in=True)
        make_user(s, a, "u2", phone=PHONE, sms_opt_in=True)
        make_user(s, a, "other", phone=OTHER_PHONE, sms_opt_in=True)
        return {"A": a.id, "B": b.id, "C": c.id, "D": d.id, "a_key": a_key}


def inbound(client, body, *, to=ENV_SENDER, from_=PHONE, token=ENV_TOKEN, service=None, signature=None,
            extra=None, signed_url=URL):
    form = {"ToCountry": "US", "SmsMessageSid": "SM" + "9" * 32, "NumMedia": "0", "MessageSid": "SM" + "9" * 32,
            "AccountSid": ACCOUNT, "From": from_, "To": to, "Body": body, "NumSegments": "1", "ApiVersion": "2010-04-01"}
    if service:
        form["MessagingServiceSid"] = service
    form.update(extra or {})
    if signature is None:
        signature = RequestValidator(token).compute_signature(signed_url, form)
    headers = {} if signature is False else {"X-Twilio-Signature": signature}
    return client.post("/webhooks/twilio/inbound", data=form, headers=headers)


def opted_in(app_id: int, external_id: str = "u1") -> bool:
    with session_scope() as s:
        return s.scalar(sa.select(User.sms_opt_in).where(User.app_id == app_id, User.external_id == external_id))


def opted_out(app_id: int, phone: str = PHONE) -> bool:
    with session_scope() as s:
        return is_sms_opted_out(s, app_id, phone)


def optout_rows() -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(SmsOptOut))


def assert_empty_twiml(r):
    assert r.status_code == 200
    assert r.mimetype == "text/xml"
    root = ET.fromstring(r.data)
    assert root.tag == "Response" and len(root) == 0


STOP_VARIANTS = [
    "STOP", "stop", "Stop", " stop ", "sToP\n", "\tSTOP\t", "Stop.", "STOP!",
    "STOPALL", "stopall", "StopAll", "stop all",
    "UNSUBSCRIBE", "unsubscribe", " Unsubscribe ",
    "CANCEL", "cancel", "Cancel ",
    "END", "end", " End.",
    "QUIT", "quit", "Quit!",
    "REVOKE", "revoke", "Revoke",
    "OPT OUT", "opt out", "Opt  Out", " opt\tout ", "OPTOUT", "optout", "opt-out", "Opt_Out",
    "\uff33\uff34\uff2f\uff30",  # full-width STOP
]


@pytest.mark.parametrize("body", STOP_VARIANTS)
def test_stop_keywords_opt_the_number_out_at_once(client, apps, body):
    r = inbound(client, body)
    assert_empty_twiml(r)
    # Every app sending from the number that received the reply: A and D (both on the env sender).
    assert opted_out(apps["A"]) and opted_out(apps["D"])
    assert not opted_in(apps["A"], "u1") and not opted_in(apps["A"], "u2") and not opted_in(apps["D"])
    # Not apps on other senders, not other numbers.
    assert not opted_out(apps["B"]) and opted_in(apps["B"])
    assert not opted_out(apps["C"]) and opted_in(apps["C"])
    assert opted_in(apps["A"], "other") and not opted_out(apps["A"], OTHER_PHONE)


@pytest.mark.parametrize("body", ["START", "start", " Start ", "YES", "yes", "Yes!", "UNSTOP", "unstop", "UnStop."])
def test_start_yes_unstop_opt_back_in(client, apps, body):
    inbound(client, "STOP")
    assert opted_out(apps["A"]) and not opted_in(apps["A"])
    assert_empty_twiml(inbound(client, body))
    assert not opted_out(apps["A"]) and not opted_out(apps["D"])
    assert opted_in(apps["A"], "u1") and opted_in(apps["A"], "u2") and opted_in(apps["D"])
    assert optout_rows() == 0


def test_start_sets_opt_in_even_without_a_previous_stop(client, apps):
    with session_scope() as s:
        s.execute(sa.update(User).where(User.app_id == apps["A"]).values(sms_opt_in=False))
    inbound(client, "START")
    assert opted_in(apps["A"], "u1") and opted_in(apps["A"], "u2")


@pytest.mark.parametrize("body", ["stop texting me", "Please stop", "stopped", "Yes please", "hello", "",
                                  "HELP", "INFO", "end of story", "starting", "unsubscribe me", "STOP2"])
def test_other_replies_change_nothing(client, apps, body):
    assert_empty_twiml(inbound(client, body))
    assert optout_rows() == 0
    assert all(opted_in(apps[k]) for k in "ABCD")


@pytest.mark.parametrize("body", ["hello", "HELP", "please start again", "STOP"])
def test_other_replies_keep_an_opt_out(client, apps, body):
    inbound(client, "STOP")
    assert_empty_twiml(inbound(client, body))
    assert opted_out(apps["A"]) and not opted_in(apps["A"])


def test_stop_is_idempotent(client, apps):
    for _ in range(3):
        assert_empty_twiml(inbound(client, "STOP"))
    assert optout_rows() == 2  # A and D, once each


def test_sender_with_its_own_number_and_token(client, apps):
    assert inbound(client, "STOP", to=B_SENDER, token=ENV_TOKEN).status_code == 403  # B's account signs
    assert not opted_out(apps["B"])
    assert_empty_twiml(inbound(client, "STOP", to=B_SENDER, token=B_TOKEN))
    assert opted_out(apps["B"]) and not opted_in(apps["B"])
    assert not opted_out(apps["A"]) and not opted_out(apps["D"])


def test_messaging_service_routes_to_the_app_using_it(client, apps):
    assert_empty_twiml(inbound(client, "stop", to="+15005550111", service=C_SERVICE, token=C_TOKEN))
    assert opted_out(apps["C"]) and not opted_in(apps["C"])
    assert not any(opted_out(apps[k]) for k in "ABD")


def test_advanced_opt_out_type_is_honoured(client, apps):
    # Twilio's Advanced Opt-Out matched a custom/localised keyword and says so in OptOutType.
    inbound(client, "ARRET", extra={"OptOutType": "STOP"})
    assert opted_out(apps["A"])
    inbound(client, "Commencer", extra={"OptOutType": "START"})
    assert not opted_out(apps["A"]) and opted_in(apps["A"])
    inbound(client, "AIDE", extra={"OptOutType": "HELP"})
    assert not opted_out(apps["A"])


# -- signatures -----------------------------------------------------------------------------------

def test_bad_signature_answers_403_and_changes_nothing(client, apps):
    assert inbound(client, "STOP", token="forged").status_code == 403
    assert inbound(client, "STOP", signature=False).status_code == 403
    assert inbound(client, "STOP", signature="").status_code == 403
    assert inbound(client, "STOP", signed_url="http://127.0.0.1:5000/webhooks/twilio/inbound").status_code == 403
    assert optout_rows() == 0 and opted_in(apps["A"])


def test_signature_over_another_body_answers_403(client, apps):
    form_signed_for_hello = RequestValidator(ENV_TOKEN).compute_signature(URL, {"Body": "hello"})
    assert inbound(client, "STOP", signature=form_signed_for_hello).status_code == 403
    assert optout_rows() == 0


def test_reply_to_a_number_no_app_sends_from_answers_403(client, apps):
    r = inbound(client, "STOP", to="+15005550999")
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert optout_rows() == 0


def test_query_string_is_part_of_the_signed_url(client, apps):
    form = {"From": PHONE, "To": ENV_SENDER, "Body": "STOP", "AccountSid": ACCOUNT}
    sig = RequestValidator(ENV_TOKEN).compute_signature(URL + "?src=console", form)
    r = client.post("/webhooks/twilio/inbound?src=console", data=form, headers={"X-Twilio-Signature": sig})
    assert_empty_twiml(r)
    r = client.post("/webhooks/twilio/inbound", data=form, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 403


# -- erasure --------------------------------------------------------------------------------------

def test_opt_out_survives_erasing_the_person(client, apps):
    inbound(client, "STOP")
    api = Api(client, apps["A"], apps["a_key"])
    assert api.delete("/users/u1").status_code == 204
    assert api.delete("/users/u2").status_code == 204
    with session_scope() as s:
        assert is_sms_opted_out(s, apps["A"], PHONE)
        assert s.scalar(sa.select(sa.func.count()).select_from(User).where(User.phone == PHONE,
                                                                          User.app_id == apps["A"])) == 0
        # Only the hash is kept, never the number.
        assert PHONE not in str(s.execute(sa.select(SmsOptOut.__table__)).all())
    # Someone later registered with that number is still opted out.
    assert api.put("/users/new", json={"phone": PHONE, "sms_opt_in": True}).status_code == 201
    with session_scope() as s:
        assert is_sms_opted_out(s, apps["A"], PHONE)


# -- the keyword matcher --------------------------------------------------------------------------

@pytest.mark.parametrize("body, word", [(" Opt  Out ", "optout"), ("opt-out", "optout"), ("STOP!", "stop"),
                                        ("stop texting", "stoptexting"), (None, "")])
def test_keyword_matching_form(body, word):
    assert keyword_of(body) == word
