"""In-app pulls, hook pulls and interactions through the client key."""

from __future__ import annotations


import sqlalchemy as sa

from campaigns.models import Delivery, DeliveryStatus
from tidings.db import session_scope

INAPP = {"name": "Welcome", "channel": "inapp", "audience": 'country = "FR"',
         "targets": [{"segment": 'attr.tier = "gold"', "control_percent": 0,
                      "variants": [{"name": "G", "content": {"layout": "modal", "title": "Bonjour {{ user.first_name }}",
                                                             "expires_hours": 48}}]},
                     {"segment": None, "control_percent": 50,
                      "variants": [{"name": "A", "content": {"layout": "banner", "body": "Hi"}}]}]}


def launch(api, body):
    campaign = api.post("/campaigns", json=body).json
    assert api.post(f"/campaigns/{campaign['id']}/launch").json["status"] == "running"
    return campaign


def deliveries():
    with session_scope() as s:
        return s.execute(sa.select(Delivery.user_id, Delivery.status, Delivery.variant)).all()


def test_inapp_pull_renders_records_once_and_matches_preview(api, client_api):
    api.put("/users/ann", json={"country": "FR", "attributes": {"tier": "gold", "first_name": "Ann"}})
    api.put("/users/us", json={"country": "US", "attributes": {"tier": "gold"}})
    campaign = launch(api, INAPP)
    r = client_api.get("/users/ann/inapp")
    assert r.status_code == 200
    [message] = r.json["messages"]
    assert message["campaign_id"] == campaign["id"] and message["variant"] == "G"
    assert message["content"]["title"] == "Bonjour Ann" and message["expires_at"]
    assert client_api.get("/users/ann/inapp").json["messages"] == [message]
    assert len(deliveries()) == 1
    preview = api.post(f"/campaigns/{campaign['id']}/preview", json={"user": "ann"}).json
    assert preview["content"] == message["content"]
    assert client_api.get("/users/us/inapp").json == {"messages": []}
    assert client_api.get("/users/stranger/inapp").json == {"messages": []}


def test_control_users_get_nothing_but_are_recorded(api, client_api):
    users = [{"external_id": f"p{i}", "country": "FR"} for i in range(40)]
    api.post("/users/batch", json={"users": users})
    launch(api, INAPP)
    shown = sum(len(client_api.get(f"/users/p{i}/inapp").json["messages"]) for i in range(40))
    rows = deliveries()
    assert len(rows) == 40
    controls = sum(1 for _, status, _ in rows if status == DeliveryStatus.CONTROL)
    assert shown == 40 - controls and 8 <= controls <= 32


def test_dismissed_messages_stop_appearing_and_interactions_are_idempotent(api, client_api, other_api):
    api.put("/users/ann", json={"country": "FR", "attributes": {"tier": "gold"}})
    launch(api, INAPP)
    [message] = client_api.get("/users/ann/inapp").json["messages"]
    path = f"/deliveries/{message['delivery_id']}/interactions"
    assert client_api.post(path, json={"type": "impression"}).status_code == 204
    assert client_api.post(path, json={"type": "impression"}).status_code == 204
    assert client_api.post(path, json={"type": "swipe"}).status_code == 422
    assert other_api.post(path, json={"type": "click"}).status_code == 404
    assert client_api.post("/deliveries/999999/interactions", json={"type": "click"}).status_code == 404
    assert client_api.post(path, json={"type": "dismiss"}).status_code == 204
    assert client_api.get("/users/ann/inapp").json["messages"] == []


def test_triggered_inapp_appears_after_its_event(api, client_api):
    api.put("/users/ann", json={"country": "FR"})
    body = {**INAPP, "schedule": {"type": "triggered", "event": "level_up", "delay_minutes": 0}}
    launch(api, body)
    assert client_api.get("/users/ann/inapp").json["messages"] == []
    client_api.post("/events", json={"events": [{"user": "ann", "name": "level_up"}]})
    messages = client_api.get("/users/ann/inapp").json["messages"]
    assert len(messages) in (0, 1)  # 50% control in the fallback target
    rows = deliveries()
    assert len(rows) == 1 and rows[0][1] in (DeliveryStatus.SENT, DeliveryStatus.CONTROL)
    assert (rows[0][1] == DeliveryStatus.SENT) == (len(messages) == 1)


def test_hooks_defaults_overrides_and_assignments(api, client_api):
    api.post("/hooks", json={"key": "discount", "type": "number", "default": 5})
    api.post("/hooks", json={"key": "banner", "type": "string", "default": "Welcome"})
    api.put("/users/gold", json={"attributes": {"tier": "gold", "first_name": "Ann"}})
    api.put("/users/basic", json={"attributes": {"tier": "basic"}})
    campaign = launch(api, {"name": "Gold perks", "channel": "config", "targets": [
        {"segment": 'attr.tier = "gold"', "control_percent": 0, "variants": [
            {"name": "Big", "content": {"hooks": {"discount": 20, "banner": "Hi {{ user.first_name }}"}}}]}]})
    assert client_api.get("/users/gold/hooks").json == {
        "hooks": {"discount": 20, "banner": "Hi Ann"},
        "assignments": [{"campaign_id": campaign["id"], "variant": "Big"}]}
    assert client_api.get("/users/basic/hooks").json == {"hooks": {"discount": 5, "banner": "Welcome"},
                                                         "assignments": []}
    assert client_api.get("/users/newcomer/hooks").json["hooks"] == {"discount": 5, "banner": "Welcome"}
    # A change to the campaign reaches the next pull (the snapshot follows the app's config version).
    api.post(f"/campaigns/{campaign['id']}/pause")
    assert client_api.get("/users/gold/hooks").json["hooks"]["discount"] == 5


def test_client_key_rate_limit_answers_429_with_retry_after(api, client_api, monkeypatch):
    monkeypatch.setenv("TIDINGS_CLIENT_RATE_LIMIT", "3 per minute")
    codes = [client_api.get("/users/x/hooks") for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    assert codes[3].status_code == 429 and codes[3].json["error"]["code"] == "rate_limited"
    assert int(codes[3].headers["Retry-After"]) > 0
