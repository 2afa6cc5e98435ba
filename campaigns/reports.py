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

SENT = (S.SENT, S.DELIVERED)
ARM_COUNTS = ("users", "sent", "delivered", "failed", "suppressed", "impressions", "clicks", "converted")
# Every part of the report's statement returns rows of this shape (unused places NULL):
# (part, target_index, control, variant, key, n1, ..., n8); see `_fold` for what each part means.
ROW_NUMBERS = len(ARM_COUNTS)


def _within(dialect: str, event_time, start, hours: int):
    """event_time in [start, start + hours], portable between PostgreSQL and SQLite."""
    if dialect == "postgresql":
        return sa.and_(event_time >= start, event_time <= start + sa.func.make_interval(0, 0, 0, 0, hours))
    return sa.and_(sa.func.julianday(event_time) >= sa.func.julianday(start),
                   sa.func.julianday(event_time) <= sa.func.julianday(start) + hours / 24.0)


def _any(condition) -> sa.ColumnElement[int]:
    """1 when the condition holds for any row of the group, else 0 (NULL counts as false)."""
    return sa.func.max(sa.case((condition, 1), else_=0))


def _row(part: str, target_index, control, variant=None, key=None, *numbers) -> list:
    """The columns of one part's select, padded to the common shape."""
    # Typed NULLs: PostgreSQL resolves a UNION's column types pair by pair, and two untyped
    # NULLs make text, which then clashes with a count.
    numbers = list(numbers) + [sa.cast(sa.null(), sa.BigInteger)] * (ROW_NUMBERS - len(numbers))
    text = sa.cast(sa.null(), sa.String)
    return [sa.literal_column(f"'{part}'").label("part"), target_index, control,
            variant if variant is not None else text, key if key is not None else text, *numbers]


def _reported(campaign: Campaign) -> list:
    """The deliveries a report counts: the campaign's, with an arm, and no test sends."""
    return [d.c.campaign_id == campaign.id, d.c.target_index.is_not(None), ~d.c.dedupe_key.startswith("test:")]


def _t0():
    """When a delivery's conversion window starts: the run's start for control, the send otherwise."""
    return sa.case((d.c.control, runs.c.started_at), (d.c.status.in_(SENT), d.c.sent_at), else_=None)


def _unit_parts(campaign: Campaign, dialect: str, cutoff: dt.datetime, only=None) -> list[sa.Select]:
    """The report by its definition: deliveries grouped into units (one person in one run and
    arm), each unit's conversion looked up on its own, people counted once per target and side
    for churn. Used for everything on SQLite and, on PostgreSQL, for the few people whose units
    hold more than one delivery (`only`: a filter on d.c.user_id).

    Interactions are joined as rows: a delivery has at most one row per type, and every column
    here is an "any" or a min, so the extra rows change nothing.
    """
    seen = interactions.c.type
    keys = (d.c.user_id, d.c.target_index, d.c.control, d.c.run_id, d.c.variant)
    where = _reported(campaign) + ([only] if only is not None else [])
    u = (
        sa.select(
            *keys,
            _any(d.c.status.in_(SENT)).label("sent"),
            _any(d.c.status == S.DELIVERED).label("delivered"),
            _any(d.c.status == S.FAILED).label("failed"),
            _any(d.c.status == S.SUPPRESSED).label("suppressed"),
            _any(d.c.status != S.SUPPRESSED).label("reached"),
            _any(seen == "impression").label("impressions"),
            _any(seen == "click").label("clicks"),
            sa.func.min(_t0()).label("t0"),
        )
        .select_from(d.join(runs, runs.c.id == d.c.run_id)
                     .outerjoin(interactions, sa.and_(interactions.c.delivery_id == d.c.id,
                                                      interactions.c.type.in_(["impression", "click"]))))
        .where(*where)
        .group_by(*keys)
        .cte("units")
        .prefix_with("MATERIALIZED")  # read twice below; never inlined into each reader
    )
    conversion = campaign.spec.get("conversion")
    if conversion:
        converted = sa.case((sa.and_(u.c.t0.is_not(None), sa.exists().where(
            events.c.user_id == u.c.user_id, events.c.app_id == campaign.app_id, events.c.name == conversion["event"],
            _within(dialect, events.c.time, u.c.t0, conversion["window_hours"]))), 1), else_=0)
    else:
        converted = sa.literal(0)
    arm = (u.c.target_index, u.c.control, u.c.variant)
    funnel = sa.select(*_row("funnel", *arm, None, sa.func.count(),
                             *(sa.func.sum(u.c[k]) for k in ARM_COUNTS[1:-1]), sa.func.sum(converted))
                       ).group_by(*arm)
    people = (sa.select(u.c.target_index, u.c.control, u.c.user_id).where(u.c.reached == 1)
              .distinct().subquery("people"))
    churn = (sa.select(*_row("churn", people.c.target_index, people.c.control, None, None, sa.func.count(),
                             sa.func.count().filter(users.c.last_seen_at < cutoff),
                             sa.func.count().filter(users.c.last_seen_at >= cutoff)))
             .select_from(people.join(users, users.c.id == people.c.user_id))
             .group_by(people.c.target_index, people.c.control))
    return [funnel, churn]


