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
import itertools
import math

import sqlalchemy as sa
from scipy.stats import chi2_contingency
from sqlalchemy.orm import Session

from campaigns.models import RUN_KEYS, Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryStatus, Interaction
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
# Churn reads every person of the campaign and their users row: the largest part by far, so it
# is split by user id for the parallel workers to share (PostgreSQL; see `user_cuts`).
CHURN_PARTS = 2


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
    """The columns of one part's select, padded to the common shape and named alike."""
    # Typed NULLs: PostgreSQL resolves a UNION's column types pair by pair, and two untyped
    # NULLs make text, which then clashes with a count. Named: a select from the UNION (see
    # arms_statement) would otherwise take the NULLs, all alike, for one column.
    numbers = list(numbers) + [sa.cast(sa.null(), sa.BigInteger)] * (ROW_NUMBERS - len(numbers))
    text = sa.cast(sa.null(), sa.String)
    return [sa.literal_column(f"'{part}'").label("part"), target_index.label("target_index"),
            control.label("control"), (variant if variant is not None else text).label("variant"),
            (key if key is not None else text).label("key"), *(n.label(f"n{i}") for i, n in enumerate(numbers, 1))]


def _count(sign: int = 1) -> sa.ColumnElement[int]:
    """count(*), negated for rows that take counts back out (see `_postgresql_parts`)."""
    return sa.func.count() if sign > 0 else -sa.func.count()


def _reported(campaign: Campaign) -> list:
    """The deliveries a report counts: the campaign's, with an arm, and no test sends."""
    return [d.c.campaign_id == campaign.id, d.c.target_index.is_not(None), ~d.c.dedupe_key.startswith("test:")]


def _t0():
    """When a delivery's conversion window starts: the run's start for control, the send otherwise."""
    return sa.case((d.c.control, runs.c.started_at), (d.c.status.in_(SENT), d.c.sent_at), else_=None)


def _unit_parts(campaign: Campaign, dialect: str, cutoff: dt.datetime, only=None,
                with_churn: bool = True) -> list[sa.Select]:
    """The report by its definition: deliveries grouped into units (one person in one run and
    arm), each unit's conversion looked up on its own, people counted once per target and side
    for churn. Used for everything on SQLite and, on PostgreSQL, for the funnel of the few
    people whose units hold more than one delivery (`only`: a filter on d.c.user_id; their
    churn is counted with everyone's there, hence `with_churn` off).

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
    return [funnel, _churn_of(people, cutoff)] if with_churn else [funnel]


def _churn_of(people, cutoff: dt.datetime, *also) -> sa.Select:
    """The churn part: `people` (user_id, target_index, control; each once) counted per target
    and side, by their users row's last_seen_at (`also`: more conditions of that join)."""
    return (sa.select(*_row("churn", people.c.target_index, people.c.control, None, None, sa.func.count(),
                            sa.func.count().filter(users.c.last_seen_at < cutoff),
                            sa.func.count().filter(users.c.last_seen_at >= cutoff)))
            .select_from(people.join(users, sa.and_(users.c.id == people.c.user_id, *also)))
            .group_by(people.c.target_index, people.c.control))


def _status(where: list, sign: int = 1) -> sa.Select:
    """Deliveries per arm and status (`sign` -1: to take them back out, see `_postgresql_parts`)."""
    arm = (d.c.target_index, d.c.control, d.c.variant)
    return sa.select(*_row("status", *arm, d.c.status, _count(sign))).where(*where).group_by(*arm, d.c.status)


def _interactions(where: list, sign: int = 1) -> sa.Select:
    """Deliveries per arm with an impression, and with a click (a delivery has at most one row per type)."""
    arm = (d.c.target_index, d.c.control, d.c.variant)
    return (sa.select(*_row("interaction", *arm, interactions.c.type, _count(sign)))
            .select_from(interactions.join(d, d.c.id == interactions.c.delivery_id))
            .where(*where, interactions.c.type.in_(["impression", "click"]))
            .group_by(*arm, interactions.c.type))


def _churn(campaign: Campaign, cutoff: dt.datetime, low: int | None, high: int | None) -> sa.Select:
    """People reached per target and side, of those with user ids in [low, high) (None: no
    bound), by last_seen_at: grouped along ix_deliveries_report and merged with users in id
    order, so someone in several runs counts once and neither side is sorted."""
    def within(column) -> list:
        return ([column >= low] if low is not None else []) + ([column < high] if high is not None else [])

    people = (sa.select(d.c.user_id, d.c.target_index, d.c.control)
              .where(*_reported(campaign), d.c.status != S.SUPPRESSED, *within(d.c.user_id))
              .group_by(d.c.user_id, d.c.target_index, d.c.control).subquery("people"))
    return _churn_of(people, cutoff, *within(users.c.id))


