"""Local fake provider servers (Twilio, FCM) that the real provider libraries are pointed at.

Each runs on 127.0.0.1 on an ephemeral port in a background thread; use it as a context
manager or `start()`/`stop()`, and read `.url`. Usable from pytest fixtures and bench scripts.
"""

from tests.fakes.fcm import FakeFCM, FCMMessage, service_account_info
from tests.fakes.server import FakeHTTPServer, Request, Response, unused_local_url
from tests.fakes.twilio import FakeTwilio, SignedCallback, TwilioMessage

__all__ = [
    "FakeFCM",
    "FakeHTTPServer",
    "FakeTwilio",
    "FCMMessage",
    "Request",
    "Response",
    "SignedCallback",
    "TwilioMessage",
    "service_account_info",
    "unused_local_url",
]
