"""POST /webhooks/twilio/status: signed delivery receipts, applied through the one transition table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from twilio.request_validator import RequestValidator

from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.states import RANK, TWILIO_STATUS
from segments.models import SmsOptOut, User
from segments.people import is_sms_opted_out
from tidings.db import session_scope
from tidings.models import App
from tests.factories import make_app

BASE = "https://tidings.example.com"
ENV_TOKEN = "env-auth-token-0123456789abcdef"
ACCOUNT = "AC" + "1" * 32
SENDER = "+15005550006"
PHONE = "+14155550134"


@pytest.fixture
def wh_settings(settings):
    return dataclasses.replace(settings, public_base_url=BASE, twilio_account_sid=ACCOUNT,
                               twilio_auth_token=ENV_TOKEN, twilio_from=SENDER)


@pytest.fixture
def wh_app(clean_db, redis_conn, wh_settings):
    import webhooks
    from tidings.app import create_app

    application = create_app(wh_settings)
    application.config["TESTING"] = True
    if "webhooks" not in application.blueprints:  # until tidings/app.py registers it
        webhooks.init_app(application)
    return application


@pytest.fixture
def client(wh_app):
    return wh_app.test_client()


_keys = itertools.count(1)


@pytest.fixture
def world(wh_app):
    """One app with one SMS campaign, run and recipient: (app_id, campaign_id, run_id, user_id)."""
    with session_scope() as s:
        app, _, _ = make_app(s, "Shop")
        user = User(app_id=app.id, external_id="u1", attributes={}, phone=PHONE, sms_opt_in=True)
        campaign = Campaign(app_id=app.id, name="Sale", channel="sms", spec={}, status="running")
        s.add_all([user, campaign])
        s.flush()
        run = CampaignRun(app_id=app.id, campaign_id=campaign.id, scheduled_for=dt.datetime.now(dt.UTC))
        s.add(run)
        s.flush()
        return app.id, campaign.id, run.id, user.id


def make_delivery(world, status="sent", provider_id: str | None = "SM" + "a" * 32) -> int:
    app_id, campaign_id, run_id, user_id = world
    with session_scope() as s:
        d = Delivery(app_id=app_id, campaign_id=campaign_id, run_id=run_id, user_id=user_id,
                     dedupe_key=f"run:{next(_keys)}", status=status, provider_id=provider_id,
                     sent_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC) if status == "sent" else None)
        s.add(d)
        s.flush()
        return d.id


def fetch(delivery_id: int) -> Delivery:
    with session_scope() as s:
        return s.get(Delivery, delivery_id)


def status_form(status: str, sid: str = "SM" + "a" * 32, error_code: str | None = None) -> dict:
    form = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
            "MessageStatus": status, "SmsStatus": status, "To": PHONE, "From": SENDER}
    if error_code is not None:
        form["ErrorCode"] = error_code
    return form


def post_status(client, d, status, *, sid="SM" + "a" * 32, error_code=None, token=ENV_TOKEN,
                signed_url=None, signed_form=None, signature=None, headers=None):
    """POST a callback the way Twilio does: the signature over PUBLIC_BASE_URL + path + query."""
    query = f"d={d}"
    form = status_form(status, sid, error_code)
    url = signed_url or f"{BASE}/webhooks/twilio/status?{query}"
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, signed_form or form)
    all_headers = {} if signature is False else {"X-Twilio-Signature": signature}
    all_headers.update(headers or {})
    return client.post(f"/webhooks/twilio/status?{query}", data=form, headers=all_headers)


# -- the happy path -------------------------------------------------------------------------------

def test_signed_delivered_callback_moves_sent_to_delivered(client, world):
    d = make_delivery(world)
    r = post_status(client, d, "delivered")
    assert r.status_code == 204 and r.data == b""
    row = fetch(d)
    assert row.status == "delivered" and row.delivered_at is not None
    assert row.sent_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # kept, not overwritten
    assert row.error is None


def test_failure_records_the_error_code_and_failed_at(client, world):
    d = make_delivery(world)
    assert post_status(client, d, "undelivered", error_code="30003").status_code == 204
    row = fetch(d)
    assert row.status == "failed" and row.error == "30003" and row.failed_at is not None
    assert row.delivered_at is None


def test_failure_without_error_code_records_twilios_status(client, world):
    d = make_delivery(world)
    post_status(client, d, "canceled")
    assert (fetch(d).status, fetch(d).error) == ("failed", "canceled")


def test_sending_delivery_without_provider_id_settles_as_sent_with_the_sid(client, world):
    # The worker died after Twilio accepted the message and before it recorded the sid.
    d = make_delivery(world, status="sending", provider_id=None)
    sid = "SM" + "f" * 32
    assert post_status(client, d, "sent", sid=sid).status_code == 204
    row = fetch(d)
    assert row.status == "sent" and row.provider_id == sid and row.sent_at is not None


def test_delivered_for_a_sending_delivery_records_sid_and_sent_at(client, world):
    d = make_delivery(world, status="sending", provider_id=None)
    post_status(client, d, "delivered", sid="SMx")
    row = fetch(d)
    assert (row.status, row.provider_id) == ("delivered", "SMx")
    assert row.sent_at is not None and row.delivered_at is not None


def test_receipt_for_a_delivery_the_sweeper_returned_to_pending_marks_it_sent(client, world):
    # The sweeper put a send whose worker died back to pending; Twilio says it went out: do not resend.
    d = make_delivery(world, status="pending", provider_id=None)
    post_status(client, d, "queued", sid="SMp")
    assert (fetch(d).status, fetch(d).provider_id) == ("sent", "SMp")


def test_callback_about_another_message_sid_changes_nothing(client, world):
    d = make_delivery(world, provider_id="SMmine")
    assert post_status(client, d, "failed", sid="SMother", error_code="30005").status_code == 204
    row = fetch(d)
    assert (row.status, row.provider_id, row.error) == ("sent", "SMmine", None)


def test_unknown_status_is_ignored_with_204(client, world):
    d = make_delivery(world)
    for status in ("receiving", "received", "partially_delivered", ""):
        assert post_status(client, d, status).status_code == 204
    assert fetch(d).status == "sent"


def test_uppercase_status_is_understood(client, world):
    d = make_delivery(world)
    post_status(client, d, "DELIVERED")
    assert fetch(d).status == "delivered"


# -- duplicates and order ---------------------------------------------------------------------------

def test_duplicate_status_callback_changes_nothing(client, world):
    d = make_delivery(world)
    post_status(client, d, "delivered")
    first = fetch(d)
    for _ in range(3):
        assert post_status(client, d, "delivered").status_code == 204
    again = fetch(d)
    assert again.status == "delivered"
    assert (again.delivered_at, again.updated_at) == (first.delivered_at, first.updated_at)


@pytest.mark.parametrize("final, late", [("delivered", "sent"), ("delivered", "failed"),
                                          ("undelivered", "delivered"), ("failed", "queued")])
def test_final_statuses_never_move(client, world, final, late):
    d = make_delivery(world)
    post_status(client, d, final, error_code="30003" if final != "delivered" else None)
    before = fetch(d)
    post_status(client, d, late, error_code="30007")
    after = fetch(d)
    assert (after.status, after.error, after.updated_at) == (before.status, before.error, before.updated_at)


_TERMINALS = ("delivered", "undelivered", "failed")
_starts = st.sampled_from([("sent", "SM" + "a" * 32), ("sending", None), ("pending", None)])


@st.composite
def shuffled_callbacks(draw):
    """The natural sequence, and the same callbacks permuted with some of them repeated."""
    natural = ["queued", "sending", "sent", draw(st.sampled_from(_TERMINALS))]
    repeats = draw(st.lists(st.sampled_from(natural), max_size=4))
    return natural, draw(st.permutations(natural + repeats))


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=_starts, callbacks=shuffled_callbacks())
def test_any_order_with_duplicates_ends_where_the_natural_order_does_and_never_goes_back(
        client, world, start, callbacks):
    natural, shuffled = callbacks
    status, provider_id = start

    expected = make_delivery(world, status=status, provider_id=provider_id)
    for callback in natural:
        assert post_status(client, expected, callback, error_code="30003").status_code == 204
    want = fetch(expected)

    d = make_delivery(world, status=status, provider_id=provider_id)
    seen = [status]
    for callback in shuffled:
        assert post_status(client, d, callback, error_code="30003").status_code == 204
        now = fetch(d).status
        assert RANK[now] >= RANK[seen[-1]], f"{seen} then {callback} moved back to {now}"
        if seen[-1] in ("delivered", "failed"):
            assert now == seen[-1], f"final {seen[-1]} moved to {now}"
        seen.append(now)

    got = fetch(d)
    assert got.status == want.status == TWILIO_STATUS[natural[-1]]
    assert (got.provider_id, got.error) == (want.provider_id, want.error)
    assert (got.delivered_at is None, got.failed_at is None) == (want.delivered_at is None, want.failed_at is None)
    assert got.sent_at is not None and want.sent_at is not None  # any callback means Twilio accepted it


# -- signatures -----------------------------------------------------------------------------------

def test_forged_signature_answers_403_and_changes_nothing(client, world):
    d = make_delivery(world)
    r = post_status(client, d, "failed", error_code="30003", token="not-the-token")
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert fetch(d).status == "sent"


def test_missing_signature_answers_403_and_changes_nothing(client, world):
    d = make_delivery(world)
    assert post_status(client, d, "delivered", signature=False).status_code == 403
    assert post_status(client, d, "delivered", signature="").status_code == 403
    assert fetch(d).status == "sent"


def test_signature_for_another_url_answers_403(client, world):
    d = make_delivery(world)
    other = make_delivery(world)
    cases = [
        f"{BASE}/webhooks/twilio/status?d={other}",             # another delivery
        f"http://127.0.0.1:5000/webhooks/twilio/status?d={d}",  # another host (the default base URL)
        f"{BASE}/webhooks/twilio/inbound?d={d}",                 # another path
        f"{BASE}/webhooks/twilio/status",                        # no query
    ]
    for url in cases:
        assert post_status(client, d, "delivered", signed_url=url).status_code == 403, url
    assert fetch(d).status == "sent" and fetch(other).status == "sent"


def test_signature_over_other_form_fields_answers_403(client, world):
    d = make_delivery(world)
    r = post_status(client, d, "delivered", signed_form=status_form("sent"))
    assert r.status_code == 403 and fetch(d).status == "sent"


def test_signature_is_checked_against_public_base_url_not_the_host_called(client, world):
    # The test client calls http://localhost/; Twilio signed the public URL, and that is what counts.
    d = make_delivery(world)
    assert post_status(client, d, "delivered", signed_url=f"{BASE}/webhooks/twilio/status?d={d}").status_code == 204


def test_app_auth_token_override_is_used(client, world):
    app_id = world[0]
    with session_scope() as s:
        s.execute(sa.update(App).where(App.id == app_id).values(settings={"twilio_auth_token": "app-own-token"}))
    d = make_delivery(world)
    assert post_status(client, d, "delivered", token=ENV_TOKEN).status_code == 403
    assert fetch(d).status == "sent"
    assert post_status(client, d, "delivered", token="app-own-token").status_code == 204
    assert fetch(d).status == "delivered"


def test_no_auth_token_anywhere_answers_403(client, world, wh_settings, redis_conn):
    from tidings.app import create_app

    import webhooks

    bare = create_app(dataclasses.replace(wh_settings, twilio_auth_token=None))
    if "webhooks" not in bare.blueprints:
        webhooks.init_app(bare)
    d = make_delivery(world)
    assert post_status(bare.test_client(), d, "delivered").status_code == 403
    assert fetch(d).status == "sent"


def test_unknown_delivery_needs_the_env_signature_then_answers_404(client, world):
    assert post_status(client, 999_999, "delivered", token="forged").status_code == 403
    r = post_status(client, 999_999, "delivered")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_unknown_delivery_without_env_token_answers_403(world, wh_settings, redis_conn):
    from tidings.app import create_app

    import webhooks

    bare = create_app(dataclasses.replace(wh_settings, twilio_auth_token=None))
    if "webhooks" not in bare.blueprints:
        webhooks.init_app(bare)
    assert post_status(bare.test_client(), 999_999, "delivered").status_code == 403


@pytest.mark.parametrize("d", ["abc", "1.5", "-3", "0", "99999999999999999999", "", "1%200"])
def test_malformed_delivery_id_answers_403_unsigned_and_400_signed(client, world, d):
    assert post_status(client, d, "delivered", token="forged").status_code == 403
    r = post_status(client, d, "delivered")
    assert r.status_code == 400 and r.json["error"]["details"]["field"] == "d"


def test_missing_message_sid_answers_400(client, world):
    d = make_delivery(world)
    r = post_status(client, d, "delivered", sid="")
    assert r.status_code == 400 and fetch(d).status == "sent"


# -- 21610: the recipient unsubscribed at Twilio ------------------------------------------------------

def test_unsubscribed_recipient_failure_opts_the_number_out(client, world):
    app_id, _, _, user_id = world
    d = make_delivery(world)
    assert post_status(client, d, "failed", error_code="21610").status_code == 204
    assert (fetch(d).status, fetch(d).error) == ("failed", "21610")
    with session_scope() as s:
        assert is_sms_opted_out(s, app_id, PHONE)
        assert s.get(User, user_id).sms_opt_in is False
    # A duplicate of that callback is harmless: still one opt-out row.
    assert post_status(client, d, "failed", error_code="21610").status_code == 204
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SmsOptOut)) == 1


def test_other_failures_do_not_opt_out(client, world):
    app_id = world[0]
    d = make_delivery(world)
    post_status(client, d, "undelivered", error_code="30003")
    with session_scope() as s:
        assert not is_sms_opted_out(s, app_id, PHONE)


def test_forged_unsubscribed_callback_opts_nobody_out(client, world):
    app_id = world[0]
    d = make_delivery(world)
    assert post_status(client, d, "failed", error_code="21610", token="forged").status_code == 403
    with session_scope() as s:
        assert not is_sms_opted_out(s, app_id, PHONE)


# -- concurrent writers ------------------------------------------------------------------------------

def test_concurrent_callbacks_for_one_delivery_never_move_it_back(wh_app, world):
    """Two requests racing on the same row: the guarded UPDATE re-checks the status it waited for."""
    import threading

    from webhooks.receipts import apply_twilio_status

    ids = [make_delivery(world, status="sending", provider_id=None) for _ in range(20)]
    barrier = threading.Barrier(3)
    moved = []

    def worker(statuses):
        barrier.wait()
        for d in ids:
            for status in statuses:
                with session_scope() as s:
                    moved.append((d, status, apply_twilio_status(s, d, "SMrace", status, "30003",
                                                                 dt.datetime.now(dt.UTC))))

    threads = [threading.Thread(target=worker, args=(statuses,))
               for statuses in (["queued", "sent"], ["delivered"], ["sending", "undelivered"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in ids:
        row = fetch(d)
        assert row.status in ("delivered", "failed") and row.provider_id == "SMrace"
        # Exactly one final move won; nothing moved the delivery after it.
        finals = [status for dd, status, ok in moved if dd == d and ok and status in ("delivered", "undelivered")]
        assert len(finals) == 1 and TWILIO_STATUS[finals[0]] == row.status