def _converted(campaign: Campaign, conversion: dict, bounds: Bounds) -> sa.Select:
    """Deliveries per arm whose window [t0, t0 + window_hours] holds a conversion event.

    Only people with such an event between the earliest and the latest window of the campaign
    (`bounds`, read just before the statement) are looked at: a range of
    ix_events_app_name_time_user, gathered per person into an array, and their deliveries are
    checked against it one by one. The bounds come as parameters: a subquery here would be an
    InitPlan, which keeps the part out of the parallel plan, or, joined, a nested loop that a
    planner without statistics repeats per event.
    """
    window = sa.func.make_interval(0, 0, 0, 0, conversion["window_hours"])
    earliest, latest = bounds
    latest_t0 = sa.literal(latest, sa.DateTime(timezone=True)) if latest is not None else None
    if campaign.status != CampaignStatus.FINISHED:  # still sending: later t0s may be visible to the statement
        now = sa.func.statement_timestamp()
        latest_t0 = now if latest_t0 is None else sa.func.greatest(latest_t0, now)
    candidates = (
        sa.select(events.c.user_id, sa.func.array_agg(events.c.time).label("times"))
        .where(events.c.app_id == campaign.app_id, events.c.name == conversion["event"],
               events.c.time >= earliest, events.c.time <= latest_t0 + window)
        .group_by(events.c.user_id)
        .subquery("candidates"))
    t0 = _t0()
    arm = (d.c.target_index, d.c.control, d.c.variant)
    in_window = sa.func.tstzrange(t0, t0 + window, "[]").op("@>")(sa.any_(candidates.c.times))
    return (sa.select(*_row("converted", *arm, None, sa.func.count()))
            .select_from(candidates.join(d, sa.and_(d.c.campaign_id == campaign.id,
                                                    d.c.user_id == candidates.c.user_id))
                         .join(runs, runs.c.id == d.c.run_id))
            .where(*_reported(campaign), t0.is_not(None), in_window)
            .group_by(*arm))


Bounds = tuple[dt.datetime | None, dt.datetime | None]


def conversion_bounds(session: Session, campaign: Campaign) -> Bounds:
    """(earliest, latest) start of a conversion window of the campaign so far: its runs' starts
    (control) and its deliveries' sends; (None, None) when there is none yet. Windows starting
    later (a campaign still sending) are allowed for in `_converted`."""
    started = session.execute(sa.select(sa.func.min(runs.c.started_at), sa.func.max(runs.c.started_at))
                              .where(runs.c.campaign_id == campaign.id)).one()
    sent = session.execute(sa.select(sa.func.min(d.c.sent_at), sa.func.max(d.c.sent_at))
                           .where(d.c.campaign_id == campaign.id)).one()
    lows = [t for t in (started[0], sent[0]) if t is not None]
    highs = [t for t in (started[1], sent[1]) if t is not None]
    return (min(lows), max(highs)) if lows else (None, None)


def _converted_of(campaign: Campaign, conversion: dict, where: list, sign: int) -> sa.Select:
    """`_converted` for a few deliveries (`where`), each window looked up on its own."""
    t0 = _t0()
    arm = (d.c.target_index, d.c.control, d.c.variant)
    hit = sa.exists().where(events.c.user_id == d.c.user_id, events.c.app_id == campaign.app_id,
                            events.c.name == conversion["event"],
                            _within("postgresql", events.c.time, t0, conversion["window_hours"]))
    return (sa.select(*_row("converted", *arm, None, _count(sign)))
            .select_from(d.join(runs, runs.c.id == d.c.run_id))
            .where(*where, t0.is_not(None), hit)
            .group_by(*arm))


