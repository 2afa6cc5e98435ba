"""Campaign delivery end to end: API -> fan-out job -> send jobs (real RQ worker) -> real twilio and
firebase-admin clients -> local fakes; and the scheduler's sweeps."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from campaigns.models import CampaignRun, Delivery, DeliveryStatus, RunStatus
from scheduler import runner
from segments.models import Device
from tidings.db import session_scope


def sms_campaign(**overrides):
    body = {
        "name": "Spring sale", "channel": "sms", "audience": "sms_opt_in = true",
        "targets": [
            {"segment": 'attr.tier = "gold"', "control_percent": 0,
             "variants": [{"name": "G", "weight": 1, "content": {"body": "Gold {{ user.first_name }}"}}]},
            {"segment": None, "control_percent": 20,
             "variants": [{"name": "A", "weight": 50, "content": {"body": "Hi {{ user.first_name | default('there') }}"}},
                          {"name": "B", "weight": 50, "content": {"body": "Hello!"}}]},
        ],
        "quiet_hours": None,
    }
    body.update(overrides)
    return body


def add_users(api, n, **fields):
    users = []
    for i in range(n):
        u = {"external_id": f"u{i}", "phone": f"+1415555{i:04d}", "sms_opt_in": True,
             "attributes": {"first_name": f"N{i}", "tier": "gold" if i % 10 == 0 else "basic"}}
        u.update(fields)
        users.append(u)
    for start in range(0, n, 1000):
        assert api.post("/users/batch", json={"users": users[start:start + 1000]}).status_code == 200
    return users


def travel(monkeypatch, to: dt.datetime) -> None:
    """Time travel for the send job (the scheduler's tick takes `now` directly)."""
    from scheduler import send

    monkeypatch.setattr(send, "utcnow", lambda: to)


def statuses(campaign_id):
    with session_scope() as s:
        return Counter(s.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))


def test_sms_campaign_reaches_each_eligible_user_once_with_their_variant(api, run_jobs, fake_twilio):
    add_users(api, 300)
    api.put("/users/nophone", json={"attributes": {"tier": "gold"}})
    api.post("/users/batch", json={"users": [{"external_id": "out", "phone": "+14155559999", "sms_opt_in": False}]})
    campaign = api.post("/campaigns", json=sms_campaign()).json
    r = api.post(f"/campaigns/{campaign['id']}/launch")
    assert r.status_code == 200 and r.json["status"] == "running"
    run_jobs()
    sent = fake_twilio.messages
    to = Counter(m.to for m in sent)
    assert len(sent) == len(to)  # once each
    counts = statuses(campaign["id"])
    assert counts[DeliveryStatus.SENT] == len(sent)
    assert counts[DeliveryStatus.SENT] + counts[DeliveryStatus.CONTROL] == 300
    assert 30 <= counts[DeliveryStatus.CONTROL] <= 80  # 20% of the 270 non-gold users
    for m in sent:
        i = int(m.to[-4:])
        expected = {"Gold N%d" % i, "Hi N%d" % i, "Hello!"} if i % 10 else {"Gold N%d" % i}
        assert m.body in expected
        assert m.status_callback.startswith("http://tidings.test/webhooks/twilio/status?d=")
    # Preview agrees with what was sent.
    m = sent[0]
    preview = api.post(f"/campaigns/{campaign['id']}/preview", json={"user": f"u{int(m.to[-4:])}"}).json
    assert preview["content"] == {"body": m.body}
    runner.tick()
    assert api.get(f"/campaigns/{campaign['id']}").json["status"] == "finished"


