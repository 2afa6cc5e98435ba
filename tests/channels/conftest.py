"""Fixtures for the channel tests: the provider fakes, channels aimed at them, and a guard that
fails any test in this package that tries to reach anything but loopback."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

from tests.fakes import FakeFCM, FakeTwilio

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Refuse, and remember, every name lookup or connection that is not to loopback, from any
    thread (google-auth, for one, likes background requests to Google); the test then fails."""
    attempts: list[str] = []
    lock = threading.Lock()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(what: str) -> OSError:
        with lock:
            attempts.append(what)
        return OSError(f"test blocked a non-loopback network access: {what}")

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise refuse(f"getaddrinfo({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise refuse(f"connect({address!r})")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert not attempts, f"non-loopback network access attempted: {attempts}"


@pytest.fixture
def fake_twilio():
    with FakeTwilio() as fake:
        yield fake
        assert not fake.errors, fake.errors


@pytest.fixture
def fake_fcm():
    with FakeFCM() as fake:
        yield fake
        assert not fake.errors, fake.errors


@pytest.fixture
def service_account_path(fake_fcm, tmp_path):
    return fake_fcm.write_service_account(tmp_path / "service-account.json")


@pytest.fixture
def sms_channel(fake_twilio):
    from channels.sms import TwilioSMS

    channel = TwilioSMS(fake_twilio.account_sid, fake_twilio.auth_token, from_number="+15005550006",
                        api_base_url=fake_twilio.url, timeout=5.0)
    yield channel
    channel.close()


@pytest.fixture
def push_channel(fake_fcm, service_account_path):
    from channels.push import FCMPush

    channel = FCMPush(service_account_path, api_base_url=fake_fcm.url, timeout=5.0)
    yield channel
    channel.close()
