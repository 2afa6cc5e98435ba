"""Campaign pages: list by status, the editor's save and preview endpoints (field errors by path),
lifecycle actions with roles, the campaign page, progress, results and CSV."""

from __future__ import annotations

import re

import pytest

PEOPLE = [{"external_id": f"u{i}", "phone": f"+1415555{i:04d}", "sms_opt_in": True,
           "attributes": {"first_name": f"N{i}", "tier": "gold" if i % 4 == 0 else "basic"}} for i in range(40)]


def sms(**overrides):
    body = {"name": "Spring sale", "channel": "sms", "audience": "sms_opt_in = true",
            "targets": [{"segment": 'attr.tier = "gold"', "control_percent": 0,
                         "variants": [{"name": "G", "weight": 1, "content": {"body": "Gold {{ user.first_name }}"}}]},
                        {"segment": None, "control_percent": 20,
                         "variants": [{"name": "A", "weight": 50, "content": {"body": "Hi {{ user.first_name }}"}},
                                      {"name": "B", "weight": 50, "content": {"body": "Hello!"}}]}],
            "conversion": {"event": "purchase", "window_hours": 72}, "quiet_hours": None}
    body.update(overrides)
    return body


@pytest.fixture
def people(ui_api):
    assert ui_api.post("/users/batch", json={"users": PEOPLE}).status_code == 200


def test_the_list_filters_by_status(marketer, ui_api):
    draft = ui_api.post("/campaigns", json=sms(name="Draft one")).json
    other = ui_api.post("/campaigns", json=sms(name="Cancelled one")).json
    ui_api.post(f"/campaigns/{other['id']}/cancel")
    page = marketer.text("/campaigns")
    assert "Draft one" in page and "Cancelled one" in page and "All (2)" in page
    page = marketer.text("/campaigns?status=draft")
    assert "Draft one" in page and "Cancelled one" not in page and 'aria-current="page">Draft (1)' in page
    assert marketer.get("/campaigns?status=bogus").status_code == 404
    assert f'/campaigns/{draft["id"]}"' in page


def test_the_editor_opens_for_marketers_only(marketer, viewer, ui_api):
    ui_api.post("/hooks", json={"key": "banner_color", "type": "string", "default": "blue"})
    page = marketer.text("/campaigns/new?channel=config")
    data = re.search(r'id="campaign-extras">(.*?)</script>', page, re.S).group(1)
    assert '"key": "banner_color"' in data
    assert '"channel": "config"' in page
    assert viewer.get("/campaigns/new").status_code == 403
    assert "New campaign" not in viewer.text("/campaigns")


def test_saving_creates_then_updates_through_the_service(marketer, ui_api):
    r = marketer.post_json("/campaigns/save.json", {"campaign": sms()})
    assert r.status_code == 200, r.json
    cid = r.json["id"]
    assert r.json["url"] == f"/campaigns/{cid}"
    assert ui_api.get(f"/campaigns/{cid}").json["status"] == "draft"
    changed = sms(name="Spring sale v2", frequency_cap={"max": 2, "per_hours": 24}, rate_limit_per_second=5)
    r = marketer.post_json("/campaigns/save.json", {"id": cid, "campaign": changed})
    assert r.status_code == 200
    saved = ui_api.get(f"/campaigns/{cid}").json
    assert saved["name"] == "Spring sale v2" and saved["frequency_cap"] == {"max": 2, "per_hours": 24}
    page = marketer.text(f"/campaigns/{cid}/edit")
    assert '"rate_limit_per_second": 5' in page


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b["targets"][1]["variants"][1]["content"].pop("body"), "targets.1.variants.1.content.body"),
    (lambda b: b["targets"][1]["variants"][0]["content"].update(body="Hi {{ user.first_name "),
     "targets.1.variants.0.content.body"),
    (lambda b: b.update(audience='sms_opt_in = tru'), "audience"),
    (lambda b: b["targets"][0].update(segment="attr.tier = "), "targets.0.segment"),
    (lambda b: b["targets"][1].update(control_percent=120), "targets.1.control_percent"),
    (lambda b: b.update(schedule={"type": "recurring", "cron": "every monday"}), "schedule.cron"),
    (lambda b: b.update(quiet_hours={"start": "9pm", "end": "08:00"}), "quiet_hours.start"),
])
def test_an_invalid_campaign_names_the_field_to_fix(marketer, change, field):
    body = sms()
    change(body)
    r = marketer.post_json("/campaigns/save.json", {"campaign": body})
    assert r.status_code == 422, r.json
    assert r.json["error"]["details"]["field"] == field
    assert r.json["error"]["message"]


