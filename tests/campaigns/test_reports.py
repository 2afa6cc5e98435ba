"""The campaign report on synthetic data with planted effects: exact counts, p-values checked
against an independent two-proportion z computation."""

from __future__ import annotations

import datetime as dt
import math

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# ---- the statement against the definition, on random campaigns -------------------------------

ARMS = [(0, False, "A"), (0, False, "B"), (0, True, None), (1, False, "A"), (1, True, None), (None, False, "A")]
STATUSES = list(DeliveryStatus)
WINDOW = 72


def random_campaign(session, rnd) -> Campaign:
    """A few people with 0-4 deliveries each: several runs, triggered sends sharing a run (units of
    several deliveries), test sends, every status, interactions of every type, conversion events
    inside, outside and on the edges of the windows, and last_seen_at around the churn cutoff."""
    app, _, _ = make_app(session)
    campaign = Campaign(app_id=app.id, name="Random", channel="sms", status="running", spec=SPEC, version=1)
    session.add(campaign)
    session.flush()
    run_list = []
    for k in range(rnd.randint(1, 3)):
        start = RUN_START + dt.timedelta(hours=rnd.randint(0, 48))
        run = CampaignRun(app_id=app.id, campaign_id=campaign.id, scheduled_for=RUN_START + dt.timedelta(days=k),
                          status=RunStatus.SENDING, started_at=start, updated_at=start)
        session.add(run)
        run_list.append(run)
    session.flush()
    for n in range(rnd.randint(1, 14)):
        seen = rnd.choice([None, NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=31), NOW - dt.timedelta(days=2)])
        user = User(app_id=app.id, external_id=f"r{n}", attributes={}, last_seen_at=seen)
        session.add(user)
        session.flush()
        arm = rnd.choice(ARMS)  # a person keeps their arm, mostly
        keys, anchors = set(), []
        for k in range(rnd.choice([0, 1, 1, 1, 2, 3, 4])):
            target, control, variant = arm if rnd.random() < 0.8 else rnd.choice(ARMS)
            run = rnd.choice(run_list)
            status = rnd.choice(STATUSES)
            if control:
                status = rnd.choice([DeliveryStatus.CONTROL, DeliveryStatus.SUPPRESSED])
            sent_at = (run.started_at + dt.timedelta(minutes=rnd.randint(0, 3000))
                       if status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED) else None)
            key = rnd.choice([f"run:{run.id}", f"event:{n}-{k}", f"test:{n}-{k}"])
            if key in keys:  # unique per campaign and person
                continue
            keys.add(key)
            delivery = Delivery(app_id=app.id, campaign_id=campaign.id, run_id=run.id, user_id=user.id,
                                dedupe_key=key, target_index=target, control=control, variant=variant, status=status,
                                sent_at=sent_at, send_after=run.started_at)
            session.add(delivery)
            session.flush()
            anchors += [sent_at] if sent_at else []
            for kind in ("impression", "click", "dismiss"):
                if rnd.random() < 0.3:
                    session.add(Interaction(app_id=app.id, delivery_id=delivery.id, type=kind))
        for _ in range(rnd.randint(0, 3)):  # around a window's start or end, or anywhere
            base = rnd.choice(anchors + [r.started_at for r in run_list])
            when = base + rnd.choice([dt.timedelta(0), dt.timedelta(hours=WINDOW), dt.timedelta(hours=WINDOW, seconds=1),
                                      dt.timedelta(seconds=-1), dt.timedelta(minutes=rnd.randint(0, 6000))])
            session.add(Event(app_id=app.id, user_id=user.id, name=rnd.choice(["purchase", "purchase", "app_open"]),
                              time=when, properties={}))
    session.commit()
    return campaign


