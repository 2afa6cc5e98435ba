"""What worked for whom: a campaign's funnel, conversions, uplift and significance per target and arm.

The unit is one person in one run (a one-shot campaign: one person). A unit converts when the
campaign's conversion event happens within `window_hours` after that person's send (control:
after the run started). Everything is SQL aggregates; Python only shapes the rows and computes
the statistics (scipy), so a report over a million people costs a few grouped scans.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math

import sqlalchemy as sa
from scipy.stats import chi2_contingency
from sqlalchemy.orm import Session

from campaigns.models import Campaign, CampaignRun, Delivery, DeliveryStatus, Interaction
from segments.models import Event, User
from tidings.db import utcnow

S = DeliveryStatus
d = Delivery.__table__
runs = CampaignRun.__table__
events = Event.__table__
users = User.__table__
interactions = Interaction.__table__


def _within(dialect: str, event_time, start, hours: int):
    """event_time in [start, start + hours], portable between PostgreSQL and SQLite."""
    if dialect == "postgresql":
        return sa.and_(event_time >= start, event_time <= start + sa.func.make_interval(0, 0, 0, 0, hours))
    return sa.and_(sa.func.julianday(event_time) >= sa.func.julianday(start),
                   sa.func.julianday(event_time) <= sa.func.julianday(start) + hours / 24.0)


def _units(campaign: Campaign) -> sa.Subquery:
    """One row per (run, person): their arm, how far their delivery got, and when it started."""
    sent = d.c.status.in_([S.SENT, S.DELIVERED])
    return (
        sa.select(
            d.c.run_id, d.c.user_id, d.c.target_index, d.c.variant, d.c.control,
            sa.func.max(sa.case((sent, 1), else_=0)).label("sent"),
            sa.func.max(sa.case((d.c.status == S.DELIVERED, 1), else_=0)).label("delivered"),
            sa.func.max(sa.case((d.c.status == S.FAILED, 1), else_=0)).label("failed"),
            sa.func.max(sa.case((d.c.status == S.SUPPRESSED, 1), else_=0)).label("suppressed"),
            sa.func.max(sa.case((sa.exists().where(interactions.c.delivery_id == d.c.id,
                                                   interactions.c.type == "impression"), 1), else_=0)).label("impressions"),
            sa.func.max(sa.case((sa.exists().where(interactions.c.delivery_id == d.c.id,
                                                   interactions.c.type == "click"), 1), else_=0)).label("clicks"),
            sa.func.min(sa.case((d.c.control, runs.c.started_at), (sent, d.c.sent_at), else_=None)).label("t0"),
        )
        .join(runs, runs.c.id == d.c.run_id)
        .where(d.c.campaign_id == campaign.id, d.c.target_index.is_not(None), ~d.c.dedupe_key.startswith("test:"))
        .group_by(d.c.run_id, d.c.user_id, d.c.target_index, d.c.variant, d.c.control)
        .subquery("units")
    )


def _counts(session: Session, campaign: Campaign) -> list[sa.Row]:
    u = _units(campaign)
    conversion = campaign.spec.get("conversion")
    if conversion:
        dialect = session.get_bind().dialect.name
        converted = sa.case((sa.and_(u.c.t0.is_not(None), sa.exists().where(
            events.c.user_id == u.c.user_id, events.c.app_id == campaign.app_id,
            events.c.name == conversion["event"],
            _within(dialect, events.c.time, u.c.t0, conversion["window_hours"]))), 1), else_=0)
    else:
        converted = sa.literal(0)
    return session.execute(
        sa.select(u.c.target_index, u.c.control, u.c.variant, sa.func.count().label("users"),
                  sa.func.sum(u.c.sent).label("sent"), sa.func.sum(u.c.delivered).label("delivered"),
                  sa.func.sum(u.c.failed).label("failed"), sa.func.sum(u.c.suppressed).label("suppressed"),
                  sa.func.sum(u.c.impressions).label("impressions"), sa.func.sum(u.c.clicks).label("clicks"),
                  sa.func.sum(converted).label("converted"))
        .group_by(u.c.target_index, u.c.control, u.c.variant)
    ).all()


def rate(converted: int, total: int) -> float | None:
    return round(converted / total, 6) if total else None


def p_value(c1: int, n1: int, c2: int, n2: int) -> float | None:
    """Two-sided two-proportion z-test (pooled), as the 1-dof chi-square test without correction.

    None when it is undefined: an empty arm, or nobody (or everybody) converted in both.
    """
    if not n1 or not n2:
        return None
    table = [[c1, n1 - c1], [c2, n2 - c2]]
    if c1 + c2 == 0 or c1 + c2 == n1 + n2:
        return None
    _, p, _, _ = chi2_contingency(table, correction=False)
    return float(p) if math.isfinite(p) else None


def churn_by_arm(session: Session, campaign: Campaign, inactive_days: int, now: dt.datetime) -> dict:
    """Per target: churn of treated vs control people (seen before, no event in `inactive_days`)."""
    cutoff = now - dt.timedelta(days=inactive_days)
    people = (sa.select(d.c.target_index, d.c.control, d.c.user_id)
              .where(d.c.campaign_id == campaign.id, d.c.target_index.is_not(None),
                     d.c.status != S.SUPPRESSED, ~d.c.dedupe_key.startswith("test:"))
              .distinct().subquery())
    rows = session.execute(
        sa.select(people.c.target_index, people.c.control, sa.func.count(),
                  sa.func.count().filter(users.c.last_seen_at < cutoff),
                  sa.func.count().filter(users.c.last_seen_at >= cutoff))
        .join(users, users.c.id == people.c.user_id)
        .group_by(people.c.target_index, people.c.control)
    ).all()
    out: dict = {}
    for target_index, control, total, churned, active in rows:
        seen = churned + active
        out.setdefault(target_index, {})["control" if control else "treated"] = {
            "users": total, "active": active, "churned": churned, "churn_rate": rate(churned, seen)}
    return out


def report(session: Session, campaign: Campaign, *, inactive_days: int = 30, now: dt.datetime | None = None) -> dict:
    now = now or utcnow()
    rows = _counts(session, campaign)
    by_arm = {(r.target_index, bool(r.control), r.variant): r for r in rows}
    churn = churn_by_arm(session, campaign, inactive_days, now)
    totals = {k: 0 for k in ("audience", "control", "sent", "delivered", "failed", "suppressed", "converted")}
    for r in rows:
        totals["audience"] += r.users
        totals["control"] += r.users if r.control else 0
        for k in ("sent", "delivered", "failed", "suppressed", "converted"):
            totals[k] += int(r._mapping[k] or 0)
    targets = []
    for ti, target in enumerate(campaign.spec["targets"]):
        ctrl = next((r for (t, c, _), r in by_arm.items() if t == ti and c), None)
        c_users, c_conv = (ctrl.users, int(ctrl.converted or 0)) if ctrl else (0, 0)
        c_rate = rate(c_conv, c_users)
        variants = []
        for v in target["variants"]:
            r = by_arm.get((ti, False, v["name"]))
            n = r.users if r else 0
            conv = int(r.converted or 0) if r else 0
            v_rate = rate(conv, n)
            variants.append({
                "name": v["name"], "users": n,
                **{k: int(r._mapping[k] or 0) if r else 0 for k in ("sent", "delivered", "failed", "suppressed",
                                                            "impressions", "clicks")},
                "converted": conv, "conversion_rate": v_rate,
                "uplift": round(v_rate - c_rate, 6) if v_rate is not None and c_rate is not None else None,
                "p_value": p_value(conv, n, c_conv, c_users),
            })
        targets.append({
            "segment": target.get("segment"),
            "control": {"users": c_users, "converted": c_conv, "conversion_rate": c_rate},
            "variants": variants,
            "churn": {"inactive_days": inactive_days, **churn.get(ti, {})},
        })
    return {"campaign_id": campaign.id, "status": campaign.status, "conversion": campaign.spec.get("conversion"),
            "totals": totals, "targets": targets}


CSV_COLUMNS = ["target", "segment", "arm", "users", "sent", "delivered", "failed", "suppressed", "impressions",
               "clicks", "converted", "conversion_rate", "uplift", "p_value"]


def report_csv(data: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for ti, t in enumerate(data["targets"]):
        c = t["control"]
        writer.writerow([ti, t["segment"] or "", "control", c["users"], "", "", "", "", "", "", c["converted"],
                         c["conversion_rate"] if c["conversion_rate"] is not None else "", "", ""])
        for v in t["variants"]:
            writer.writerow([ti, t["segment"] or "", v["name"], *(v[k] if v[k] is not None else "" for k in CSV_COLUMNS[3:])])
    return out.getvalue()
