"""UI fixtures: signed-in test clients per role, CSRF tokens read from the page, one app."""

from __future__ import annotations

import re

import pytest

from tidings.db import session_scope

PASSWORD = "correct horse battery"
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = TOKEN.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def make_account(email: str, role: str, password: str = PASSWORD) -> int:
    from tidings.accounts import create_account

    with session_scope() as session:
        return create_account(session, email, role, password).id


def sign_in(client, email: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


class UI:
    """A signed-in test client that adds the CSRF token to every POST."""

    def __init__(self, client, role: str):
        self.client, self.role = client, role
        self.email = f"{role}@tidings.test"

    def token(self) -> str:
        return csrf_token(self.client, "/")

    def get(self, path, **kw):
        return self.client.get(path, **kw)

    def post(self, path, data=None, **kw):
        data = dict(data or {})
        data.setdefault("csrf_token", self.token())
        return self.client.post(path, data=data, **kw)

    def post_json(self, path, body, **kw):
        headers = {"X-CSRFToken": self.token(), **kw.pop("headers", {})}
        return self.client.post(path, json=body, headers=headers, **kw)

    def text(self, path) -> str:
        r = self.get(path)
        assert r.status_code == 200, (path, r.status_code, r.get_data(as_text=True)[:2000])
        return r.get_data(as_text=True)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """Still argon2, at test-sized cost: the default costs ~0.5 s per hash on a busy CI box."""
    from argon2 import PasswordHasher

    from tidings import accounts

    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def ui_app(app):
    """The app (workspace) the UI tests look at: (id, server key)."""
    from tidings.apps import create_app_record

    with session_scope() as session:
        record, server_key, _ = create_app_record(session, "Shop")
        return record.id, server_key


@pytest.fixture
def ui_api(client, ui_app):
    """The JSON API of the UI's app, to load people and events the way apps do."""
    from tests.conftest import Api

    return Api(client, ui_app[0], ui_app[1])


@pytest.fixture
def fake_twilio():
    from tests.fakes.twilio import FakeTwilio

    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def sms_ready(ui_app, fake_twilio):
    """The UI's app sends SMS through FakeTwilio (per-app provider settings, as the admin page saves)."""
    from scheduler.send import close_channels
    from tidings.models import App

    with session_scope() as session:
        record = session.get(App, ui_app[0])
        record.settings = {"twilio_account_sid": fake_twilio.account_sid, "twilio_auth_token": fake_twilio.auth_token,
                           "twilio_from": "+15005550006", "twilio_api_base_url": fake_twilio.url}
    yield fake_twilio
    close_channels()


def _signed_in(app, role: str) -> UI:
    ui = UI(app.test_client(), role)
    make_account(ui.email, role)
    r = sign_in(ui.client, ui.email)
    assert r.status_code == 302, r.get_data(as_text=True)
    return ui


@pytest.fixture
def admin(app, ui_app) -> UI:
    return _signed_in(app, "admin")


@pytest.fixture
def marketer(app, ui_app) -> UI:
    return _signed_in(app, "marketer")


@pytest.fixture
def viewer(app, ui_app) -> UI:
    return _signed_in(app, "viewer")


@pytest.fixture(params=["admin", "marketer", "viewer"])
def anyone(request, app, ui_app) -> UI:
    return _signed_in(app, request.param)
