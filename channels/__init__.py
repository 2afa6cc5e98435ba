"""Channels: one adapter per provider (sms/Twilio, push/FCM) behind one base class.

The scheduler hands a channel rendered `OutboundMessage`s and gets back a `SendResult` or a
`ChannelError` for each; channels never see ORM rows. Build one with
`channels.registry.build_channel(name, settings)`.

Importing the package gives the interface only (cheap); the provider libraries (twilio,
firebase-admin) load with `channels.registry`, `channels.sms` or `channels.push`.
"""

from channels.base import Channel, OutboundMessage, SendResult
from channels.errors import ChannelConfigError, ChannelError, PermanentChannelError, TransientChannelError

__all__ = [
    "Channel",
    "ChannelConfigError",
    "ChannelError",
    "OutboundMessage",
    "PermanentChannelError",
    "SendResult",
    "TransientChannelError",
]
