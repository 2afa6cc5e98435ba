"""The read-only pull fast path answers exactly what the Flask views answer, and hands over the rest."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from campaigns import pulls
from campaigns.models import Delivery
from tests.campaigns.test_pulls import INAPP, launch
from tidings.api import fastpull
from tidings.db import session_scope
from tidings.models import App, KeyKind


@pytest.fixture
def served(monkeypatch):
    """Counts the pulls the fast path answered itself."""
    answered = []
    original = pulls.read_only_pull

    def spy(*args, **kwargs):
        answer = original(*args, **kwargs)
        if answer is not None:
            answered.append(args[1])
        return answer

    monkeypatch.setattr(pulls, "read_only_pull", spy)
    return answered


def through_flask(monkeypatch, client_api, path):
    """The same pull with the fast path out of the way."""
    with monkeypatch.context() as m:
        m.setattr(fastpull.PullFastPath, "answer", lambda self, environ, external_id, kind: None)
        return client_api.get(path)


CONFIG = {"name": "Perks", "channel": "config", "targets": [
    {"segment": 'attr.tier = "gold"', "control_percent": 20, "variants": [
        {"name": "Big", "weight": 1, "content": {"hooks": {"discount": 20, "banner": "Hi {{ user.first_name }}"}}},
        {"name": "Small", "weight": 1, "content": {"hooks": {"discount": 10}}}]},
    {"segment": 'did "purchase" >= 2 times in last 30d', "control_percent": 0, "variants": [
        {"name": "Loyal", "content": {"hooks": {"banner": "Thanks"}}}]}]}


def test_fast_answers_equal_the_views_on_random_people(api, client_api, served, monkeypatch):
    api.post("/hooks", json={"key": "discount", "type": "number", "default": 5})
    api.post("/hooks", json={"key": "banner", "type": "string", "default": "Welcome"})
    rnd = random.Random(11)
    people = [f"p{i}" for i in range(30)]
    for external_id in people:
        api.put(f"/users/{external_id}", json={
            "country": rnd.choice(["FR", "US"]), "attributes": {"tier": rnd.choice(["gold", "basic"]),
                                                                "first_name": rnd.choice(["Ann", "Bé"])},
            "devices": [{"id": f"{external_id}-d", "platform": rnd.choice(["ios", "android"]), "app_version": "3.1"}]})
        events = [{"user": external_id, "name": rnd.choice(["purchase", "open"])} for _ in range(rnd.randint(0, 4))]
        if events:
            client_api.post("/events", json={"events": events})
    launch(api, INAPP)
    launch(api, CONFIG)
    launch(api, {**INAPP, "name": "Second", "audience": None})
    for external_id in people + ["stranger"]:
        for kind in ("inapp", "hooks"):
            path = f"/users/{external_id}/{kind}"
            first = client_api.get(path)  # the first pull records deliveries: the view's work
            assert first.status_code == 200
            for _ in range(2):
                fast = client_api.get(path)
                assert fast.status_code == 200 and fast.headers["Content-Type"] == "application/json"
                assert fast.json == through_flask(monkeypatch, client_api, path).json == first.json, path
        messages = client_api.get(f"/users/{external_id}/inapp").json["messages"]
        if messages and rnd.random() < 0.5:  # dismissed: gone from the very next (fast) pull
            client_api.post(f"/deliveries/{messages[0]['delivery_id']}/interactions", json={"type": "dismiss"})
            after = client_api.get(f"/users/{external_id}/inapp").json["messages"]
            assert after == messages[1:] == through_flask(monkeypatch, client_api, f"/users/{external_id}/inapp").json["messages"]
    assert served.count("inapp") >= 2 * 31 and served.count("hooks") >= 2 * 31
    with session_scope() as s:  # the fast path never wrote: one delivery per person and campaign
        rows = s.execute(sa.select(Delivery.campaign_id, Delivery.user_id)).all()
        assert len(rows) == len(set(rows))


def test_changes_reach_the_next_pull_at_once(api, client_api, served):
    api.post("/hooks", json={"key": "discount", "type": "number", "default": 5})
    api.post("/hooks", json={"key": "banner", "type": "string", "default": "Welcome"})
    api.put("/users/ann", json={"attributes": {"tier": "basic", "first_name": "Ann"}})
    campaign = launch(api, {**CONFIG, "targets": [{**CONFIG["targets"][0], "control_percent": 0}]})
    assert client_api.get("/users/ann/hooks").json["hooks"]["discount"] == 5
    assert client_api.get("/users/ann/hooks").json["hooks"]["discount"] == 5
    assert served == ["hooks"]
    # A profile change: the first pull after it records the new arm (the view), then fast again.
    api.put("/users/ann", json={"attributes": {"tier": "gold"}})
    assert client_api.get("/users/ann/hooks").json["hooks"]["discount"] in (10, 20)
    # A config change: the app's version moves, the view rebuilds the snapshot.
    api.post(f"/campaigns/{campaign['id']}/pause")
    assert client_api.get("/users/ann/hooks").json["hooks"]["discount"] == 5
    assert client_api.get("/users/ann/hooks").json["hooks"]["discount"] == 5
    assert served[-1] == "hooks" and len(served) >= 2


def test_a_rotated_key_stops_working_at_once(api, client_api, served):
    api.put("/users/ann", json={"country": "FR"})
    assert client_api.get("/users/ann/hooks").status_code == 200
    assert client_api.get("/users/ann/hooks").status_code == 200
    assert served == ["hooks"]
    with session_scope() as s:
        s.get(App, client_api.app_id).rotate_key(KeyKind.CLIENT)
    r = client_api.get("/users/ann/hooks")
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    assert served == ["hooks"]


def test_the_budget_is_shared_and_never_counted_twice(api, client_api, served, monkeypatch):
    monkeypatch.setenv("TIDINGS_CLIENT_RATE_LIMIT", "4 per minute")
    api.put("/users/ann", json={"country": "FR", "attributes": {"tier": "gold"}})
    launch(api, INAPP)
    codes = [client_api.get("/users/ann/hooks").status_code,  # the view (learns the key): 1
             client_api.get("/users/ann/inapp").status_code,  # fast path counts, hands over to record: 2
             client_api.get("/users/ann/inapp").status_code,  # fast: 3
             client_api.get("/users/ann/hooks").status_code]  # fast: 4
    assert codes == [200, 200, 200, 200] and served == ["inapp", "hooks"]
    refused = client_api.get("/users/ann/inapp")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    # One budget for every limited endpoint of the key.
    assert client_api.post("/deliveries/1/interactions", json={"type": "click"}).status_code == 429


def test_a_large_budget_is_counted_a_block_at_a_time(api, client_api, served, monkeypatch):
    """640 a minute: the fast path counts blocks of 10 on Redis. After the view's one request it
    admits 63 blocks (631 in all); the 64th block would pass 640, so the rest are refused: never
    more than the budget, and fewer only by less than a block."""
    monkeypatch.setenv("TIDINGS_CLIENT_RATE_LIMIT", "640 per minute")
    api.put("/users/ann", json={"country": "FR"})
    codes = [client_api.get("/users/ann/hooks").status_code for _ in range(632)]
    assert codes[:631] == [200] * 631 and codes[631] == 429
    assert len(served) == 630
