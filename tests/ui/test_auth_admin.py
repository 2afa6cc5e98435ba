"""Sign-in, sessions, CSRF, roles, the app switcher and the admin pages (apps, keys, providers, accounts)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.ui.conftest import PASSWORD, csrf_token, make_account, sign_in
from tidings.db import session_scope
from tidings.models import Account, App


def test_pages_send_strangers_to_the_login_page(client, ui_app):
    r = client.get("/segments")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/segments")
    assert client.get("/login").status_code == 200


def test_wrong_password_is_refused_without_saying_which_part(client, ui_app):
    make_account("m@tidings.test", "marketer")
    r = sign_in(client, "m@tidings.test", "not the password")
    assert r.status_code == 401 and "Wrong email or password" in r.get_data(as_text=True)
    r = sign_in(client, "nobody@tidings.test", "whatever12")
    assert r.status_code == 401 and "Wrong email or password" in r.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_without_a_csrf_token_is_refused(client, ui_app):
    make_account("m@tidings.test", "marketer")
    client.get("/login")
    r = client.post("/login", data={"email": "m@tidings.test", "password": PASSWORD})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(app, ui_app):
    make_account("m@tidings.test", "marketer")
    c = app.test_client()
    token = csrf_token(c)
    r = c.post("/login?next=/campaigns", data={"email": "M@tidings.test ", "password": PASSWORD, "csrf_token": token})
    assert r.headers["Location"] == "/campaigns"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        c = app.test_client()
        token = csrf_token(c)
        r = c.post(f"/login?next={evil}", data={"email": "m@tidings.test", "password": PASSWORD, "csrf_token": token})
        assert r.headers["Location"] == "/"


def test_logout_needs_a_post_with_a_token_and_ends_the_session(marketer):
    assert marketer.get("/logout").status_code == 405
    assert marketer.client.post("/logout").status_code == 400  # no token
    assert marketer.post("/logout").status_code == 302
    assert marketer.get("/").status_code == 302


def test_a_deactivated_account_is_signed_out_at_its_next_request(marketer):
    with session_scope() as s:
        s.execute(sa.update(Account).values(active=False))
    r = marketer.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert sign_in(marketer.client, marketer.email).status_code == 401


def test_unsafe_ui_requests_need_the_csrf_token(marketer):
    r = marketer.client.post("/switch-app", data={"app_id": "1"})
    assert r.status_code == 400 and "CSRF token is missing" in r.get_data(as_text=True)


def test_the_json_api_needs_no_csrf_token(api, client):
    r = api.post("/segments", json={"name": "fr", "query": 'country = "FR"'})
    assert r.status_code == 201


def test_every_role_sees_the_overview_with_its_role(anyone):
    page = anyone.text("/")
    assert "Shop" in page and f"role-{anyone.role}" in page
    assert ("Accounts</a>" in page) == (anyone.role == "admin")


def test_pages_carry_security_headers(marketer):
    r = marketer.get("/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("role", ["marketer", "viewer"])
@pytest.mark.parametrize("path", ["/admin/apps", "/admin/accounts", "/admin/apps/{app}"])
def test_admin_pages_are_refused_to_other_roles(request, role, path, ui_app):
    ui = request.getfixturevalue(role)
    path = path.format(app=ui_app[0])
    assert ui.get(path).status_code == 403
    assert ui.post(path, {"name": "x"}).status_code == 403


def test_viewers_are_refused_every_change(viewer, ui_app):
    r = viewer.post(f"/admin/apps/{ui_app[0]}/rotate/server")
    assert r.status_code == 403 and "viewer" in r.get_data(as_text=True)


def test_admin_creates_an_app_and_sees_its_keys_once(admin, api):
    r = admin.post("/admin/apps", {"name": "Mobile shop"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "will not be shown again" in page
    server_key = page.split("tds_sk_", 1)[1].split("<", 1)[0]
    listing = admin.text("/admin/apps")
    assert "Mobile shop" in listing and "tds_sk_" not in listing
    r = api.with_key("tds_sk_" + server_key).get("/segments")
    assert r.status_code == 200
    # The new app became the current one.
    assert '<option value="%d" selected>Mobile shop' % _app_id("Mobile shop") in admin.text("/")


def test_an_app_needs_a_name(admin):
    r = admin.post("/admin/apps", {"name": "   "})
    assert r.status_code == 422 and "This field is required" in r.get_data(as_text=True)


def test_rotating_a_key_shows_the_new_key_once_and_the_old_one_stops(admin, client, ui_app):
    app_id, old_key = ui_app
    r = admin.post(f"/admin/apps/{app_id}/rotate/server")
    page = r.get_data(as_text=True)
    new_key = "tds_sk_" + page.split("tds_sk_", 1)[1].split("<", 1)[0]
    assert "old key stopped working" in page
    assert client.get("/api/v1/segments", headers={"Authorization": f"Bearer {old_key}"}).status_code == 401
    assert client.get("/api/v1/segments", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    assert new_key not in admin.text(f"/admin/apps/{app_id}")
    assert admin.post(f"/admin/apps/{app_id}/rotate/master").status_code == 404


def test_provider_secrets_are_saved_but_never_shown_again(admin, ui_app):
    app_id = ui_app[0]
    token = "f" * 28 + "9a8b"
    service_account = json.dumps({"type": "service_account", "project_id": "shop-prod",
                                  "client_email": "push@shop-prod.iam.example", "private_key": "-----BEGIN SECRET-----"})
    r = admin.post(f"/admin/apps/{app_id}", {
        "twilio_account_sid": "AC" + "1" * 32, "twilio_auth_token": token, "twilio_from": "+15005550006",
        "fcm_credentials": service_account})
    assert r.status_code == 302
    page = admin.text(f"/admin/apps/{app_id}")
    assert token not in page and "BEGIN SECRET" not in page
    assert "set (ends …9a8b)" in page and "project shop-prod" in page and "AC" + "1" * 32 in page
    assert "SMS: <strong>ready" in page and "Push: <strong>ready" in page
    # Saving again with the secret fields empty keeps them; "remove" removes.
    admin.post(f"/admin/apps/{app_id}", {"twilio_account_sid": "AC" + "2" * 32, "twilio_from": "+15005550006"})
    with session_scope() as s:
        saved = s.get(App, app_id).settings
    assert saved["twilio_auth_token"] == token and saved["twilio_account_sid"] == "AC" + "2" * 32
    admin.post(f"/admin/apps/{app_id}", {"clear_twilio_auth_token": "y", "clear_fcm_credentials": "y"})
    with session_scope() as s:
        saved = s.get(App, app_id).settings
    assert "twilio_auth_token" not in saved and "fcm_credentials" not in saved and "twilio_from" not in saved


def test_a_broken_service_account_is_refused_next_to_its_field(admin, ui_app):
    r = admin.post(f"/admin/apps/{ui_app[0]}", {"fcm_credentials": '{"project_id": "x"'})
    assert r.status_code == 422 and "not JSON" in r.get_data(as_text=True)
    r = admin.post(f"/admin/apps/{ui_app[0]}", {"fcm_credentials": '{"project_id": "x"}'})
    assert r.status_code == 422 and "needs client_email, private_key" in r.get_data(as_text=True)


def test_admin_adds_an_account_that_can_then_sign_in(admin, app):
    r = admin.post("/admin/accounts", {"email": "New@Tidings.test", "role": "viewer", "password": "long enough pw"})
    assert r.status_code == 302
    assert "new@tidings.test" in admin.text("/admin/accounts")
    assert sign_in(app.test_client(), "new@tidings.test", "long enough pw").status_code == 302
    r = admin.post("/admin/accounts", {"email": "new@tidings.test", "role": "viewer", "password": "long enough pw"})
    assert r.status_code == 422 and "exists already" in r.get_data(as_text=True)
    r = admin.post("/admin/accounts", {"email": "short@tidings.test", "role": "viewer", "password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.get_data(as_text=True)


def test_admin_changes_a_role_but_never_their_own(admin):
    other = make_account("v@tidings.test", "viewer")
    r = admin.post(f"/admin/accounts/{other}", {f"a{other}-role": "marketer", f"a{other}-active": "y"})
    assert r.status_code == 302
    with session_scope() as s:
        me = s.scalar(sa.select(Account).where(Account.email == admin.email))
        assert s.get(Account, other).role == "marketer"
    r = admin.post(f"/admin/accounts/{me.id}", {f"a{me.id}-role": "viewer", f"a{me.id}-active": "y"})
    assert r.status_code == 409


def test_the_app_switcher_changes_the_current_app(marketer):
    from tidings.apps import create_app_record

    with session_scope() as s:
        other, _, _ = create_app_record(s, "Another")
    r = marketer.post("/switch-app", {"app_id": str(other.id), "next": "/segments"})
    assert r.status_code == 302 and r.headers["Location"] == "/segments"
    assert f'<option value="{other.id}" selected>Another' in marketer.text("/")
    assert marketer.post("/switch-app", {"app_id": "999999"}).status_code == 404
    assert marketer.post("/switch-app", {"app_id": "x", "next": "//evil"}).status_code == 400


def test_without_any_app_admins_are_pointed_to_create_one(app):
    from tests.ui.conftest import UI

    make_account("a@tidings.test", "admin")
    ui = UI(app.test_client(), "admin")
    ui.email = "a@tidings.test"
    sign_in(ui.client, ui.email)
    assert "Create the first app" in ui.text("/")


def _app_id(name: str) -> int:
    with session_scope() as s:
        return s.scalar(sa.select(App.id).where(App.name == name))