def test_suppressed_sends_are_recorded_with_their_reason(api, run_jobs, fake_twilio):
    api.post("/users/batch", json={"users": [
        {"external_id": "a", "sms_opt_in": True},
        {"external_id": "b", "phone": "+14155550100", "sms_opt_in": True},
    ]})
    campaign = api.post("/campaigns", json=sms_campaign(audience=None, targets=[
        {"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    run_jobs()
    with session_scope() as s:
        reasons = dict(s.execute(sa.select(Delivery.user_id, Delivery.reason)
                                 .where(Delivery.status == DeliveryStatus.SUPPRESSED)).all())
    assert sorted(reasons.values()) == ["no_phone"]
    assert [m.to for m in fake_twilio.messages] == ["+14155550100"]


def test_permanent_error_fails_and_transient_error_retries(api, run_jobs, fake_twilio, monkeypatch):
    add_users(api, 3)
    fake_twilio.fault_for("+14155550001", code=21211)
    fake_twilio.fault_next(1, status=503)
    campaign = api.post("/campaigns", json=sms_campaign(audience=None, targets=[
        {"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    run_jobs()
    with session_scope() as s:
        rows = {r.user_id: r for r in s.scalars(sa.select(Delivery))}
    failed = [r for r in rows.values() if r.status == DeliveryStatus.FAILED]
    retry = [r for r in rows.values() if r.status == DeliveryStatus.PENDING]
    assert len(failed) == 1 and failed[0].reason == "invalid_number"
    assert len(retry) == 1 and retry[0].send_after > dt.datetime.now(dt.UTC)
    # When the backoff has passed, the sweep batches it again and it goes out.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    travel(monkeypatch, later)
    runner.tick(later)
    run_jobs()
    assert statuses(campaign["id"])[DeliveryStatus.SENT] == 2
    assert len(fake_twilio.messages) == 2


def zone_at_local_hour(hour: int) -> str:
    """Some IANA zone where it is `hour` o'clock now (offsets span -12..+14, so one always is)."""
    import zoneinfo

    now = dt.datetime.now(dt.UTC)
    for name in sorted(zoneinfo.available_timezones()):
        if name.startswith(("Etc/", "posix", "right")):
            continue
        if now.astimezone(ZoneInfo(name)).hour == hour:
            return name
    raise AssertionError(f"no zone at {hour}h")


def test_quiet_hours_delay_and_do_not_drop(api, run_jobs, fake_twilio, monkeypatch):
    night, day = zone_at_local_hour(23), zone_at_local_hour(12)
    api.post("/users/batch", json={"users": [
        {"external_id": "night", "phone": "+14155550101", "sms_opt_in": True, "timezone": night},
        {"external_id": "day", "phone": "+14155550102", "sms_opt_in": True, "timezone": day},
    ]})
    body = sms_campaign(audience=None, targets=[{"variants": [{"name": "A", "content": {"body": "x"}}]}])
    del body["quiet_hours"]  # SMS default: 21:00-08:00 local
    campaign = api.post("/campaigns", json=body).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    run_jobs()
    assert [m.to for m in fake_twilio.messages] == ["+14155550102"]
    with session_scope() as s:
        waiting = s.scalar(sa.select(Delivery).where(Delivery.status == DeliveryStatus.PENDING))
    local_send = waiting.send_after.astimezone(ZoneInfo(night))
    assert (local_send.hour, local_send.minute) == (8, 0)
    morning = waiting.send_after + dt.timedelta(seconds=1)
    travel(monkeypatch, morning)
    runner.tick(morning)
    run_jobs()
    assert sorted(m.to for m in fake_twilio.messages) == ["+14155550101", "+14155550102"]


def test_frequency_cap_holds_across_campaigns(api, run_jobs, fake_twilio):
    add_users(api, 2)
    ids = []
    for i in range(3):
        c = api.post("/campaigns", json=sms_campaign(
            name=f"c{i}", audience=None, frequency_cap={"max": 2, "per_hours": 24},
            targets=[{"variants": [{"name": "A", "content": {"body": f"msg {i}"}}]}])).json
        api.post(f"/campaigns/{c['id']}/launch")
        run_jobs()
        ids.append(c["id"])
    assert Counter(m.to for m in fake_twilio.messages) == {"+14155550000": 2, "+14155550001": 2}
    assert statuses(ids[2]) == {DeliveryStatus.SUPPRESSED: 2}


def test_push_campaign_one_message_per_token_and_dead_tokens_are_deactivated(api, run_jobs, fake_fcm):
    api.post("/users/batch", json={"users": [
        {"external_id": "p1", "devices": [{"id": "d1", "platform": "ios", "push_token": "tok-1"},
                                          {"id": "d2", "platform": "android", "push_token": "tok-2"}]},
        {"external_id": "p2", "devices": [{"id": "d3", "platform": "ios", "push_token": "tok-dead"}]},
        {"external_id": "p3", "push_opt_in": False, "devices": [{"id": "d4", "push_token": "tok-4"}]},
    ]})
    fake_fcm.fault_for("tok-dead", code="UNREGISTERED")
    campaign = api.post("/campaigns", json={
        "name": "Push", "channel": "push",
        "targets": [{"variants": [{"name": "A", "content": {"title": "Hi {{ user.id }}", "body": "b",
                                                             "data": {"screen": "sale"}}}]}]}).json
    assert api.post(f"/campaigns/{campaign['id']}/launch").status_code == 200
    run_jobs()
    tokens = sorted(m.token for m in fake_fcm.messages)
    assert tokens == ["tok-1", "tok-2"]
    for m in fake_fcm.messages:
        assert m.notification["title"] == "Hi p1" and m.data["screen"] == "sale" and m.data["delivery_id"]
    counts = statuses(campaign["id"])
    assert counts == {DeliveryStatus.SENT: 1, DeliveryStatus.FAILED: 1, DeliveryStatus.SUPPRESSED: 1}
    with session_scope() as s:
        assert s.scalar(sa.select(Device.push_token_valid).where(Device.device_id == "d3")) is False


def test_two_schedulers_start_a_once_campaign_exactly_once(api, run_jobs, fake_twilio):
    add_users(api, 5)
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat()
    campaign = api.post("/campaigns", json=sms_campaign(
        audience=None, schedule={"type": "once", "at": at},
        targets=[{"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
    assert api.post(f"/campaigns/{campaign['id']}/launch").json["status"] == "scheduled"
    assert runner.tick()["runs_started"] == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11)
    import threading

    results = []
    threads = [threading.Thread(target=lambda: results.append(runner.start_due_runs(later))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1]
    run_jobs()
    assert len(fake_twilio.messages) == 5
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(CampaignRun)) == 1


def test_recurring_campaign_runs_each_occurrence(api, run_jobs, fake_twilio):
    add_users(api, 2)
    campaign = api.post("/campaigns", json=sms_campaign(
        audience=None, schedule={"type": "recurring", "cron": "0 10 * * *"},
        targets=[{"variants": [{"name": "A", "content": {"body": "daily"}}]}])).json
    launched = api.post(f"/campaigns/{campaign['id']}/launch").json
    first = dt.datetime.fromisoformat(launched["next_run_at"])
    assert (first.hour, first.minute) == (10, 0)
    runner.tick(first + dt.timedelta(seconds=1))
    run_jobs()
    runner.tick(first + dt.timedelta(days=1, seconds=1))
    run_jobs()
    assert len(fake_twilio.messages) == 4
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(CampaignRun)) == 2


def test_triggered_campaign_sends_after_the_delay_to_matching_users(api, run_jobs, fake_twilio, monkeypatch):
    add_users(api, 2)
    campaign = api.post("/campaigns", json=sms_campaign(
        audience='attr.tier = "gold"', schedule={"type": "triggered", "event": "cart_abandoned", "delay_minutes": 30},
        targets=[{"variants": [{"name": "A", "content": {"body": "Come back {{ user.first_name }}"}}]}])).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    api.post("/events", json={"events": [{"user": "u0", "name": "cart_abandoned", "id": "e1"},
                                         {"user": "u1", "name": "cart_abandoned", "id": "e2"},
                                         {"user": "u0", "name": "cart_abandoned", "id": "e1"}]})
    runner.tick()
    run_jobs()
    assert fake_twilio.messages == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=31)
    travel(monkeypatch, later)
    runner.tick(later)
    run_jobs()
    assert [(m.to, m.body) for m in fake_twilio.messages] == [("+14155550000", "Come back N0")]


def test_paused_campaign_sends_nothing_until_resumed(api, run_jobs, fake_twilio):
    add_users(api, 3)
    campaign = api.post("/campaigns", json=sms_campaign(
        audience=None, targets=[{"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    assert api.post(f"/campaigns/{campaign['id']}/pause").json["status"] == "paused"
    run_jobs()
    assert fake_twilio.messages == []
    assert api.post(f"/campaigns/{campaign['id']}/resume").json["status"] == "running"
    run_jobs()
    assert len(fake_twilio.messages) == 3


def test_cancel_suppresses_what_was_not_sent(api, run_jobs, fake_twilio):
    add_users(api, 3)
    campaign = api.post("/campaigns", json=sms_campaign(
        audience=None, targets=[{"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
    api.post(f"/campaigns/{campaign['id']}/launch")
    api.post(f"/campaigns/{campaign['id']}/pause")
    run_jobs()
    assert api.post(f"/campaigns/{campaign['id']}/cancel").json["status"] == "cancelled"
    run_jobs()
    assert fake_twilio.messages == []
    with session_scope() as s:
        run = s.scalar(sa.select(CampaignRun))
        assert run.status in (RunStatus.CANCELLED,)


def test_test_send_reaches_one_user_even_from_a_draft(api, fake_twilio):
    add_users(api, 2)
    campaign = api.post("/campaigns", json=sms_campaign(audience="attr.tier = \"nobody\"")).json
    r = api.post(f"/campaigns/{campaign['id']}/test", json={"user": "u1", "variant": "B"})
    assert r.status_code == 200 and r.json["status"] == "sent" and r.json["content"] == {"body": "Hello!"}
    assert [(m.to, m.body) for m in fake_twilio.messages] == [("+14155550001", "Hello!")]
    assert api.get(f"/campaigns/{campaign['id']}").json["status"] == "draft"
    assert api.post(f"/campaigns/{campaign['id']}/test", json={"user": "u1", "variant": "Z"}).status_code == 422


def test_unsubscribed_recipient_is_opted_out_and_not_tried_again(api, run_jobs, fake_twilio):
    add_users(api, 2)
    fake_twilio.fault_for("+14155550001", code=21610)
    for i in range(2):
        c = api.post("/campaigns", json=sms_campaign(
            name=f"c{i}", audience=None, targets=[{"variants": [{"name": "A", "content": {"body": "x"}}]}])).json
        api.post(f"/campaigns/{c['id']}/launch")
        run_jobs()
    tried = [m for m in fake_twilio.requests if m.to == "+14155550001"]
    assert len(tried) == 1  # the second campaign suppressed it
    assert api.get("/users/u1").json["sms_opt_in"] is False
    with session_scope() as s:
        assert s.scalar(sa.select(Delivery.reason).where(Delivery.campaign_id == c["id"],
                                                          Delivery.status == DeliveryStatus.SUPPRESSED)) in (
            "opted_out", "not_opted_in")