def test_a_query_error_in_the_audience_carries_its_position(marketer):
    r = marketer.post_json("/campaigns/save.json", {"campaign": sms(audience='country = "US" and')})
    assert r.status_code == 422
    assert r.json["error"]["details"] == {"field": "audience", "position": len('country = "US" and')}


def test_saving_needs_a_marketer_and_the_csrf_header(viewer, marketer):
    assert viewer.post_json("/campaigns/save.json", {"campaign": sms()}).status_code == 403
    r = marketer.client.post("/campaigns/save.json", json={"campaign": sms()})
    assert r.status_code == 400 and r.json["error"]["code"] == "csrf"


def test_the_live_preview_renders_the_unsaved_campaign_for_a_user(marketer, people):
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(), "user": "u4"})
    assert r.status_code == 200, r.json
    assert r.json == {"target": 0, "variant": "G", "control": False, "content": {"body": "Gold N4"}, "channel": "sms"}
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(), "user": "u5", "variant": "1:B"})
    assert r.json["content"] == {"body": "Hello!"} and r.json["forced"] is True
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(), "user": "nobody"})
    assert r.status_code == 404
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(audience="sms_opt_in = false"), "user": "u5"})
    assert r.json["target"] is None and r.json["content"] is None
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(name=""), "user": "u5"})
    assert r.status_code == 200  # an unnamed draft previews all the same
    r = marketer.post_json("/campaigns/preview.json", {"campaign": sms(rate_limit_per_second=0), "user": "u5"})
    assert r.status_code == 422 and r.json["error"]["details"]["field"] == "rate_limit_per_second"


def test_the_preview_of_a_saved_campaign_matches_the_api(marketer, viewer, ui_api, people):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    for i in range(8):
        expected = ui_api.post(f"/campaigns/{cid}/preview", json={"user": f"u{i}"}).json
        got = viewer.post_json("/campaigns/preview.json", {"id": cid, "user": f"u{i}"}).json
        got.pop("channel")
        assert got == expected
    # Viewers may preview saved campaigns but not unsaved definitions.
    assert viewer.post_json("/campaigns/preview.json", {"campaign": sms(), "user": "u1"}).status_code == 403


def test_inapp_preview_keeps_sanitised_html(marketer, ui_api):
    ui_api.put("/users/x1", json={"attributes": {"first_name": "Ana"}})
    body = {"name": "Welcome", "channel": "inapp", "targets": [{"variants": [{"name": "A", "content": {
        "layout": "modal", "title": "Hi {{ user.first_name }}", "html": "<p onclick='x()'>Hi</p><script>alert(1)</script>"}}]}]}
    r = marketer.post_json("/campaigns/preview.json", {"campaign": body, "user": "x1"})
    assert r.status_code == 200, r.json
    assert r.json["content"]["title"] == "Hi Ana"
    assert "script" not in r.json["content"]["html"] and "onclick" not in r.json["content"]["html"]


def test_launching_an_sms_campaign_without_a_provider_is_refused_plainly(marketer, ui_api):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    r = marketer.post(f"/campaigns/{cid}/launch")
    assert r.status_code == 409 and "SMS is not configured" in r.get_data(as_text=True)


