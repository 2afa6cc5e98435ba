"""The campaign report on synthetic data with planted effects: exact counts, p-values checked
against an independent two-proportion z computation."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from scipy.stats import norm

from campaigns.models import Campaign, CampaignRun, Delivery, DeliveryStatus, Interaction, RunStatus
from campaigns.reports import report, report_csv
from segments.models import Event, User
from tests.factories import make_app

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
RUN_START = NOW - dt.timedelta(days=5)
SPEC = {
    "audience": None, "conversion": {"event": "purchase", "window_hours": 72},
    "schedule": {"type": "now"}, "local_time": False, "quiet_hours": None,
    "targets": [
        {"segment": 'attr.tier = "gold"', "control_percent": 20,
         "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                      {"name": "B", "weight": 1, "content": {"body": "b"}}]},
        {"segment": None, "control_percent": 20,
         "variants": [{"name": "A", "weight": 1, "content": {"body": "a"}},
                      {"name": "B", "weight": 1, "content": {"body": "b"}}]},
    ],
}
# (target, arm) -> (people, converters in window, converters outside the window)
PLAN = {
    (0, "control"): (200, 20, 5), (0, "A"): (400, 60, 7), (0, "B"): (400, 100, 3),
    (1, "control"): (300, 15, 2), (1, "A"): (600, 33, 4), (1, "B"): (600, 30, 9),
}


def z_test(c1, n1, c2, n2):
    p1, p2, pooled = c1 / n1, c2 / n2, (c1 + c2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 2 * norm.sf(abs(z))


@pytest.fixture
def planted(session):
    app, _, _ = make_app(session)
    campaign = Campaign(app_id=app.id, name="Planted", channel="sms", status="running", spec=SPEC, version=1)
    session.add(campaign)
    session.flush()
    run = CampaignRun(app_id=app.id, campaign_id=campaign.id, scheduled_for=RUN_START, status=RunStatus.SENDING,
                      started_at=RUN_START, updated_at=RUN_START)
    session.add(run)
    session.flush()
    n = 0
    for (target, arm), (people, inside, outside) in PLAN.items():
        for i in range(people):
            n += 1
            seen = NOW - dt.timedelta(days=40 if i % 4 == 0 else 1)  # a quarter churned (30-day window)
            user = User(app_id=app.id, external_id=f"p{n}", attributes={"tier": "gold" if target == 0 else "x"},
                        last_seen_at=seen)
            session.add(user)
            session.flush()
            control = arm == "control"
            sent_at = None if control else RUN_START + dt.timedelta(minutes=i % 60)
            status = DeliveryStatus.CONTROL if control else (
                DeliveryStatus.FAILED if i % 50 == 49 else DeliveryStatus.DELIVERED if i % 2 else DeliveryStatus.SENT)
            delivery = Delivery(app_id=app.id, campaign_id=campaign.id, run_id=run.id, user_id=user.id,
                                dedupe_key=f"run:{run.id}", target_index=target, control=control,
                                variant=None if control else arm, status=status, sent_at=sent_at,
                                send_after=RUN_START)
            session.add(delivery)
            session.flush()
            start = RUN_START if control else sent_at
            if status == DeliveryStatus.FAILED:
                continue
            if i < inside:
                session.add(Event(app_id=app.id, user_id=user.id, name="purchase",
                                  time=start + dt.timedelta(hours=71), properties={}))
                session.add(Event(app_id=app.id, user_id=user.id, name="purchase",  # twice: counted once
                                  time=start + dt.timedelta(hours=1), properties={}))
            elif i < inside + outside:
                when = start - dt.timedelta(hours=1) if i % 2 else start + dt.timedelta(hours=73)
                session.add(Event(app_id=app.id, user_id=user.id, name="purchase", time=when, properties={}))
            if i % 3 == 0:
                session.add(Event(app_id=app.id, user_id=user.id, name="app_open", time=start + dt.timedelta(hours=2),
                                  properties={}))
            if not control and i % 5 == 0:
                session.add(Interaction(app_id=app.id, delivery_id=delivery.id, type="impression"))
                if i % 10 == 0:
                    session.add(Interaction(app_id=app.id, delivery_id=delivery.id, type="click"))
    # A test send is left out of the report.
    session.add(Delivery(app_id=app.id, campaign_id=campaign.id, run_id=run.id, user_id=user.id,
                         dedupe_key="test:abc", target_index=1, variant="A", control=False,
                         status=DeliveryStatus.SENT, sent_at=RUN_START, send_after=RUN_START))
    session.commit()
    return campaign


def expected_failed(people):
    return sum(1 for i in range(people) if i % 50 == 49)


def test_report_counts_are_exact(session, planted):
    data = report(session, planted, now=NOW)
    assert data["totals"]["audience"] == sum(p for p, _, _ in PLAN.values())
    assert data["totals"]["control"] == 500
    for ti, target in enumerate(data["targets"]):
        people, inside, _ = PLAN[(ti, "control")]
        assert target["control"] == {"users": people, "converted": inside, "conversion_rate": round(inside / people, 6)}
        for v in target["variants"]:
            people, inside, _ = PLAN[(ti, v["name"])]
            failed = expected_failed(people)
            assert v["users"] == people
            assert v["failed"] == failed and v["sent"] == people - failed
            assert v["delivered"] == sum(1 for i in range(people) if i % 2 and i % 50 != 49)
            # failed people with i < inside got no events
            converted = sum(1 for i in range(inside) if i % 50 != 49)
            assert v["converted"] == converted
            assert v["impressions"] == sum(1 for i in range(people) if i % 5 == 0 and i % 50 != 49) + \
                sum(1 for i in range(people) if i % 5 == 0 and i % 50 == 49)
            assert v["clicks"] == sum(1 for i in range(people) if i % 10 == 0)


def test_uplift_and_p_values_match_an_independent_z_test(session, planted):
    data = report(session, planted, now=NOW)
    for ti, target in enumerate(data["targets"]):
        c = target["control"]
        for v in target["variants"]:
            expected_p = z_test(v["converted"], v["users"], c["converted"], c["users"])
            assert v["p_value"] == pytest.approx(expected_p, rel=1e-9)
            assert v["uplift"] == pytest.approx(v["converted"] / v["users"] - c["converted"] / c["users"], abs=1e-6)
    gold_b = data["targets"][0]["variants"][1]
    assert gold_b["p_value"] < 0.001  # the planted effect: B works for gold members
    everyone_b = data["targets"][1]["variants"][1]
    assert everyone_b["p_value"] > 0.05  # and not for everyone else


def test_churn_treated_vs_control(session, planted):
    data = report(session, planted, inactive_days=30, now=NOW)
    churn = data["targets"][0]["churn"]
    assert churn["control"]["users"] == 200 and churn["control"]["churned"] == 50
    assert churn["treated"]["users"] == 800 and churn["treated"]["churned"] == 200
    assert churn["treated"]["churn_rate"] == 0.25


def test_csv_has_a_row_per_arm(session, planted):
    text = report_csv(report(session, planted, now=NOW))
    lines = text.strip().splitlines()
    assert lines[0].startswith("target,segment,arm,users")
    assert len(lines) == 1 + 6


def test_report_endpoint(api):
    campaign = api.post("/campaigns", json={"name": "R", "channel": "sms", "conversion": {"event": "buy"},
                                            "targets": [{"variants": [{"name": "A", "content": {"body": "x"}}]}]}).json
    r = api.get(f"/campaigns/{campaign['id']}/report")
    assert r.status_code == 200 and r.json["totals"]["audience"] == 0
    assert r.json["targets"][0]["variants"][0]["p_value"] is None
    r = api.get(f"/campaigns/{campaign['id']}/report?format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert api.get(f"/campaigns/{campaign['id']}/report?inactive_days=0").status_code == 422
