"""Campaign definitions: validation (422 naming the place), lifecycle (409 on wrong moves), hooks."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import Api

SMS = {"name": "Hello", "channel": "sms",
       "targets": [{"segment": None, "control_percent": 10,
                    "variants": [{"name": "A", "weight": 1, "content": {"body": "Hi {{ user.first_name }}"}}]}],
       "quiet_hours": None}


@pytest.fixture
def sms_api(client, clean_db, redis_conn, settings):
    """An app whose environment has Twilio settings (nothing is sent in these tests)."""
    from tidings.app import create_app
    from tidings.apps import create_app_record
    from tidings.db import session_scope

    configured = dataclasses.replace(settings, twilio_account_sid="AC" + "0" * 32, twilio_auth_token="t",
                                     twilio_from="+15005550006")
    application = create_app(configured)
    with session_scope() as s:
        record, key, _ = create_app_record(s, "SMS app")
        app_id = record.id
    return Api(application.test_client(), app_id, key)


def with_(**changes):
    return {**SMS, **changes}


def test_create_returns_draft_with_id(api):
    r = api.post("/campaigns", json=SMS)
    assert r.status_code == 201
    assert r.json["id"] and r.json["status"] == "draft" and r.json["targets"][0]["control_percent"] == 10
    assert api.get(f"/campaigns/{r.json['id']}").json["name"] == "Hello"
    assert [c["id"] for c in api.get("/campaigns?status=draft").json["campaigns"]] == [r.json["id"]]


@pytest.mark.parametrize("body, field", [
    (with_(channel="fax"), "channel"),
    (with_(targets=[]), "targets"),
    (with_(targets=[{"variants": [{"name": "A", "weight": -1, "content": {"body": "x"}}]}]), "targets.0.variants.0.weight"),
    (with_(targets=[{"variants": [{"name": "A", "weight": 0, "content": {"body": "x"}}]}]), "targets.0.variants"),
    (with_(targets=[{"variants": [{"name": "A", "content": {"body": "x"}}, {"name": "A", "content": {"body": "y"}}]}]), "targets.0.variants"),
    (with_(targets=[{"control_percent": 101, "variants": [{"name": "A", "content": {"body": "x"}}]}]), "targets.0.control_percent"),
    (with_(targets=[{"variants": [{"name": "A", "content": {"text": "x"}}]}]), "targets.0.variants.0.content.body"),
    (with_(schedule={"type": "recurring", "cron": "every monday"}), "schedule.cron"),
    (with_(schedule={"type": "once"}), "schedule.at"),
    (with_(schedule={"type": "now", "cron": "0 10 * * 1"}), "schedule.cron"),
    (with_(quiet_hours={"start": "25:00", "end": "08:00"}), "quiet_hours.start"),
    (with_(frequency_cap={"max": 0, "per_hours": 24}), "frequency_cap.max"),
    (with_(local_time=True), "local_time"),
    (with_(audience='contry = "US"'), "audience"),
    (with_(colour="red"), "colour"),
])
def test_invalid_definitions_answer_422_naming_the_field(api, body, field):
    r = api.post("/campaigns", json=body)
    assert r.status_code == 422, r.json
    assert r.json["error"]["details"]["field"] == field, r.json
    assert api.get("/campaigns").json["campaigns"] == []


def test_template_syntax_errors_name_variant_and_line(api):
    body = with_(targets=[{"variants": [
        {"name": "A", "content": {"body": "ok"}},
        {"name": "B", "content": {"body": "line one\n{{ user.first_name }"}}]}])
    r = api.post("/campaigns", json=body)
    assert r.status_code == 422
    assert 'variant "B"' in r.json["error"]["message"] and "line 2" in r.json["error"]["message"]
    assert r.json["error"]["details"]["field"] == "targets.0.variants.1.content.body"


def test_segment_errors_carry_the_position(api):
    r = api.post("/campaigns", json=with_(targets=[{"segment": "attr.age >= ", "variants": SMS["targets"][0]["variants"]}]))
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "targets.0.segment"
    assert r.json["error"]["details"]["position"] == 12


def test_inapp_html_is_sanitised_when_saved(api):
    body = {"name": "In-app", "channel": "inapp", "targets": [{"variants": [{"name": "A", "content": {
        "layout": "modal", "html": '<p onclick="x()">Hi {{ user.id }}</p><script>alert(1)</script>'
                                   '<a href="javascript:alert(1)">x</a>'}}]}]}
    html = api.post("/campaigns", json=body).json["targets"][0]["variants"][0]["content"]["html"]
    assert "script" not in html and "onclick" not in html and "javascript:" not in html
    assert "{{ user.id }}" in html


def test_sms_refuses_to_launch_without_twilio(api):
    campaign = api.post("/campaigns", json=SMS).json
    r = api.post(f"/campaigns/{campaign['id']}/launch")
    assert r.status_code == 409 and r.json["error"]["code"] == "provider_not_configured"
    assert api.get(f"/campaigns/{campaign['id']}").json["status"] == "draft"


def test_lifecycle_and_wrong_moves_are_409(sms_api):
    campaign = sms_api.post("/campaigns", json=with_(schedule={"type": "once", "at": "2099-01-01T10:00:00Z"})).json
    cid = campaign["id"]
    assert sms_api.post(f"/campaigns/{cid}/pause").status_code == 409
    assert sms_api.post(f"/campaigns/{cid}/resume").status_code == 409
    assert sms_api.post(f"/campaigns/{cid}/launch").json["status"] == "scheduled"
    assert sms_api.post(f"/campaigns/{cid}/launch").status_code == 409
    assert sms_api.post(f"/campaigns/{cid}/pause").json["status"] == "paused"
    assert sms_api.put(f"/campaigns/{cid}", json={"name": "Renamed"}).json["name"] == "Renamed"
    assert sms_api.post(f"/campaigns/{cid}/resume").json["status"] == "scheduled"
    assert sms_api.post(f"/campaigns/{cid}/cancel").json["status"] == "cancelled"
    for action in ("launch", "pause", "resume", "cancel"):
        assert sms_api.post(f"/campaigns/{cid}/{action}").status_code == 409
    assert sms_api.put(f"/campaigns/{cid}", json={"name": "x"}).status_code == 409


def test_once_in_the_past_is_refused(sms_api):
    campaign = sms_api.post("/campaigns", json=with_(schedule={"type": "once", "at": "2001-01-01T10:00:00Z"})).json
    r = sms_api.post(f"/campaigns/{campaign['id']}/launch")
    assert r.status_code == 422 and sms_api.get(f"/campaigns/{campaign['id']}").json["status"] == "draft"


def test_preview_for_one_user(api):
    api.put("/users/ann", json={"attributes": {"first_name": "Ann", "tier": "gold"}})
    api.put("/users/bob", json={"attributes": {"tier": "basic"}})
    campaign = api.post("/campaigns", json=with_(audience='attr.tier = "gold"', targets=[
        {"control_percent": 0, "variants": [{"name": "A", "content": {"body": "Hi {{ user.first_name }}"}}]}])).json
    assert api.post(f"/campaigns/{campaign['id']}/preview", json={"user": "ann"}).json == {
        "target": 0, "variant": "A", "control": False, "content": {"body": "Hi Ann"}}
    assert api.post(f"/campaigns/{campaign['id']}/preview", json={"user": "bob"}).json == {
        "target": None, "variant": None, "control": False, "content": None}
    assert api.post(f"/campaigns/{campaign['id']}/preview", json={"user": "nobody"}).status_code == 404


def test_other_apps_campaign_is_404(api, other_api):
    campaign = api.post("/campaigns", json=SMS).json
    assert other_api.get(f"/campaigns/{campaign['id']}").status_code == 404
    assert other_api.post(f"/campaigns/{campaign['id']}/launch").status_code == 404


def test_hooks_crud_and_typed_overrides(api):
    assert api.post("/hooks", json={"key": "discount", "type": "number", "default": 5}).status_code == 201
    assert api.post("/hooks", json={"key": "discount", "type": "number", "default": 5}).status_code == 409
    assert api.post("/hooks", json={"key": "flag", "type": "boolean", "default": "yes"}).status_code == 422
    config = {"name": "Discounts", "channel": "config", "targets": [{"segment": None, "variants": [
        {"name": "A", "content": {"hooks": {"discount": "ten"}}}]}]}
    r = api.post("/campaigns", json=config)
    assert r.status_code == 422 and "discount" in r.json["error"]["message"]
    config["targets"][0]["variants"][0]["content"]["hooks"]["discount"] = 10
    assert api.post("/campaigns", json=config).status_code == 201
    assert api.delete("/hooks/discount").status_code == 409
    assert api.put("/hooks/discount", json={"default": 7}).json["default"] == 7
    assert api.put("/hooks/discount", json={"type": "string"}).status_code == 409
    assert [h["key"] for h in api.get("/hooks").json["hooks"]] == ["discount"]
