"""The contract every channel keeps, run against each one and its provider fake.

A harness hides what differs (addresses, how the fake is told to fail, where the delivery id
travels); the tests say what must hold for any channel.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from channels.base import Channel, OutboundMessage, SendResult
from channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from tests.fakes import unused_local_url

CALLBACK = "http://127.0.0.1:5000/webhooks/twilio/status?d={}"


@dataclass
class Harness:
    name: str
    channel: Channel
    fake: Any
    build: Callable[..., Channel]  # the same channel with other settings (base URL, timeout)
    address: Callable[[int], str]
    content: dict
    delivery_id_of: Callable[[Any], int]

    def message(self, i: int, to: str | None = None) -> OutboundMessage:
        return OutboundMessage(i, to or self.address(i), self.content, CALLBACK.format(i))

    def delivered_ids(self) -> list[int]:
        return [self.delivery_id_of(record) for record in self.fake.messages]


def _sms_harness(request) -> Harness:
    from channels.sms import TwilioSMS

    fake = request.getfixturevalue("fake_twilio")

    def build(**overrides):
        settings = dict(account_sid=fake.account_sid, auth_token=fake.auth_token, from_number="+15005550006",
                        api_base_url=fake.url, timeout=5.0)
        settings.update(overrides)
        channel = TwilioSMS(**settings)
        request.addfinalizer(channel.close)
        return channel

    return Harness(
        name="sms",
        channel=request.getfixturevalue("sms_channel"),
        fake=fake,
        build=build,
        address=lambda i: f"+1415555{i:04d}",
        content={"body": "Your cart misses you"},
        delivery_id_of=lambda r: int(parse_qs(urlsplit(r.status_callback).query)["d"][0]),
    )


def _push_harness(request) -> Harness:
    from channels.push import FCMPush

    fake = request.getfixturevalue("fake_fcm")
    path = request.getfixturevalue("service_account_path")

    def build(**overrides):
        settings = dict(api_base_url=fake.url, timeout=5.0)
        settings.update(overrides)
        channel = FCMPush(path, **settings)
        request.addfinalizer(channel.close)
        return channel

    return Harness(
        name="push",
        channel=request.getfixturevalue("push_channel"),
        fake=fake,
        build=build,
        address=lambda i: f"fcm-token-{i:06d}:APA91b" + "x" * 60,
        content={"title": "Hello", "body": "Your cart misses you", "data": {"screen": "cart"}},
        delivery_id_of=lambda r: int(r.data["delivery_id"]),
    )


@pytest.fixture(params=["sms", "push"])
def harness(request) -> Harness:
    return {"sms": _sms_harness, "push": _push_harness}[request.param](request)


# -- success -------------------------------------------------------------------------------------


def test_send_reaches_the_provider_with_auth_and_fields(harness):
    result = harness.channel.send(harness.message(7))

    assert isinstance(result, SendResult)
    [record] = harness.fake.messages
    assert harness.delivery_id_of(record) == 7
    if harness.name == "sms":
        assert result.provider_id.startswith("SM") and result.status == "queued"
        assert record.account_sid == harness.fake.account_sid
        assert record.headers["authorization"].startswith("Basic ")
        assert record.fields == {
            "To": "+14155550007",
            "From": "+15005550006",
            "Body": "Your cart misses you",
            "StatusCallback": CALLBACK.format(7),
        }
    else:
        assert result.provider_id.startswith("projects/tidings-test/messages/") and result.status == "sent"
        assert record.project == "tidings-test"
        assert record.headers["authorization"].startswith("Bearer ya29.fake-")
        assert record.token == harness.address(7)
        assert record.notification == {"title": "Hello", "body": "Your cart misses you"}
        assert record.data == {"screen": "cart", "delivery_id": "7"}
    assert result.provider_id == (record.sid if harness.name == "sms" else record.name)


def test_send_batch_returns_results_in_input_order_with_failures_in_place(harness):
    messages = [harness.message(i) for i in range(300)]
    harness.fake.fault_for(harness.address(150), **_permanent_fault(harness.name))
    harness.fake.fault_for(harness.address(151), status=500)

    results = harness.channel.send_batch(messages)

    assert len(results) == 300
    assert isinstance(results[150], PermanentChannelError)
    assert isinstance(results[151], TransientChannelError)
    ok = [i for i in range(300) if i not in (150, 151)]
    assert all(isinstance(results[i], SendResult) for i in ok)
    by_provider_id = {(r.sid if harness.name == "sms" else r.name): r for r in harness.fake.messages}
    for i in ok:  # each result belongs to its own message
        assert harness.delivery_id_of(by_provider_id[results[i].provider_id]) == i
    # every message reached the provider exactly once; nothing was retried behind our back
    assert Counter(harness.delivery_id_of(r) for r in harness.fake.requests) == Counter(range(300))
    assert sorted(harness.delivered_ids()) == ok


def test_send_batch_of_nothing_is_nothing(harness):
    assert harness.channel.send_batch([]) == []
    assert harness.fake.requests == []


# -- transient failures --------------------------------------------------------------------------


def test_rate_limited_is_transient_with_retry_after(harness):
    harness.fake.fault_next(1, status=429, retry_after=7)

    with pytest.raises(TransientChannelError) as caught:
        harness.channel.send(harness.message(1))

    assert caught.value.retry_after == 7.0
    assert caught.value.code == "rate_limited"
    assert harness.channel.send(harness.message(2)).provider_id  # and the next one goes through


def test_rate_limited_without_retry_after_leaves_it_to_us(harness):
    harness.fake.fault_next(1, status=429)

    with pytest.raises(TransientChannelError) as caught:
        harness.channel.send(harness.message(1))

    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_is_transient(harness, status):
    harness.fake.fault_next(1, status=status)

    with pytest.raises(TransientChannelError) as caught:
        harness.channel.send(harness.message(1))

    assert caught.value.code == "provider_unavailable"
    assert len(harness.fake.requests) == 1  # not retried inside the library


def test_connection_refused_is_transient(harness):
    channel = harness.build(api_base_url=unused_local_url())

    with pytest.raises(TransientChannelError) as caught:
        channel.send(harness.message(1))
    assert caught.value.code == "network"

    [result] = channel.send_batch([harness.message(2)])
    assert isinstance(result, TransientChannelError)


def test_slow_provider_times_out_as_transient(harness):
    channel = harness.build(timeout=0.3)
    channel.send(harness.message(0))  # connection (and token) ready
    harness.fake.fault_next(1, delay=2.0)

    with pytest.raises(TransientChannelError) as caught:
        channel.send(harness.message(1))

    assert caught.value.code == "timeout"


def test_a_late_answer_within_the_timeout_is_a_success(harness):
    harness.fake.fault_next(1, delay=0.2)

    assert harness.channel.send(harness.message(1)).provider_id


# -- permanent failures --------------------------------------------------------------------------

PERMANENT_CASES = [
    # channel, provider error, our code, deactivate the address
    ("sms", 21211, "invalid_number", True),
    ("sms", 21610, "unsubscribed", True),
    ("sms", 21614, "not_mobile", True),
    ("sms", 21612, "unreachable", False),
    ("push", "UNREGISTERED", "unregistered", True),
    ("push", "INVALID_ARGUMENT", "invalid_argument", True),  # FCM: not a valid registration token
    ("push", "SENDER_ID_MISMATCH", "sender_id_mismatch", False),
    ("push", "THIRD_PARTY_AUTH_ERROR", "third_party_auth", False),
]


@pytest.mark.parametrize(
    "harness, provider_code, code, deactivate",
    PERMANENT_CASES,
    indirect=["harness"],
    ids=[f"{c[0]}-{c[1]}" for c in PERMANENT_CASES],
)
def test_permanent_error_maps_code_and_deactivation(harness, provider_code, code, deactivate):
    address = harness.address(3)
    harness.fake.fault_for(address, code=provider_code)

    with pytest.raises(PermanentChannelError) as caught:
        harness.channel.send(harness.message(3, to=address))

    assert caught.value.code == code
    assert caught.value.deactivate_token is deactivate
    assert caught.value.provider_code == str(provider_code)
    [result] = harness.channel.send_batch([harness.message(4, to=address)])
    assert isinstance(result, PermanentChannelError) and result.code == code


def test_errors_survive_pickling(harness):
    harness.fake.fault_next(1, status=429, retry_after=2)
    harness.fake.fault_for(harness.address(2), **_permanent_fault(harness.name))
    results = harness.channel.send_batch([harness.message(1), harness.message(2)])

    for error in results:
        assert isinstance(error, ChannelError)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.__dict__ == error.__dict__ and str(copy) == str(error)


def _permanent_fault(channel: str) -> dict:
    return {"code": 21211} if channel == "sms" else {"code": "UNREGISTERED"}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_sends_on_its_own_threads_and_connections(harness):
    import os
    import signal

    assert all(isinstance(r, SendResult) for r in harness.channel.send_batch([harness.message(i) for i in range(20)]))

    pid = os.fork()
    if pid == 0:  # the child: inherited executor and pooled connections must not be used
        code = 1
        try:
            signal.alarm(20)
            results = harness.channel.send_batch([harness.message(i) for i in range(100, 120)])
            code = 0 if all(isinstance(r, SendResult) for r in results) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(harness.delivered_ids()) == list(range(20)) + list(range(100, 120))
    assert all(isinstance(r, SendResult) for r in harness.channel.send_batch([harness.message(200)]))