def reference(session, campaign: Campaign, cutoff: dt.datetime) -> tuple[dict, dict]:
    """The report's definition, computed in Python from the rows: per arm the units (person, run,
    arm) with any sent/delivered/failed/suppressed delivery or impression/click, and those with a
    conversion event within WINDOW hours of the unit's first send (control: of the run's start);
    per target and side the people reached at least once, by last_seen_at."""
    started = {r.id: r.started_at for r in session.query(CampaignRun).filter_by(campaign_id=campaign.id)}
    seen_by = {}
    for i in session.query(Interaction).join(Delivery, Delivery.id == Interaction.delivery_id).filter(
            Delivery.campaign_id == campaign.id):
        seen_by.setdefault(i.delivery_id, set()).add(i.type)
    units: dict = {}
    for x in session.query(Delivery).filter_by(campaign_id=campaign.id):
        if x.target_index is None or x.dedupe_key.startswith("test:"):
            continue
        u = units.setdefault((x.run_id, x.user_id, x.target_index, x.control, x.variant), {
            "statuses": set(), "seen": set(), "t0": [], "user": x.user_id})
        u["statuses"].add(x.status)
        u["seen"] |= seen_by.get(x.id, set())
        if x.control:
            u["t0"].append(started[x.run_id])
        elif x.status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
            u["t0"].append(x.sent_at)
    buys = {}
    for e in session.query(Event).filter_by(app_id=campaign.app_id, name="purchase"):
        buys.setdefault(e.user_id, []).append(e.time)
    arms: dict = {}
    people: dict = {}
    last_seen = {u.id: u.last_seen_at for u in session.query(User).filter_by(app_id=campaign.app_id)}
    for (_, user_id, target, control, variant), u in units.items():
        a = arms.setdefault((target, control, variant), dict.fromkeys(
            ("users", "sent", "delivered", "failed", "suppressed", "impressions", "clicks", "converted"), 0))
        st_ = u["statuses"]
        t0 = min(u["t0"]) if u["t0"] else None
        a["users"] += 1
        a["sent"] += bool(st_ & {DeliveryStatus.SENT, DeliveryStatus.DELIVERED})
        a["delivered"] += DeliveryStatus.DELIVERED in st_
        a["failed"] += DeliveryStatus.FAILED in st_
        a["suppressed"] += DeliveryStatus.SUPPRESSED in st_
        a["impressions"] += "impression" in u["seen"]
        a["clicks"] += "click" in u["seen"]
        a["converted"] += t0 is not None and any(t0 <= t <= t0 + dt.timedelta(hours=WINDOW)
                                                 for t in buys.get(user_id, []))
        if st_ - {DeliveryStatus.SUPPRESSED}:
            people.setdefault((target, control), set()).add(user_id)
    churn = {}
    for (target, control), who in people.items():
        seen = [last_seen[w] for w in who]
        churn.setdefault(target, {})["control" if control else "treated"] = {
            "users": len(who), "churned": sum(1 for s in seen if s is not None and s < cutoff),
            "active": sum(1 for s in seen if s is not None and s >= cutoff)}
    return arms, churn


def check_against_reference(session, campaign, cuts=None):
    from campaigns.reports import _arms

    cutoff = NOW - dt.timedelta(days=30)
    arms, churn = _arms(session, campaign, 30, NOW, cuts)
    session.rollback()  # the report's SET LOCAL ends with its transaction
    want_arms, want_churn = reference(session, campaign, cutoff)
    assert arms == want_arms
    assert {t: {side: {k: v[k] for k in ("users", "churned", "active")} for side, v in sides.items()}
            for t, sides in churn.items()} == want_churn
    data = report(session, campaign, now=NOW)
    assert data["totals"]["audience"] == sum(a["users"] for a in want_arms.values())


SETTINGS = dict(deadline=None, max_examples=40,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(**SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_report_equals_its_definition_on_postgresql(session, rnd):
    check_against_reference(session, random_campaign(session, rnd))


@settings(**SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_report_is_the_same_however_churn_is_cut(session, rnd):
    """Churn is counted in parts by ranges of user ids: any cuts, inside the people's ids, on
    them, beyond them or repeated, give the definition's answer."""
    campaign = random_campaign(session, rnd)
    ids = sorted(session.scalars(sa.select(User.id).where(User.app_id == campaign.app_id))) or [1]
    cuts = sorted(rnd.choice(ids) + rnd.choice([-1, 0, 0, 1]) for _ in range(rnd.randint(0, 4)))
    check_against_reference(session, campaign, tuple(cuts + rnd.choice([[], [ids[-1] + 10]])))


def test_the_parts_that_read_every_delivery_can_run_side_by_side(session, planted):
    """They must stay free of CTEs, InitPlans and correlated subqueries: one of those in any of
    them and PostgreSQL runs them all one after the other in one process (2 s over 1M people
    instead of 1)."""
    from sqlalchemy.dialects import postgresql

    from campaigns.reports import _postgresql_parts, arms_statement, conversion_bounds, prepare_session, user_cuts

    prepare_session(session)
    # Cheap workers, so the planner parallelises even these few rows, as it does a million.
    session.execute(sa.text("SET LOCAL parallel_setup_cost = 0"))
    session.execute(sa.text("SET LOCAL parallel_tuple_cost = 0"))
    session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 2"))
    cuts = user_cuts(session, planted)
    assert len(cuts) == 1
    bounds = conversion_bounds(session, planted)
    stmt = arms_statement(planted, "postgresql", 30, NOW, cuts, bounds)
    sql = str(stmt.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True}))
    plan = "\n".join(session.connection().exec_driver_sql("EXPLAIN (COSTS OFF) " + sql).scalars())
    session.rollback()
    parallel, _ = _postgresql_parts(planted, NOW, cuts, bounds)
    assert len(parallel) == 5  # status, churn in two, interactions, conversions
    appended = plan.split("Parallel Append", 1)[1].split("\n  ->  ", 1)[0]  # up to the Append's next child
    assert appended.count("\n              ->  ") == len(parallel), plan


@pytest.fixture
def sqlite_session(tmp_path):
    from sqlalchemy.orm import Session

    from tests.segments.test_query_sql import sqlite_engine

    engine = sqlite_engine(tmp_path / "report.db")
    with Session(engine) as s:
        yield s
    engine.dispose()


@settings(**SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_report_equals_its_definition_on_sqlite(sqlite_session, rnd):
    check_against_reference(sqlite_session, random_campaign(sqlite_session, rnd))
