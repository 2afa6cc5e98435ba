"""The registry: an explicit name -> factory dict, and imports without side effects."""

from __future__ import annotations

import subprocess
import sys

import pytest

from channels.errors import ChannelConfigError
from channels.push import FCMPush
from channels.registry import CHANNELS, build_channel
from channels.sms import TwilioSMS


def test_registry_names_every_channel_explicitly():
    assert CHANNELS == {"sms": TwilioSMS.from_settings, "push": FCMPush.from_settings}


def test_build_channel_builds_the_named_channel(fake_twilio, fake_fcm, service_account_path):
    sms = build_channel("sms", {"account_sid": fake_twilio.account_sid, "auth_token": fake_twilio.auth_token,
                                "from_number": "+15005550006", "api_base_url": fake_twilio.url})
    push = build_channel("push", {"credentials_path": str(service_account_path), "api_base_url": fake_fcm.url})
    try:
        assert (type(sms), sms.name, sms.api_base_url) == (TwilioSMS, "sms", fake_twilio.url)
        assert (type(push), push.name, push.api_base_url) == (FCMPush, "push", fake_fcm.url)
    finally:
        sms.close()
        push.close()


def test_unknown_channel_is_a_config_error():
    with pytest.raises(ChannelConfigError, match="carrier-pigeon"):
        build_channel("carrier-pigeon", {})


@pytest.mark.parametrize("name", ["sms", "push"])
def test_missing_settings_are_a_config_error_with_a_clear_message(name):
    with pytest.raises(ChannelConfigError) as caught:
        build_channel(name, {})

    assert caught.value.status == 422 and caught.value.code == "channel_not_configured"
    assert "missing channel settings" in caught.value.message


def test_importing_channels_loads_no_provider_library_nor_the_web_or_orm():
    code = (
        "import sys, channels, channels.base, channels.errors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('twilio', 'firebase_admin', 'flask', 'sqlalchemy', 'requests')]\n"
        "assert not bad, bad\n"
        "import channels.registry\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'segments', 'campaigns', 'scheduler')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