def test_launch_pause_resume_cancel_from_the_campaign_page(marketer, ui_api, people, sms_ready, run_jobs):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    page = marketer.text(f"/campaigns/{cid}")
    assert f'action="/campaigns/{cid}/launch"' in page and "data-confirm=" in page
    r = marketer.post(f"/campaigns/{cid}/launch")
    assert r.status_code == 302
    assert "Launched" in marketer.text(f"/campaigns/{cid}")
    assert ui_api.get(f"/campaigns/{cid}").json["status"] == "running"
    assert marketer.post(f"/campaigns/{cid}/pause").status_code == 302
    assert ui_api.get(f"/campaigns/{cid}").json["status"] == "paused"
    run_jobs()  # paused: the fan-out does nothing yet
    assert not sms_ready.messages
    assert marketer.post(f"/campaigns/{cid}/resume").status_code == 302
    run_jobs()  # resume queued the fan-out again
    counts = marketer.get(f"/campaigns/{cid}/progress.json").json["counts"]
    assert counts["sent"] == len(sms_ready.messages) and counts["sent"] + counts["control"] == 40
    assert 0 < counts["control"] < 15  # about 20% of the 30 non-gold people
    assert marketer.post(f"/campaigns/{cid}/launch").status_code == 409
    assert marketer.post(f"/campaigns/{cid}/cancel").status_code == 302
    assert ui_api.get(f"/campaigns/{cid}").json["status"] == "cancelled"
    page = marketer.text(f"/campaigns/{cid}")
    assert f'/campaigns/{cid}/pause"' not in page and "Edit</a>" not in page


def test_viewers_see_the_campaign_but_no_buttons_and_are_refused(viewer, ui_api):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    page = viewer.text(f"/campaigns/{cid}")
    assert "Spring sale" in page and "/launch" not in page and "Edit</a>" not in page
    for action in ("launch", "pause", "resume", "cancel"):
        assert viewer.post(f"/campaigns/{cid}/{action}").status_code == 403
    assert viewer.get(f"/campaigns/{cid}/edit").status_code == 403


def test_the_results_show_progress_funnel_and_plain_verdicts(marketer, ui_api, people, sms_ready, run_jobs):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    marketer.post(f"/campaigns/{cid}/launch")
    progress = marketer.get(f"/campaigns/{cid}/progress.json").json
    assert progress["status"] == "running" and progress["fanning_out"] is True
    run_jobs()
    progress = marketer.get(f"/campaigns/{cid}/progress.json").json
    assert progress["total"] == 40 and progress["done"] == 40 and progress["counts"]["sent"] == len(sms_ready.messages)
    # Every gold person converts, so G's rate is 100% and some sentence says so plainly.
    ui_api.post("/events", json={"events": [{"user": f"u{i}", "name": "purchase"} for i in range(0, 40, 4)]})
    page = marketer.text(f"/campaigns/{cid}")
    assert re.search(r'<progress id="send-progress" max="40" value="40">', page)
    assert "Target 1: attr.tier = &#34;gold&#34;" in page and "Target 2: everyone else" in page
    assert re.search(r"No clear difference yet between [AB] and [AB] for everyone else", page)
    assert 'data-chart="rate-1"' in page and "vendor/chart.umd.min.js" in page
    part = marketer.text(f"/campaigns/{cid}/results")
    assert "<html" not in part and "Funnel" in part


def test_the_csv_download_is_the_report(marketer, ui_api):
    cid = ui_api.post("/campaigns", json=sms()).json["id"]
    r = marketer.get(f"/campaigns/{cid}/report.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == f'attachment; filename="campaign-{cid}-report.csv"'
    lines = r.get_data(as_text=True).splitlines()
    assert lines[0].startswith("target,segment,arm,users") and len(lines) == 1 + 2 + 3


def test_verdicts_say_who_beats_whom_with_the_p_value():
    from tidings.ui.campaign_views import verdicts

    target = {"segment": 'segment("Gold users")', "control": {"users": 1000, "converted": 50, "conversion_rate": 0.05},
              "variants": [
                  {"name": "A", "users": 1000, "converted": 72, "conversion_rate": 0.072, "uplift": 0.022, "p_value": 0.3},
                  {"name": "B", "users": 1000, "converted": 100, "conversion_rate": 0.10, "uplift": 0.05, "p_value": 0.00002},
              ]}
    texts = [v["text"] for v in verdicts(target)]
    assert texts[0] == "B beats A for Gold users, p = 0.026 (+2.8 points)."
    assert "No clear difference yet between A and control for Gold users (p = 0.300, +2.2 points)." in texts
    assert "B beats control for Gold users, p < 0.001 (+5.0 points)." in texts
