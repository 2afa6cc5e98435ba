"""Power hook pages and user lookup pages, for every role."""

from __future__ import annotations

import pytest

from tests.ui.test_campaigns import PEOPLE, sms


def test_a_marketer_adds_typed_hooks(marketer, ui_api):
    assert marketer.post("/hooks", {"key": "max_items", "type": "number", "default": "12.5"}).status_code == 302
    assert marketer.post("/hooks", {"key": "promo", "type": "boolean", "default": "true", "description": "show it"}).status_code == 302
    assert marketer.post("/hooks", {"key": "theme", "type": "json", "default": '{"dark": true}'}).status_code == 302
    assert marketer.post("/hooks", {"key": "greeting", "type": "string", "default": "Hi"}).status_code == 302
    got = {h["key"]: h["default"] for h in ui_api.get("/hooks").json["hooks"]}
    assert got == {"max_items": 12.5, "promo": True, "theme": {"dark": True}, "greeting": "Hi"}
    page = marketer.text("/hooks")
    assert "show it" in page and "no campaign" in page


@pytest.mark.parametrize(("form", "message"), [
    ({"key": "n", "type": "number", "default": "many"}, "not a number"),
    ({"key": "b", "type": "boolean", "default": "yes"}, "write true or false"),
    ({"key": "j", "type": "json", "default": "{oops"}, "write it as JSON"),
    ({"key": "9bad key", "type": "string", "default": "x"}, "a hook key starts with"),
])
def test_a_wrong_hook_is_refused_next_to_its_field(marketer, form, message):
    r = marketer.post("/hooks", form)
    assert r.status_code == 422 and message in r.get_data(as_text=True)


def test_editing_a_default_and_seeing_who_overrides_it(marketer, ui_api):
    ui_api.post("/hooks", json={"key": "banner", "type": "string", "default": "blue"})
    ui_api.post("/hooks", json={"key": "free", "type": "string", "default": "x"})
    cid = ui_api.post("/campaigns", json={"name": "Red for gold", "channel": "config", "targets": [
        {"segment": 'attr.tier = "gold"', "variants": [{"name": "A", "content": {"hooks": {"banner": "red"}}}]}]}).json["id"]
    page = marketer.text("/hooks/banner")
    assert f'/campaigns/{cid}">Red for gold</a>' in page and "Delete hook" not in page
    assert "Red for gold" in marketer.text("/hooks")
    assert marketer.post("/hooks/banner", {"default": "green", "description": "colour"}).status_code == 302
    assert ui_api.get("/hooks").json["hooks"][0]["default"] == "green"
    assert marketer.post("/hooks/banner/delete").status_code == 409
    assert marketer.post("/hooks/free/delete").status_code == 302
    assert marketer.get("/hooks/free").status_code == 404


def test_viewers_read_hooks_without_forms(viewer, ui_api):
    ui_api.post("/hooks", json={"key": "banner", "type": "string", "default": "blue"})
    assert "Add a hook" not in viewer.text("/hooks")
    page = viewer.text("/hooks/banner")
    assert "Save default" not in page and "disabled" in page
    assert viewer.post("/hooks", {"key": "x", "type": "string", "default": "x"}).status_code == 403
    assert viewer.post("/hooks/banner", {"default": "red"}).status_code == 403
    assert viewer.post("/hooks/banner/delete").status_code == 403


@pytest.fixture
def person(ui_api):
    ui_api.post("/users/batch", json={"users": PEOPLE})
    ui_api.put("/users/u4", json={"country": "FR", "city": "Paris", "timezone": "Europe/Paris",
                                  "devices": [{"id": "d1", "platform": "ios", "device_type": "phone",
                                               "os_version": "17.2", "app_version": "3.4.0", "push_token": "tok"}]})
    ui_api.post("/events", json={"events": [{"user": "u4", "name": "purchase", "properties": {"amount": 60}}]})
    ui_api.post("/segments", json={"name": "Gold", "query": 'attr.tier = "gold"'})
    ui_api.post("/segments", json={"name": "Basic", "query": 'attr.tier = "basic"'})


def test_looking_a_user_up_shows_profile_devices_segments_events_deliveries(anyone, ui_api, person, sms_ready, run_jobs):
    cid = ui_api.post("/campaigns", json=sms(audience=None)).json["id"]
    ui_api.post(f"/campaigns/{cid}/launch")
    run_jobs()
    r = anyone.get("/people?q=u4")
    assert r.status_code == 302 and r.headers["Location"] == "/people/u4"
    page = anyone.text("/people/u4")
    assert "+14155550004" in page and "Paris, FR" in page and "Europe/Paris" in page
    assert ">Gold</a>" in page and ">Basic</a>" not in page
    assert "<strong>ios</strong> phone · OS 17.2 · app 3.4.0 · push token" in page
    assert "purchase" in page and "&#34;amount&#34;: 60" in page
    assert "Spring sale</a>" in page and "Gold N4" in page


def test_a_prefix_lists_matching_users_and_unknown_ids_say_so(marketer, person, ui_api):
    ui_api.put("/users/x1", json={})
    page = marketer.text("/people?q=u")
    assert ">u1</a>" in page and ">u39</a>" in page and ">x1</a>" not in page
    assert "No user id starts with" in marketer.text("/people?q=zz")
    assert "No user id starts with" in marketer.text("/people?q=%25")  # LIKE wildcards are literal
    assert marketer.get("/people/nobody").status_code == 404
    assert ">u4</a>" in marketer.text("/people")