def _postgresql_parts(campaign: Campaign, cutoff: dt.datetime) -> list[sa.Select]:
    """The report without grouping a million deliveries into a million units.

    Nearly always a unit is one delivery: a run writes one row per person, and only triggered
    sends put several into one run. `multi` finds the people for whom that is not so (grouping
    the campaign's deliveries along ix_deliveries_report, in index order: no hash, no sort); they
    go through `_unit_parts`. Everyone else is counted per delivery, each part over only the
    rows it needs and each an index-only scan of ix_deliveries_report:

    - status: deliveries per arm and status;
    - churn: people per target and side (grouped along the index, so someone in several runs
      counts once) merged with users in id order for last_seen_at;
    - interaction: interactions per arm and type (a delivery has at most one per type);
    - converted: deliveries whose window holds a conversion event. Only people with such an event
      between the earliest and the latest window of the campaign are looked at (a range of
      ix_events_app_name_time_user), and for them the window is checked delivery by delivery.
    """
    # Only people with a delivery not keyed `run:<its run>` can have a unit of several: a run
    # writes one such row per person (unique per campaign, person and key), so a second delivery
    # in the same run is a triggered (`event:`) one. Scheduled campaigns have none to group.
    maybe = sa.select(d.c.user_id).where(*_reported(campaign), ~d.c.dedupe_key.startswith("run:"))
    multi = (sa.select(d.c.user_id).where(*_reported(campaign), d.c.user_id.in_(maybe))
             .group_by(d.c.user_id, d.c.target_index, d.c.control, d.c.run_id, d.c.variant)
             .having(sa.func.count() > 1)
             .cte("multi").prefix_with("MATERIALIZED"))
    single = ~sa.exists().where(multi.c.user_id == d.c.user_id)
    where = [*_reported(campaign), single]
    arm = (d.c.target_index, d.c.control, d.c.variant)

    status = sa.select(*_row("status", *arm, d.c.status, sa.func.count())).where(*where).group_by(*arm, d.c.status)
    people = (sa.select(d.c.user_id, d.c.target_index, d.c.control).where(*where, d.c.status != S.SUPPRESSED)
              .group_by(d.c.user_id, d.c.target_index, d.c.control).subquery("people"))
    churn = (sa.select(*_row("churn", people.c.target_index, people.c.control, None, None, sa.func.count(),
                             sa.func.count().filter(users.c.last_seen_at < cutoff),
                             sa.func.count().filter(users.c.last_seen_at >= cutoff)))
             .select_from(people.join(users, users.c.id == people.c.user_id))
             .group_by(people.c.target_index, people.c.control))
    seen = (sa.select(*_row("interaction", *arm, interactions.c.type, sa.func.count()))
            .select_from(interactions.join(d, d.c.id == interactions.c.delivery_id))
            .where(*where, interactions.c.type.in_(["impression", "click"]))
            .group_by(*arm, interactions.c.type))
    parts = [status, churn, seen]

    conversion = campaign.spec.get("conversion")
    if conversion:
        hours = conversion["window_hours"]
        window = sa.func.make_interval(0, 0, 0, 0, hours)
        bounds = (sa.select(sa.func.least(sa.func.min(d.c.sent_at), sa.select(sa.func.min(runs.c.started_at))
                                          .where(runs.c.campaign_id == campaign.id).scalar_subquery()).label("lo"),
                            sa.func.greatest(sa.func.max(d.c.sent_at), sa.select(sa.func.max(runs.c.started_at))
                                             .where(runs.c.campaign_id == campaign.id).scalar_subquery()).label("hi"))
                  .where(d.c.campaign_id == campaign.id, d.c.status.in_(SENT))
                  .cte("bounds").prefix_with("MATERIALIZED"))
        of_conversion = [events.c.app_id == campaign.app_id, events.c.name == conversion["event"]]
        # The bounds repeated inside EXISTS make them an index range on (user_id, name, time).
        in_bounds = [events.c.time >= sa.select(bounds.c.lo).scalar_subquery(),
                     events.c.time <= sa.select(bounds.c.hi).scalar_subquery() + window]
        candidates = sa.select(events.c.user_id).where(*of_conversion, *in_bounds)
        t0 = _t0()
        converted = (sa.select(*_row("converted", *arm, None, sa.func.count()))
                     .select_from(d.join(runs, runs.c.id == d.c.run_id))
                     .where(*where, d.c.user_id.in_(candidates), t0.is_not(None),
                            sa.exists().where(events.c.user_id == d.c.user_id, *of_conversion, *in_bounds,
                                              events.c.time >= t0, events.c.time <= t0 + window))
                     .group_by(*arm))
        parts.append(converted)
    only_multi = sa.exists().where(multi.c.user_id == d.c.user_id)
    return parts + _unit_parts(campaign, "postgresql", cutoff, only=only_multi)


