"""The status callbacks' fast path (webhooks.fastpath): what it applies itself, what it hands to the
view, and that its signature check is Twilio's (RequestValidator's) verdict."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from hypothesis import given, settings as hsettings, strategies as st
from twilio.request_validator import RequestValidator, add_port, remove_port
from urllib.parse import urlparse
from werkzeug.datastructures import MultiDict

from campaigns.states import TWILIO_STATUS
from segments.people import is_sms_opted_out
from tidings import db
from tidings.db import session_scope
from tidings.models import App
from webhooks import fastpath, receipts
from tests.webhooks.test_twilio_status import (  # noqa: F401  (fixtures)
    BASE, ENV_TOKEN, PHONE, client, fetch, make_delivery, post_status, wh_app, wh_settings, world)


@pytest.fixture(autouse=True)
def fresh_tokens():
    """Each test starts with only the env token to try (remembered tokens are per process)."""
    fastpath.tokens.clear()
    yield
    fastpath.tokens.clear()


@pytest.fixture
def view_calls(monkeypatch):
    """Delivery ids of the requests that reached the Flask status view (the full path)."""
    calls = []
    original = receipts.delivery_app

    def spy(session, delivery_id):
        calls.append(delivery_id)
        return original(session, delivery_id)

    monkeypatch.setattr(receipts, "delivery_app", spy)
    return calls


def set_app_settings(app_id: int, settings) -> None:
    with session_scope() as s:
        s.execute(sa.update(App).where(App.id == app_id).values(settings=settings))


# -- applied in front of Flask ------------------------------------------------------------------------

def test_signed_delivered_callback_is_applied_without_reaching_the_view(client, world, view_calls):
    d = make_delivery(world)
    r = post_status(client, d, "delivered")
    assert r.status_code == 204 and r.data == b""
    row = fetch(d)
    assert row.status == "delivered" and row.delivered_at is not None and row.error is None
    assert row.sent_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # kept, not overwritten
    assert view_calls == []


def test_fast_path_records_sid_sent_at_and_errors_like_the_view(client, world, view_calls):
    sending = make_delivery(world, status="sending", provider_id=None)
    assert post_status(client, sending, "sent", sid="SMnew").status_code == 204
    row = fetch(sending)
    assert (row.status, row.provider_id) == ("sent", "SMnew") and row.sent_at is not None

    failing = make_delivery(world)
    assert post_status(client, failing, "undelivered", error_code="30003").status_code == 204
    canceled = make_delivery(world)
    assert post_status(client, canceled, "CANCELED").status_code == 204
    assert (fetch(failing).status, fetch(failing).error) == ("failed", "30003")
    assert fetch(failing).failed_at is not None
    assert (fetch(canceled).status, fetch(canceled).error) == ("failed", "canceled")
    assert view_calls == []


def test_fast_path_refuses_another_message_sid(client, world, view_calls):
    d = make_delivery(world, provider_id="SMmine")
    assert post_status(client, d, "delivered", sid="SMother").status_code == 204
    assert (fetch(d).status, fetch(d).provider_id) == ("sent", "SMmine")
    assert view_calls == []


def test_callbacks_that_move_nothing_are_answered_on_the_fast_path(client, world, view_calls):
    # Twilio's "sent" for a delivery the send job already marked sent, a duplicate, a late one,
    # a status we do not map: 204 and no change, as the view answers them.
    d = make_delivery(world)
    assert post_status(client, d, "sent").status_code == 204
    assert fetch(d).status == "sent"
    assert post_status(client, d, "delivered").status_code == 204
    first = fetch(d)
    for status in ("delivered", "sent", "undelivered", "receiving", ""):
        assert post_status(client, d, status, error_code="30003").status_code == 204
    again = fetch(d)
    assert (again.status, again.delivered_at, again.updated_at, again.error) == (
        "delivered", first.delivered_at, first.updated_at, None)
    assert view_calls == []


# -- handed to the view ---------------------------------------------------------------------------------

def test_no_op_signed_with_another_apps_token_is_refused_by_the_view(client, world, view_calls):
    set_app_settings(world[0], {"twilio_auth_token": "app-own-token"})
    d = make_delivery(world, status="delivered")
    # The env token is always tried first; it verifies, but it is not this app's token.
    assert post_status(client, d, "delivered", token=ENV_TOKEN).status_code == 403
    assert view_calls == [d]


def test_forged_and_unsigned_callbacks_are_refused_by_the_view(client, world, view_calls):
    d = make_delivery(world)
    assert post_status(client, d, "delivered", token="forged").status_code == 403
    assert post_status(client, d, "delivered", signature=False).status_code == 403
    assert fetch(d).status == "sent" and view_calls == [d, d]


def test_unknown_delivery_is_a_404_from_the_view(client, world, view_calls):
    r = post_status(client, 987_654_321, "delivered")
    assert r.status_code == 404 and view_calls == [987_654_321]


def test_unsubscribed_failure_goes_through_the_view_which_opts_the_number_out(client, world, view_calls):
    app_id = world[0]
    d = make_delivery(world)
    assert post_status(client, d, "failed", error_code="21610").status_code == 204
    assert fetch(d).status == "failed" and view_calls == [d]
    with session_scope() as s:
        assert is_sms_opted_out(s, app_id, PHONE)


def test_other_query_forms_are_left_to_the_view(client, world, view_calls):
    d = make_delivery(world)
    query = f"d={d}&attempt=2"
    form = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator(ENV_TOKEN).compute_signature(f"{BASE}/webhooks/twilio/status?{query}", form)
    r = client.post(f"/webhooks/twilio/status?{query}", data=form, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 204 and fetch(d).status == "delivered" and view_calls == [d]


# -- tokens: guesses, never authority ----------------------------------------------------------------

def test_app_token_verified_by_the_view_is_tried_first_next_time(client, world, view_calls):
    set_app_settings(world[0], {"twilio_auth_token": "app-own-token"})
    first, second = make_delivery(world), make_delivery(world)
    # Not known yet: the fast path read the body, declined, and the view still got the whole form.
    assert post_status(client, first, "delivered", token="app-own-token").status_code == 204
    assert post_status(client, second, "delivered", token="app-own-token").status_code == 204
    assert fetch(first).status == fetch(second).status == "delivered"
    assert view_calls == [first]


def test_a_changed_app_token_takes_effect_at_once_though_the_old_one_is_remembered(client, world, view_calls):
    set_app_settings(world[0], {"twilio_auth_token": "old-token"})
    assert post_status(client, make_delivery(world), "delivered", token="old-token").status_code == 204
    set_app_settings(world[0], {"twilio_auth_token": "new-token"})
    d = make_delivery(world)
    assert post_status(client, d, "failed", error_code="30003", token="old-token").status_code == 403
    assert fetch(d).status == "sent"
    assert post_status(client, d, "delivered", token="new-token").status_code == 204
    assert fetch(d).status == "delivered"


def test_env_signed_callback_for_an_app_with_its_own_token_is_refused(client, world, view_calls):
    set_app_settings(world[0], {"twilio_auth_token": "app-own-token"})
    d = make_delivery(world)
    assert post_status(client, d, "delivered", token=ENV_TOKEN).status_code == 403
    assert fetch(d).status == "sent" and view_calls == [d]


@pytest.mark.parametrize("own", [{"twilio_auth_token": ""}, {"twilio_auth_token": None}, {}])
def test_app_without_a_token_of_its_own_uses_the_env_token_on_the_fast_path(client, world, view_calls, own):
    set_app_settings(world[0], own)
    d = make_delivery(world)
    assert post_status(client, d, "delivered", token=ENV_TOKEN).status_code == 204
    assert fetch(d).status == "delivered" and view_calls == []


def test_remembered_tokens_are_bounded():
    tokens = fastpath.Tokens()
    for i in range(fastpath.MAX_TOKENS + 5):
        tokens.remember(f"token-{i}")
    found = [t for t, _ in tokens.candidates("env")]
    assert found[0] == "env" and len(found) == fastpath.MAX_TOKENS + 1
    assert "token-0" not in found and f"token-{fastpath.MAX_TOKENS + 4}" in found


# -- a lost connection ------------------------------------------------------------------------------------

def test_lost_connection_is_replaced_and_the_callback_still_applied(client, world, view_calls):
    first = make_delivery(world)
    assert post_status(client, first, "delivered").status_code == 204
    held = [pooled.driver_connection.info.backend_pid for pooled, _ in fastpath._connections._idle]
    assert held
    with db.get_engine().connect() as conn:
        for pid in held:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
    second, third = make_delivery(world), make_delivery(world)
    assert post_status(client, second, "delivered").status_code == 204  # the view took it
    assert post_status(client, third, "delivered").status_code == 204   # the fast path again
    assert fetch(second).status == fetch(third).status == "delivered"
    assert view_calls == [second]


# -- Twilio's algorithm -------------------------------------------------------------------------------

_bases = st.sampled_from(["https://tidings.example.com", "https://tidings.example.com:443",
                          "http://127.0.0.1:5000", "http://hooks.example.org", "https://example.com:8443/base"])
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_pairs = st.lists(st.tuples(st.sampled_from(["MessageSid", "MessageStatus", "To", "ErrorCode", "Body"]) | _text,
                            _text), max_size=8)


@hsettings(max_examples=300, deadline=None)
@given(base=_bases, d=st.integers(1, 2**63 - 1), pairs=_pairs,
       signed_form=st.sampled_from(["as-is", "with-port", "without-port"]), good_token=st.booleans())
def test_fast_signature_check_agrees_with_request_validator(base, d, pairs, signed_form, good_token):
    query = f"d={d}"
    url = f"{base}{fastpath.STATUS_PATH}?{query}"
    parsed = urlparse(url)
    signed_url = {"as-is": url, "with-port": add_port(parsed), "without-port": remove_port(parsed)}[signed_form]
    form = MultiDict(pairs)
    signature = RequestValidator("the-token" if good_token else "another-token").compute_signature(signed_url, form)
    expected = RequestValidator("the-token").validate(url, form, signature)
    found = fastpath.signing_token(base, fastpath.STATUS_PATH, query, pairs, signature,
                                   [("the-token", b"the-token")])
    assert (found == "the-token") == expected
    assert expected == good_token


# -- concurrent writers -----------------------------------------------------------------------------

def test_fast_and_full_paths_racing_on_one_delivery_never_move_it_back(wh_app, world):
    """The signed UPDATE and the view's UPDATE guard on the same transition table."""
    ids = [make_delivery(world, status="sending", provider_id=None) for _ in range(20)]
    barrier = threading.Barrier(3)
    moved, errors = [], []

    def fast(statuses):
        pooled = db.get_engine().raw_connection()
        pooled.driver_connection.autocommit = True
        try:
            cursor = pooled.driver_connection.cursor()
            barrier.wait()
            for d in ids:
                for status in statuses:
                    moved.append((d, status, receipts.apply_signed_twilio_status(
                        cursor, d, "SMrace", status, "30003", ENV_TOKEN, ENV_TOKEN, dt.datetime.now(dt.UTC))))
        except Exception as e:  # reported below, in the test's thread
            errors.append(e)
        finally:
            pooled.close()

    def full(statuses):
        barrier.wait()
        for d in ids:
            for status in statuses:
                with session_scope() as s:
                    moved.append((d, status, receipts.apply_twilio_status(s, d, "SMrace", status, "30003",
                                                                          dt.datetime.now(dt.UTC))))

    threads = [threading.Thread(target=fast, args=(["queued", "sent"],)),
               threading.Thread(target=fast, args=(["delivered"],)),
               threading.Thread(target=full, args=(["sending", "undelivered"],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for d in ids:
        row = fetch(d)
        assert row.status in ("delivered", "failed") and row.provider_id == "SMrace"
        finals = [status for dd, status, ok in moved if dd == d and ok and status in ("delivered", "undelivered")]
        assert len(finals) == 1 and TWILIO_STATUS[finals[0]] == row.status


def test_connections_are_shared_by_threads_and_go_back_to_the_pool_transactional(client, world, monkeypatch):
    # A thread-per-request server (tidings serve without REDIS_URL) must not open one per request.
    fastpath._connections._idle.clear()
    for _ in range(4):
        d = make_delivery(world)
        t = threading.Thread(target=post_status, args=(client, d, "delivered"))
        t.start()
        t.join()
        assert fetch(d).status == "delivered"
    assert len(fastpath._connections._idle) == 1
    # One kept too many goes back to the engine's pool, which lends it to sessions: no autocommit.
    monkeypatch.setattr(fastpath._connections, "max_idle", 0)
    (pooled, _), = fastpath._connections._idle
    driver = pooled.driver_connection
    assert post_status(client, make_delivery(world), "delivered").status_code == 204
    assert fastpath._connections._idle == []
    assert driver.autocommit is False and not driver.closed
