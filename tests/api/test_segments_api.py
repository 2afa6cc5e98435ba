"""Segments API: CRUD, size, preview, churn, query errors with positions, segment() references."""

from __future__ import annotations

import datetime as dt


def seed(api):
    now = dt.datetime.now(dt.UTC)
    api.post("/users/batch", json={"users": [
        {"external_id": "gold-1", "attributes": {"loyalty": "gold", "age": 25}, "country": "US"},
        {"external_id": "gold-2", "attributes": {"loyalty": "gold", "age": 41}, "country": "FR"},
        {"external_id": "silver", "attributes": {"loyalty": "silver"}, "country": "US"},
        {"external_id": "nobody"},
    ]})
    api.post("/events", json={"events": [
        {"user": "gold-1", "name": "open", "time": (now - dt.timedelta(days=1)).isoformat()},
        {"user": "gold-2", "name": "open", "time": (now - dt.timedelta(days=40)).isoformat()},
        {"user": "silver", "name": "open", "time": (now - dt.timedelta(days=2)).isoformat()},
    ]})


def test_create_get_list_update_delete(api):
    r = api.post("/segments", json={"name": "Gold", "query": 'attr.loyalty = "gold"', "description": "tier"})
    assert r.status_code == 201
    seg = r.json
    assert seg["id"] and seg["name"] == "Gold"
    assert api.get(f"/segments/{seg['id']}").json["query"] == 'attr.loyalty = "gold"'
    assert [s["name"] for s in api.get("/segments").json["segments"]] == ["Gold"]
    r = api.put(f"/segments/{seg['id']}", json={"query": 'attr.loyalty in ("gold", "silver")'})
    assert r.status_code == 200 and r.json["query"].startswith("attr.loyalty in")
    assert api.delete(f"/segments/{seg['id']}").status_code == 204
    assert api.get(f"/segments/{seg['id']}").status_code == 404


def test_size_preview_and_membership(api):
    seed(api)
    seg = api.post("/segments", json={"name": "Gold", "query": 'attr.loyalty = "gold"'}).json
    assert api.get(f"/segments/{seg['id']}/size").json == {"count": 2}
    r = api.post("/segments/preview", json={"query": 'country = "US"'})
    assert r.json == {"count": 2, "sample": ["gold-1", "silver"]}
    assert api.get("/users/gold-1").json["segments"] == [seg["id"]]
    assert api.get("/users/silver").json["segments"] == []


def test_query_errors_are_422_with_position(api):
    r = api.post("/segments", json={"name": "Bad", "query": 'contry = "US"'})
    assert r.status_code == 422
    assert r.json["error"]["details"]["position"] == 0
    assert "contry" in r.json["error"]["message"]
    r = api.post("/segments/preview", json={"query": "attr.age >= "})
    assert r.status_code == 422 and r.json["error"]["details"]["position"] == 12
    assert "number" in r.json["error"]["message"]
    r = api.post("/segments/preview", json={"query": 'attr. = "x"'})
    assert r.status_code == 422 and 'unknown field "attr."' in r.json["error"]["message"]
    assert api.get("/segments").json["segments"] == []


def test_segment_references_cycles_and_dependents(api):
    seed(api)
    gold = api.post("/segments", json={"name": "Gold", "query": 'attr.loyalty = "gold"'}).json
    us_gold = api.post("/segments", json={"name": "US gold", "query": 'segment("Gold") and country = "US"'}).json
    assert api.get(f"/segments/{us_gold['id']}/size").json == {"count": 1}
    r = api.put(f"/segments/{gold['id']}", json={"query": 'segment("US gold")'})
    assert r.status_code == 422 and "itself" in r.json["error"]["message"]
    assert api.delete(f"/segments/{gold['id']}").status_code == 409
    r = api.post("/segments", json={"name": "X", "query": 'segment("Nope")'})
    assert r.status_code == 422 and r.json["error"]["details"]["position"] == 0
    assert api.post("/segments", json={"name": "Gold", "query": "sms_opt_in = true"}).status_code == 409


def test_churn(api):
    seed(api)
    seg = api.post("/segments", json={"name": "All gold", "query": 'attr.loyalty exists'}).json
    r = api.get(f"/segments/{seg['id']}/churn?inactive_days=30")
    assert r.json["users"] == 3 and r.json["active"] == 2 and r.json["churned"] == 1
    assert abs(r.json["churn_rate"] - 1 / 3) < 1e-6
    assert api.get(f"/segments/{seg['id']}/churn?inactive_days=zero").status_code == 422


def test_other_apps_segment_is_404(api, other_api):
    seg = api.post("/segments", json={"name": "Gold", "query": 'attr.loyalty = "gold"'}).json
    for call in (other_api.get, other_api.delete):
        assert call(f"/segments/{seg['id']}").status_code == 404
    assert other_api.get(f"/segments/{seg['id']}/size").status_code == 404


def test_unknown_body_fields_are_422(api):
    r = api.post("/segments", json={"name": "A", "query": "sms_opt_in = true", "colour": "red"})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "colour"
