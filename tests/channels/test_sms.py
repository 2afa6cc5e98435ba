"""TwilioSMS beyond the shared contract: settings, sender choice, URL handling, error table."""

from __future__ import annotations

import pytest

from channels.base import OutboundMessage
from channels.errors import ChannelConfigError, PermanentChannelError, TransientChannelError
from channels.sms import TWILIO_ERRORS, TwilioHttpClient, TwilioSMS


def test_messaging_service_sends_without_from_number(fake_twilio):
    channel = TwilioSMS(fake_twilio.account_sid, fake_twilio.auth_token, messaging_service_sid="MG" + "1" * 32,
                        api_base_url=fake_twilio.url)
    try:
        result = channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}, None))
    finally:
        channel.close()

    [record] = fake_twilio.messages
    assert record.fields == {"To": "+14155550100", "Body": "hi", "MessagingServiceSid": "MG" + "1" * 32}
    assert result.status == "accepted"


def test_message_without_status_callback_sends_none(sms_channel, fake_twilio):
    sms_channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))

    assert "StatusCallback" not in fake_twilio.messages[0].fields


def test_wrong_auth_token_is_permanent_provider_auth(fake_twilio):
    channel = TwilioSMS(fake_twilio.account_sid, "not-the-token", from_number="+15005550006",
                        api_base_url=fake_twilio.url)
    try:
        with pytest.raises(PermanentChannelError) as caught:
            channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))
    finally:
        channel.close()

    assert caught.value.code == "provider_auth" and caught.value.provider_code == "20003"
    assert caught.value.deactivate_token is False


def test_unlisted_twilio_error_is_permanent_rejected(sms_channel, fake_twilio):
    fake_twilio.fault_next(1, status=400, code=21999)

    with pytest.raises(PermanentChannelError) as caught:
        sms_channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))

    assert (caught.value.code, caught.value.provider_code, caught.value.deactivate_token) == ("rejected", "21999", False)


def test_invalid_number_is_refused_by_twilio_not_by_us(sms_channel, fake_twilio):
    with pytest.raises(PermanentChannelError) as caught:
        sms_channel.send(OutboundMessage(1, "0800 NOT E164", {"body": "hi"}))

    assert caught.value.code == "invalid_number" and caught.value.deactivate_token
    assert len(fake_twilio.requests) == 1


@pytest.mark.parametrize("content", [{}, {"body": ""}, {"body": None}, {"title": "x"}])
def test_empty_body_is_permanent_without_calling_twilio(sms_channel, fake_twilio, content):
    with pytest.raises(PermanentChannelError) as caught:
        sms_channel.send(OutboundMessage(1, "+14155550100", content))

    assert caught.value.code == "invalid_content"
    assert fake_twilio.requests == []


def test_base_url_with_a_path_prefix_is_kept(fake_twilio):
    client = TwilioHttpClient("http://127.0.0.1:9/twilio/")

    origin, path = client._target("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?x=1")

    assert origin == "http://127.0.0.1:9/twilio"
    assert path == "/twilio/2010-04-01/Accounts/AC1/Messages.json?x=1"


def test_edge_and_region_hosts_go_to_the_base_url_too():
    client = TwilioHttpClient("http://127.0.0.1:9")

    assert client._target("https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC1/Messages.json") == (
        "http://127.0.0.1:9", "/2010-04-01/Accounts/AC1/Messages.json")


def test_credentials_are_never_sent_to_a_host_that_is_not_twilio():
    client = TwilioHttpClient("http://127.0.0.1:9")

    with pytest.raises(ValueError):
        client._target("https://evil.example.com/2010-04-01/Accounts/AC1/Messages.json")


def test_default_base_url_leaves_twilio_urls_alone():
    client = TwilioHttpClient()

    assert client._target("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json") == (
        "https://api.twilio.com", "/2010-04-01/Accounts/AC1/Messages.json")


@pytest.mark.parametrize("settings, missing", [
    ({"auth_token": "t", "from_number": "+1"}, "account_sid"),
    ({"account_sid": "AC1", "from_number": "+1"}, "auth_token"),
])
def test_from_settings_names_missing_settings(settings, missing):
    with pytest.raises(ChannelConfigError, match=missing):
        TwilioSMS.from_settings(settings)


def test_a_sender_is_required():
    with pytest.raises(ChannelConfigError, match="from_number"):
        TwilioSMS.from_settings({"account_sid": "AC1", "auth_token": "t"})


def test_base_url_must_be_http():
    with pytest.raises(ChannelConfigError):
        TwilioSMS("AC1", "t", from_number="+1", api_base_url="ftp://example.com")


def test_from_settings_ignores_other_keys_and_empty_optionals(fake_twilio):
    channel = TwilioSMS.from_settings({
        "account_sid": fake_twilio.account_sid, "auth_token": fake_twilio.auth_token,
        "from_number": "+15005550006", "messaging_service_sid": None, "api_base_url": fake_twilio.url,
        "credentials_path": "/not/ours.json",
    })
    try:
        assert channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"})).provider_id
    finally:
        channel.close()


def test_connections_are_kept_alive_and_reused(sms_channel, fake_twilio):
    for i in range(20):
        sms_channel.send(OutboundMessage(i, "+14155550100", {"body": "hi"}))
    assert fake_twilio.connections_opened == 1

    sms_channel.send_batch([OutboundMessage(i, "+14155550100", {"body": "hi"}) for i in range(200)])
    assert fake_twilio.connections_opened <= sms_channel.max_concurrency


def test_error_table_codes_are_all_4xx_permanent_ones():
    assert all(isinstance(code, str) and isinstance(deactivate, bool) for code, deactivate in TWILIO_ERRORS.values())
    assert {21211, 21610, 21614} <= set(TWILIO_ERRORS)


def test_twilio_5xx_from_another_transport_is_still_transient(sms_channel, fake_twilio):
    # our transport raises TransientChannelError itself; the mapping also holds if a 5xx
    # reaches the library some other way
    from twilio.base.exceptions import TwilioRestException

    from channels.sms import _map_rest_error

    assert isinstance(_map_rest_error(TwilioRestException(503, "u", "m", 20503)), TransientChannelError)


def test_a_success_answer_we_cannot_read_is_transient():
    from tests.fakes import FakeTwilio, Response

    class Garbled(FakeTwilio):
        def handle(self, request):
            response = super().handle(request)
            return Response(201, b"<html>not json</html>") if response.status == 201 else response

    with Garbled() as fake:
        channel = TwilioSMS(fake.account_sid, fake.auth_token, from_number="+15005550006", api_base_url=fake.url)
        try:
            with pytest.raises(TransientChannelError) as caught:
                channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))
        finally:
            channel.close()

    assert caught.value.code == "provider_error"


def test_rfc9457_error_answers_map_like_legacy_ones():
    from tests.fakes import FakeTwilio, Response

    class Modern(FakeTwilio):
        def handle(self, request):
            return Response.json(400, {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To'",
                                       "status": 400, "code": 21211, "detail": "not a valid phone number"})

    with Modern() as fake:
        channel = TwilioSMS(fake.account_sid, fake.auth_token, from_number="+15005550006", api_base_url=fake.url)
        try:
            with pytest.raises(PermanentChannelError) as caught:
                channel.send(OutboundMessage(1, "+14155550100", {"body": "hi"}))
        finally:
            channel.close()

    assert (caught.value.code, caught.value.deactivate_token, caught.value.provider_code) == ("invalid_number", True, "21211")
    assert "not a valid phone number" in str(caught.value)