def arms_statement(campaign: Campaign, dialect: str, inactive_days: int, now: dt.datetime) -> sa.CompoundSelect:
    """The report's one statement (one snapshot): rows of the parts described at ROW_NUMBERS."""
    cutoff = now - dt.timedelta(days=inactive_days)
    if dialect == "postgresql":
        return sa.union_all(*_postgresql_parts(campaign, cutoff))
    return sa.union_all(*_unit_parts(campaign, dialect, cutoff))


def prepare_session(session: Session) -> None:
    """Planner settings for the report's statement, for the rest of the transaction (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        # The planner prices a hash join of a million people with users below the merge join
        # in id order that both indexes give for free, and then pays twice the time for it.
        session.execute(sa.text("SET LOCAL enable_hashjoin = off"))


def _fold(rows) -> tuple[dict, dict]:
    """Counts per arm, {(target_index, control, variant): {ARM_COUNTS...}}, and churn per target
    and side, {target_index: {"treated"|"control": {...}}}, from the statement's rows."""
    arms: dict = {}
    people: dict = {}
    for part, target_index, control, variant, key, *n in rows:
        if part == "churn":
            c = people.setdefault((target_index, bool(control)), [0, 0, 0])
            for i in range(3):
                c[i] += int(n[i] or 0)
            continue
        a = arms.setdefault((target_index, bool(control), variant), dict.fromkeys(ARM_COUNTS, 0))
        if part == "funnel":  # units: users, sent, ..., converted
            for k, v in zip(ARM_COUNTS, n):
                a[k] += int(v or 0)
        elif part == "status":  # deliveries with this status, one per unit
            a["users"] += n[0]
            a["sent"] += n[0] if key in SENT else 0
            for k in ("delivered", "failed", "suppressed"):
                a[k] += n[0] if key == k else 0
        elif part == "interaction":  # units with an interaction of this type
            a["impressions" if key == "impression" else "clicks"] += n[0]
        elif part == "converted":
            a["converted"] += n[0]
    churn: dict = {}
    for (target_index, control), (total, churned, active) in people.items():
        churn.setdefault(target_index, {})["control" if control else "treated"] = {
            "users": total, "active": active, "churned": churned, "churn_rate": rate(churned, churned + active)}
    return arms, churn


def _arms(session: Session, campaign: Campaign, inactive_days: int, now: dt.datetime) -> tuple[dict, dict]:
    prepare_session(session)
    stmt = arms_statement(campaign, session.get_bind().dialect.name, inactive_days, now)
    return _fold(session.execute(stmt).all())


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


def report(session: Session, campaign: Campaign, *, inactive_days: int = 30, now: dt.datetime | None = None) -> dict:
    now = now or utcnow()
    arms, churn = _arms(session, campaign, inactive_days, now)
    totals = {k: 0 for k in ("audience", "control", "sent", "delivered", "failed", "suppressed", "converted")}
    for (_, control, _), r in arms.items():
        totals["audience"] += r["users"]
        totals["control"] += r["users"] if control else 0
        for k in ("sent", "delivered", "failed", "suppressed", "converted"):
            totals[k] += r[k]
    targets = []
    for ti, target in enumerate(campaign.spec["targets"]):
        ctrl = next((r for (t, c, _), r in arms.items() if t == ti and c), None)
        c_users, c_conv = (ctrl["users"], ctrl["converted"]) if ctrl else (0, 0)
        c_rate = rate(c_conv, c_users)
        variants = []
        for v in target["variants"]:
            r = arms.get((ti, False, v["name"]), dict.fromkeys(ARM_COUNTS, 0))
            n, conv = r["users"], r["converted"]
            v_rate = rate(conv, n)
            variants.append({
                "name": v["name"], "users": n,
                **{k: r[k] for k in ("sent", "delivered", "failed", "suppressed", "impressions", "clicks")},
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
