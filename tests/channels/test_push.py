"""FCMPush beyond the shared contract: payload shape, token handling, apps side by side."""

from __future__ import annotations

import json

import firebase_admin
import pytest

from channels.base import OutboundMessage, SendResult
from channels.errors import ChannelConfigError, PermanentChannelError, TransientChannelError
from channels.push import FCMPush
from tests.fakes import FakeFCM, Response, unused_local_url

TOKEN = "fcm-token-1:APA91b" + "x" * 60


def _message(i: int = 1, to: str = TOKEN, **content) -> OutboundMessage:
    return OutboundMessage(i, to, content or {"title": "T", "body": "B"})


def test_data_values_become_strings_and_delivery_id_is_added(push_channel, fake_fcm):
    push_channel.send(_message(42, title="T", body="B", data={
        "count": 3, "ratio": 0.5, "flag": True, "nested": {"a": [1, 2]}, "text": "x", "skip": None}))

    [record] = fake_fcm.messages
    assert record.data == {"count": "3", "ratio": "0.5", "flag": "true", "nested": '{"a":[1,2]}', "text": "x",
                           "delivery_id": "42"}


def test_data_only_message_has_no_notification(push_channel, fake_fcm):
    push_channel.send(_message(1, data={"silent": "1"}))

    assert "notification" not in fake_fcm.messages[0].message


def test_registration_tokens_go_out_as_token_and_installation_ids_as_fid(push_channel, fake_fcm):
    fid = "cW4UVmQ7Tr6g3mpPEkbu1S"
    push_channel.send_batch([_message(1, to=TOKEN), _message(2, to=fid)])

    by_id = {r.data["delivery_id"]: r.message for r in fake_fcm.messages}
    assert by_id["1"]["token"] == TOKEN and "fid" not in by_id["1"]
    assert by_id["2"]["fid"] == fid and "token" not in by_id["2"]


@pytest.mark.parametrize("key", ["from", "notification", "google.c.a", "gcm.n.e"])
def test_reserved_data_keys_are_refused_before_sending(push_channel, fake_fcm, key):
    with pytest.raises(PermanentChannelError) as caught:
        push_channel.send(_message(data={key: "x"}))

    assert caught.value.code == "invalid_content"
    [result] = push_channel.send_batch([_message(data={key: "x"})])
    assert isinstance(result, PermanentChannelError)
    assert fake_fcm.requests == []


def test_empty_token_is_a_dead_address(push_channel, fake_fcm):
    with pytest.raises(PermanentChannelError) as caught:
        push_channel.send(_message(to=""))

    assert caught.value.deactivate_token
    assert fake_fcm.requests == []


def test_invalid_argument_about_the_payload_keeps_the_token(push_channel, fake_fcm):
    fake_fcm.fault_next(1, code="INVALID_ARGUMENT", message="Message is too big")

    with pytest.raises(PermanentChannelError) as caught:
        push_channel.send(_message())

    assert caught.value.code == "invalid_argument" and caught.value.deactivate_token is False


def test_quota_exceeded_is_transient_with_retry_after(push_channel, fake_fcm):
    fake_fcm.fault_next(1, code="QUOTA_EXCEEDED", retry_after=30)

    with pytest.raises(TransientChannelError) as caught:
        push_channel.send(_message())

    assert caught.value.retry_after == 30 and caught.value.code == "rate_limited"


def test_batch_fetches_one_access_token_and_reuses_it(push_channel, fake_fcm):
    results = push_channel.send_batch([_message(i, to=f"{TOKEN}{i}") for i in range(200)])
    push_channel.send(_message(999))

    assert all(isinstance(r, SendResult) for r in results)
    assert fake_fcm.token_requests == 1


def test_a_batch_of_more_than_500_goes_out_whole_on_the_channels_own_threads(fake_fcm, service_account_path):
    channel = FCMPush(service_account_path, api_base_url=fake_fcm.url, max_concurrency=8)
    try:
        results = channel.send_batch([_message(i, to=f"{TOKEN}{i}") for i in range(520)])
        again = channel.send_batch([_message(1000 + i, to=f"{TOKEN}{i}") for i in range(40)])
    finally:
        channel.close()

    assert all(isinstance(r, SendResult) for r in results + again)
    assert sorted(int(r.data["delivery_id"]) for r in fake_fcm.messages) == list(range(520)) + list(range(1000, 1040))
    # 8 sending threads on kept-alive connections (plus one to the token endpoint), in both batches
    assert fake_fcm.connections_opened <= 8 + 1


