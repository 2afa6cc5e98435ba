"""PUT/GET/DELETE /users and POST /users/batch against real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from segments.models import Device, Event, User
from tidings.db import session_scope


def count(model) -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def test_put_creates_then_updates_and_merges_attributes(api):
    r = api.put("/users/u1", json={"attributes": {"loyalty": "gold", "age": 31}, "country": "fr",
                                   "timezone": "Europe/Paris", "language": "fr"})
    assert r.status_code == 201, r.json
    assert r.json["id"] == "u1" and r.json["country"] == "FR"
    r = api.put("/users/u1", json={"attributes": {"age": 32, "loyalty": None, "vip": True}})
    assert r.status_code == 200
    assert r.json["attributes"] == {"age": 32, "vip": True}
    assert r.json["timezone"] == "Europe/Paris"  # fields not named stay


def test_devices_upsert_by_id_and_unnamed_devices_stay(api):
    api.put("/users/u1", json={"devices": [{"id": "d1", "platform": "ios", "app_version": "3.1"},
                                           {"id": "d2", "platform": "android"}]})
    r = api.put("/users/u1", json={"devices": [{"id": "d1", "app_version": "3.2", "push_token": "tok"}]})
    devices = {d["id"]: d for d in r.json["devices"]}
    assert set(devices) == {"d1", "d2"}
    assert devices["d1"]["platform"] == "ios" and devices["d1"]["app_version"] == "3.2"
    assert devices["d1"]["push_token"] == "tok"


def test_device_named_by_another_user_moves_to_that_user(api):
    api.put("/users/a", json={"devices": [{"id": "shared", "platform": "ios"}]})
    api.put("/users/b", json={"devices": [{"id": "shared", "platform": "ios"}]})
    assert api.get("/users/a").json["devices"] == []
    assert [d["id"] for d in api.get("/users/b").json["devices"]] == ["shared"]


def test_phone_is_normalised_to_e164(api):
    r = api.put("/users/u1", json={"phone": "(415) 555-0134", "country": "US"})
    assert r.status_code == 201 and r.json["phone"] == "+14155550134"


def test_bad_fields_answer_422_naming_the_field_and_write_nothing(api):
    cases = [
        ({"phone": "12"}, "phone"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"country": "XX"}, "country"),
        ({"lat": "40"}, "lat"),
        ({"lat": 91}, "lat"),
        ({"sms_opt_in": "yes"}, "sms_opt_in"),
        ({"devices": [{"id": "d", "platform": "symbian"}]}, "devices.0.platform"),
        ({"attributes": {"bad name": 1}}, "attributes"),
        ({"unknown": 1}, "unknown"),
    ]
    for body, field in cases:
        r = api.put("/users/u1", json=body)
        assert r.status_code == 422, (body, r.json)
        assert r.json["error"]["code"] == "invalid"
        assert r.json["error"]["details"]["field"] == field, (body, r.json)
    assert count(User) == 0


def test_malformed_json_is_400(api):
    r = api.put("/users/u1", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] == "malformed"
    r = api.put("/users/u1", data="x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = api.put("/users/u1", json=[1, 2])
    assert r.status_code == 422


def test_oversized_body_is_413(api):
    r = api.put("/users/u1", json={"attributes": {"blob": "x" * (6 * 1024 * 1024)}})
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"
    assert count(User) == 0


def test_auth_errors(client, api, client_api):
    assert client.get("/api/v1/users/u1").status_code == 401
    r = client.get("/api/v1/users/u1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    assert client_api.get("/users/u1").status_code == 403
    assert client_api.post("/users/batch", json={"users": [{"external_id": "x"}]}).status_code == 403


def test_client_key_may_not_set_phone_or_sms_consent(client_api, api):
    r = client_api.put("/users/u1", json={"phone": "+14155550134"})
    assert r.status_code == 403 and r.json["error"]["details"]["fields"] == ["phone"]
    r = client_api.put("/users/u1", json={"sms_opt_in": True})
    assert r.status_code == 403
    assert count(User) == 0
    assert client_api.put("/users/u1", json={"language": "en", "push_opt_in": False}).status_code == 201


def test_another_apps_user_answers_404(api, other_api):
    api.put("/users/u1", json={})
    assert other_api.get("/users/u1").status_code == 404
    assert other_api.delete("/users/u1").status_code == 404
    assert api.get("/users/u1").status_code == 200


def test_batch_is_all_or_nothing_and_names_index_and_field(api):
    r = api.post("/users/batch", json={"users": [{"external_id": "a"}, {"external_id": "b", "timezone": "Nope/No"}]})
    assert r.status_code == 422
    assert r.json["error"]["details"]["index"] == 1
    assert r.json["error"]["details"]["field"] == "timezone"
    assert count(User) == 0
    r = api.post("/users/batch", json={"users": [{"external_id": "a", "attributes": {"x": 1}},
                                                 {"external_id": "b"}, {"external_id": "a", "attributes": {"y": 2}}]})
    assert r.status_code == 200 and r.json == {"accepted": 3, "created": 2, "updated": 0}
    assert api.get("/users/a").json["attributes"] == {"x": 1, "y": 2}


def test_batch_over_1000_is_rejected(api):
    r = api.post("/users/batch", json={"users": [{"external_id": str(i)} for i in range(1001)]})
    assert r.status_code == 422 and count(User) == 0


def test_delete_erases_person_with_devices_and_events(api):
    api.put("/users/u1", json={"devices": [{"id": "d1"}]})
    api.post("/events", json={"events": [{"user": "u1", "name": "open"}]})
    assert api.delete("/users/u1").status_code == 204
    assert api.get("/users/u1").status_code == 404
    assert count(User) == count(Device) == count(Event) == 0


def test_nul_characters_are_refused_not_a_server_error(api):
    """PostgreSQL text and JSONB cannot hold U+0000: a 422 naming the field (a 404 for a user id looked up)."""
    r = api.put("/users/u1", json={"city": "a\u0000b"})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "city"
    r = api.put("/users/u1", json={"attributes": {"note": ["ok", "a\u0000"]}})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "attributes"
    r = api.post("/users/batch", json={"users": [{"external_id": "ok"}, {"external_id": "x\u0000"}]})
    assert r.status_code == 422 and r.json["error"]["details"]["index"] == 1
    assert api.put("/users/a%00b", json={}).status_code == 422
    assert api.get("/users/a%00b").status_code == 404 and api.delete("/users/a%00b").status_code == 404
    r = api.post("/events", json={"events": [{"user": "u", "name": "x", "properties": {"k": {"deep": "\u0000"}}}]})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "properties"
    assert count(User) == 0
