"""Which channel class serves which channel name: one explicit dict, nothing discovered.

    channel = build_channel("sms", {"account_sid": ..., "auth_token": ..., "from_number": ...})

Factories take a plain settings mapping (keys as in each channel's `from_settings`) and raise
`ChannelConfigError` when a required setting is missing, so a campaign can refuse to launch
with that message. Importing this module imports the provider libraries and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from channels.base import Channel
from channels.errors import ChannelConfigError
from channels.push import FCMPush
from channels.sms import TwilioSMS

__all__ = ["CHANNELS", "build_channel"]

ChannelFactory = Callable[[Mapping[str, Any]], Channel]

CHANNELS: dict[str, ChannelFactory] = {
    "sms": TwilioSMS.from_settings,
    "push": FCMPush.from_settings,
}


def build_channel(name: str, settings: Mapping[str, Any]) -> Channel:
    """A ready channel for `name` ("sms", "push") built from `settings`.

    Raises:
        ChannelConfigError: unknown channel name, or settings missing or invalid.
    """
    try:
        factory = CHANNELS[name]
    except KeyError:
        raise ChannelConfigError(f"no channel named {name!r}", {"known": sorted(CHANNELS)}) from None
    return factory(settings)
