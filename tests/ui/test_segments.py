"""Segment pages: list with sizes, editor (errors at their position), live count endpoint, roles."""

from __future__ import annotations

import re

import pytest

PEOPLE = [{"external_id": f"p{i}", "country": "FR" if i % 2 else "US", "attributes": {"tier": "gold" if i < 3 else "basic"}}
          for i in range(10)]


@pytest.fixture
def people(ui_api):
    assert ui_api.post("/users/batch", json={"users": PEOPLE}).status_code == 200


def test_the_list_shows_each_segment_with_its_size(marketer, ui_api, people):
    fr = ui_api.post("/segments", json={"name": "French", "query": 'country = "FR"'}).json
    gold = ui_api.post("/segments", json={"name": "Gold", "query": 'attr.tier = "gold"', "description": "top tier"}).json
    page = marketer.text("/segments")
    assert re.search(rf'French</a>.*?data-size-url="/segments/{fr["id"]}/size.json"', page, re.S)
    assert re.search(rf'Gold</a>.*?top tier.*?data-size-url="/segments/{gold["id"]}/size.json"', page, re.S)
    assert marketer.get(f"/segments/{fr['id']}/size.json").json == {"id": fr["id"], "count": 5}
    assert marketer.get(f"/segments/{gold['id']}/size.json").json["count"] == 3


def test_a_marketer_writes_and_saves_a_segment(marketer, people):
    r = marketer.post("/segments/new", {"name": "US gold", "query": 'country = "US" and attr.tier = "gold"',
                                         "description": ""})
    assert r.status_code == 302
    page = marketer.text(r.headers["Location"])
    assert "US gold" in page and 'data-churn="users"' in page
    churn = marketer.get(r.headers["Location"] + "/churn.json").json
    assert churn["users"] == 2 and churn["inactive_days"] == 30
    assert marketer.get(r.headers["Location"] + "/churn.json?inactive_days=0").status_code == 422
    assert "US gold" in marketer.text("/segments")


def test_a_query_error_is_underlined_at_its_position(marketer, people):
    query = 'country = "US" and contry = "FR"'
    r = marketer.post("/segments/new", {"name": "Typo", "query": query})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert f"Error at character {query.index('contry') + 1}:" in page
    assert 'country = &#34;US&#34; and <mark>c</mark>ontry' in page
    assert "Typo" not in marketer.text("/segments")


def test_a_name_taken_is_refused_next_to_the_name(marketer, ui_api):
    ui_api.post("/segments", json={"name": "Taken", "query": "sms_opt_in = true"})
    r = marketer.post("/segments/new", {"name": "Taken", "query": "push_opt_in = true"})
    assert r.status_code == 409 and "already exists" in r.get_data(as_text=True)


def test_editing_keeps_the_segment_and_saves_the_new_query(marketer, ui_api, people):
    seg = ui_api.post("/segments", json={"name": "Fr", "query": 'country = "FR"'}).json
    page = marketer.text(f"/segments/{seg['id']}")
    assert 'country = &#34;FR&#34;</textarea>' in page
    r = marketer.post(f"/segments/{seg['id']}", {"name": "Fr", "query": 'country = "US"', "description": "now US"})
    assert r.status_code == 302
    assert ui_api.get(f"/segments/{seg['id']}").json["query"] == 'country = "US"'


def test_deleting_a_segment_others_use_is_refused(marketer, ui_api):
    base = ui_api.post("/segments", json={"name": "Base", "query": "sms_opt_in = true"}).json
    ui_api.post("/segments", json={"name": "Built", "query": 'segment("Base") and country = "FR"'})
    r = marketer.post(f"/segments/{base['id']}/delete")
    assert r.status_code == 409 and "used by" in r.get_data(as_text=True)
    lone = ui_api.post("/segments", json={"name": "Lone", "query": "sms_opt_in = false"}).json
    assert marketer.post(f"/segments/{lone['id']}/delete").status_code == 302
    assert ui_api.get(f"/segments/{lone['id']}").status_code == 404


def test_the_live_count_answers_count_and_sample(anyone, people):
    r = anyone.post_json("/segments/preview.json", {"query": 'country = "FR"'})
    assert r.status_code == 200
    assert r.json["count"] == 5 and sorted(r.json["sample"]) == ["p1", "p3", "p5", "p7", "p9"]


def test_the_live_count_gives_the_error_position(marketer):
    r = marketer.post_json("/segments/preview.json", {"query": 'country = "US" and'})
    assert r.status_code == 422
    assert r.json["error"]["details"]["position"] == len('country = "US" and')
    r = marketer.post_json("/segments/preview.json", {"query": 'attr.x = '})
    assert r.status_code == 422 and r.json["error"]["details"]["position"] == 9
    assert marketer.post_json("/segments/preview.json", {"nope": 1}).status_code == 422


def test_the_live_count_needs_the_csrf_header_and_a_session(marketer, app):
    r = marketer.client.post("/segments/preview.json", json={"query": "sms_opt_in = true"})
    assert r.status_code == 400 and r.json["error"]["code"] == "csrf"
    r = app.test_client().post("/segments/preview.json", json={"query": "sms_opt_in = true"})
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"


def test_viewers_read_segments_but_cannot_change_them(viewer, ui_api):
    seg = ui_api.post("/segments", json={"name": "Fr", "query": 'country = "FR"'}).json
    page = viewer.text(f"/segments/{seg['id']}")
    assert "Save segment" not in page and "Delete segment" not in page and "fieldset class=\"bare\" disabled" in page
    assert "New segment" not in viewer.text("/segments")
    assert viewer.post("/segments/new", {"name": "x", "query": "sms_opt_in = true"}).status_code == 403
    assert viewer.post(f"/segments/{seg['id']}", {"name": "x", "query": "sms_opt_in = true"}).status_code == 403
    assert viewer.post(f"/segments/{seg['id']}/delete").status_code == 403


def test_the_editor_ships_the_builder_with_the_language_fields(marketer, ui_api):
    ui_api.post("/segments", json={"name": "Gold", "query": 'attr.tier = "gold"'})
    page = marketer.text("/segments/new?query=sms_opt_in%20%3D%20true")
    data = re.search(r'<script type="application/json" id="builder-data">(.*?)</script>', page, re.S).group(1)
    assert '"app_version": "version"' in data and '"segments": ["Gold"]' in data
    assert "sms_opt_in = true</textarea>" in page


def test_another_apps_segment_is_not_found(marketer, other_api, ui_app):
    seg = other_api.post("/segments", json={"name": "Theirs", "query": "sms_opt_in = true"}).json
    marketer.post("/switch-app", {"app_id": str(ui_app[0])})
    assert marketer.get(f"/segments/{seg['id']}").status_code == 404