def _postgresql_parts(campaign: Campaign, cutoff: dt.datetime, user_cuts: tuple[int, ...],
                      bounds: Bounds) -> tuple[list[sa.Select], list[sa.Select]]:
    """The report without grouping a million deliveries into units, as (parallel, serial) parts.

    Nearly always a unit is one delivery: a run writes one row per person, and only triggered
    sends put several into one run. So every delivery is counted on its own (`parallel`); for
    the few people for whom that is not so (`multi`) the per-delivery counts are taken back out
    and their units counted by the definition (`serial`, `_unit_parts`):

    - status: deliveries per arm and status;
    - churn: people per target and side, one part per range of user ids (`user_cuts`); a
      person counts once per target and side, so this part needs no taking back;
    - interaction: interactions per arm and type;
    - converted: deliveries whose window holds a conversion event.

    The parallel parts read no CTE, InitPlan or correlated subquery, so PostgreSQL can run them
    side by side in parallel workers (a Parallel Append, see `prepare_session`); the serial ones
    read `multi` and run in the leader afterwards.
    """
    reported = _reported(campaign)
    conversion = campaign.spec.get("conversion")
    if conversion and conversion["window_hours"] < 0:
        conversion = None  # a window that ends before it starts holds nothing (as in _within)
    cuts = [None, *user_cuts, None]
    parallel = [_status(reported), *(_churn(campaign, cutoff, low, high) for low, high in itertools.pairwise(cuts)),
                _interactions(reported)]
    if conversion and bounds[0] is not None:  # else no window has started: nothing converted
        parallel.append(_converted(campaign, conversion, bounds))

    # Only people with a delivery not keyed `run:<its run>` can have a unit of several: a run
    # writes one such row per person (unique per campaign, person and key), so a second delivery
    # in the same run is a triggered (`event:`) one. Scheduled campaigns have none, which
    # ix_deliveries_not_run tells at once (its predicate, written out: a bound pattern would not
    # match it).
    maybe = sa.select(d.c.user_id).where(d.c.campaign_id == campaign.id,
                                         d.c.dedupe_key.not_like(sa.literal_column(RUN_KEYS)))
    multi = (sa.select(d.c.user_id).where(*reported, d.c.user_id.in_(maybe))
             .group_by(d.c.user_id, d.c.target_index, d.c.control, d.c.run_id, d.c.variant)
             .having(sa.func.count() > 1)
             .cte("multi").prefix_with("MATERIALIZED"))
    of_multi = [*reported, sa.exists().where(multi.c.user_id == d.c.user_id)]
    serial = [_status(of_multi, -1), _interactions(of_multi, -1)]
    if conversion:
        serial.append(_converted_of(campaign, conversion, of_multi, -1))
    serial += _unit_parts(campaign, "postgresql", cutoff, only=of_multi[-1], with_churn=False)
    return parallel, serial


def arms_statement(campaign: Campaign, dialect: str, inactive_days: int, now: dt.datetime,
                   user_cuts: tuple[int, ...] = (), bounds: Bounds | None = None) -> sa.CompoundSelect:
    """The report's one statement (one snapshot): rows of the parts described at ROW_NUMBERS.
    On PostgreSQL, `user_cuts` (see `user_cuts`) splits churn into parts, any cuts giving the
    same answer, and `bounds` (`conversion_bounds`, needed for a campaign with a conversion
    event) says where its conversions can be."""
    cutoff = now - dt.timedelta(days=inactive_days)
    if dialect == "postgresql":
        if bounds is None and campaign.spec.get("conversion"):
            raise ValueError("arms_statement needs the campaign's conversion_bounds on PostgreSQL")
        parallel, serial = _postgresql_parts(campaign, cutoff, user_cuts, bounds or (None, None))
        # OFFSET 0 keeps the parallel parts a subquery of their own: flattened into one UNION
        # with the serial parts, which read a CTE, none of them could go to a worker.
        return sa.union_all(sa.select(sa.union_all(*parallel).subquery("main")).offset(0), *serial)
    return sa.union_all(*_unit_parts(campaign, dialect, cutoff))


def user_cuts(session: Session, campaign: Campaign, parts: int = CHURN_PARTS) -> tuple[int, ...]:
    """User ids that split the campaign's people into `parts` ranges of about equal width, so
    churn is counted in that many parallel parts (the two ends of ix_deliveries_report). Only
    the balance between the parts depends on them, never the answer."""
    low, high = session.execute(sa.select(sa.func.min(d.c.user_id), sa.func.max(d.c.user_id))
                                .where(d.c.campaign_id == campaign.id)).one()
    if low is None or high - low < parts:
        return ()
    return tuple(low + (high - low + 1) * k // parts for k in range(1, parts))


def prepare_session(session: Session) -> None:
    """Planner settings for the report's statement, for the rest of the transaction (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        # The planner prices a hash join of a million people with users below the merge join
        # in id order that both indexes give for free, and then pays twice the time for it.
        session.execute(sa.text("SET LOCAL enable_hashjoin = off"))
        # The parts run side by side, each whole in one process (a Parallel Append of the
        # parallel parts). Split among workers, each part would be planned on its own and its
        # merge joins read the whole other side in every worker.
        session.execute(sa.text("SET LOCAL min_parallel_table_scan_size = '1TB'"))
        session.execute(sa.text("SET LOCAL min_parallel_index_scan_size = '1TB'"))
        # The indexes the report reads are hot: at the default (4) the planner walks a campaign's
        # million deliveries rather than look up the few ten thousand candidates for conversion.
        session.execute(sa.text("SET LOCAL random_page_cost = 1.1"))


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
        elif part == "status":  # deliveries with this status, one per unit (or taken back: negative)
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


def _arms(session: Session, campaign: Campaign, inactive_days: int, now: dt.datetime,
          cuts: tuple[int, ...] | None = None) -> tuple[dict, dict]:
    dialect = session.get_bind().dialect.name
    prepare_session(session)
    bounds = None
    if dialect == "postgresql":
        cuts = user_cuts(session, campaign) if cuts is None else cuts
        bounds = conversion_bounds(session, campaign)
    stmt = arms_statement(campaign, dialect, inactive_days, now, cuts or (), bounds)
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
