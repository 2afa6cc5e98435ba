"""Fixtures for delivery tests: fake providers and an app configured to use them."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import Api
from tests.fakes.fcm import FakeFCM
from tests.fakes.twilio import FakeTwilio


@pytest.fixture
def fake_twilio():
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake_fcm():
    with FakeFCM() as fake:
        yield fake


@pytest.fixture
def provider_settings(settings, fake_twilio, fake_fcm, tmp_path):
    credentials = fake_fcm.write_service_account(tmp_path / "service-account.json")
    return dataclasses.replace(
        settings, public_base_url="http://tidings.test",
        twilio_account_sid=fake_twilio.account_sid, twilio_auth_token=fake_twilio.auth_token,
        twilio_from="+15005550006", twilio_api_base_url=fake_twilio.url,
        fcm_credentials=str(credentials), fcm_api_base_url=fake_fcm.url,
    )


@pytest.fixture
def app(clean_db, redis_conn, provider_settings):
    from tidings.app import create_app

    from scheduler.send import close_channels

    application = create_app(provider_settings)
    application.config["TESTING"] = True
    yield application
    close_channels()


@pytest.fixture
def api(client, app_keys) -> Api:
    app_id, server_key, _ = app_keys
    return Api(client, app_id, server_key)