def test_token_endpoint_down_is_transient(fake_fcm, tmp_path):
    path = tmp_path / "sa.json"
    info = json.loads(fake_fcm.write_service_account(path).read_text())
    info["token_uri"] = unused_local_url() + "/token"
    path.write_text(json.dumps(info))
    channel = FCMPush(path, api_base_url=fake_fcm.url)
    try:
        with pytest.raises(TransientChannelError):
            channel.send(_message())
        results = channel.send_batch([_message(1), _message(2)])
    finally:
        channel.close()

    assert all(isinstance(r, TransientChannelError) for r in results)
    assert fake_fcm.requests == []


def test_credentials_the_token_endpoint_refuses_are_permanent(fake_fcm, tmp_path):
    with FakeFCM() as stranger:  # a key the fake we talk to never trusted
        path = stranger.write_service_account(tmp_path / "sa.json")
    info = json.loads(path.read_text())
    info["token_uri"] = fake_fcm.token_uri
    path.write_text(json.dumps(info))
    channel = FCMPush(path, api_base_url=fake_fcm.url)
    try:
        with pytest.raises(PermanentChannelError) as caught:
            channel.send(_message())
    finally:
        channel.close()

    assert caught.value.code == "provider_auth"


def test_two_channels_with_their_own_credentials_coexist(fake_fcm, tmp_path):
    first = FCMPush(fake_fcm.write_service_account(tmp_path / "a.json", project_id="project-a"),
                    api_base_url=fake_fcm.url)
    second = FCMPush(fake_fcm.write_service_account(tmp_path / "b.json", project_id="project-b"),
                     api_base_url=fake_fcm.url)
    try:
        first.send(_message(1))
        second.send(_message(2))
        assert {r.project for r in fake_fcm.messages} == {"project-a", "project-b"}
        assert fake_fcm.token_requests == 2
    finally:
        first.close()
        second.close()
    # closing removes our firebase_admin apps and leaves the default app alone
    assert not [name for name in firebase_admin._apps if name.startswith("tidings-push-")]  # noqa: SLF001


def test_no_default_firebase_app_is_needed_or_created(push_channel):
    push_channel.send(_message())

    with pytest.raises(ValueError):
        firebase_admin.get_app()


def test_connections_are_kept_alive(push_channel, fake_fcm):
    for i in range(20):
        push_channel.send(_message(i))

    assert fake_fcm.connections_opened == 2  # one to the token endpoint, one to FCM


@pytest.mark.parametrize("content", [
    "not json",
    json.dumps({"type": "authorized_user", "client_id": "x"}),
    json.dumps({"type": "service_account", "project_id": "p"}),
])
def test_unusable_credentials_are_a_config_error(tmp_path, content):
    path = tmp_path / "sa.json"
    path.write_text(content)

    with pytest.raises(ChannelConfigError):
        FCMPush(path)


def test_missing_credentials_file_is_a_config_error(tmp_path):
    with pytest.raises(ChannelConfigError):
        FCMPush(tmp_path / "nope.json")


def test_from_settings_accepts_credentials_or_credentials_path(service_account_path, fake_fcm):
    for key in ("credentials", "credentials_path"):
        channel = FCMPush.from_settings({key: str(service_account_path), "api_base_url": fake_fcm.url})
        try:
            assert channel.project_id == "tidings-test"
        finally:
            channel.close()
    with pytest.raises(ChannelConfigError, match="credentials_path"):
        FCMPush.from_settings({"api_base_url": fake_fcm.url})


def test_google_token_uri_keeps_google_auth_defaults(fake_fcm, tmp_path):
    from google.oauth2 import service_account

    from channels.push import _load_credentials

    path = fake_fcm.write_service_account(tmp_path / "sa.json")
    info = json.loads(path.read_text())
    info["token_uri"] = "https://oauth2.googleapis.com/token"
    path.write_text(json.dumps(info))

    credentials = _load_credentials(path)

    assert type(credentials) is service_account.Credentials
    assert credentials._token_uri == "https://oauth2.googleapis.com/token"  # noqa: SLF001


class _NamelessFCM(FakeFCM):
    """Answers 200 without a message name: a provider answer we cannot read."""

    def _send(self, request, project):
        response = super()._send(request, project)
        return Response.json(200, {"unexpected": True}) if response.status == 200 else response


def test_a_success_answer_without_a_name_is_transient(tmp_path):
    with _NamelessFCM() as fake:
        channel = FCMPush(fake.write_service_account(tmp_path / "sa.json"), api_base_url=fake.url)
        try:
            with pytest.raises(TransientChannelError) as caught:
                channel.send(_message(1))
            results = channel.send_batch([_message(2), _message(3)])
        finally:
            channel.close()

    assert caught.value.code == "provider_error"
    assert all(isinstance(r, TransientChannelError) and r.code == "provider_error" for r in results)
