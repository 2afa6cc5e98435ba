"""Event-triggered campaigns: an event named by a running campaign's trigger queues a per-user send.

The delivery is written at once (unique per campaign, user and event, so a retried event does
not send twice) with `send_after` = event time + delay and no target yet: whether the person
is in the audience, and which arm they get, is decided when the delay has run out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.models import Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryStatus
from tidings.db import insert_for, utcnow

MAX_EVENT_AGE = dt.timedelta(hours=24)  # replayed history does not fire campaigns


def watching(session: Session, app_id: int, names: Iterable[str]) -> list[sa.Row]:
    """The running campaigns triggered by any of these event names (id, trigger_event, spec,
    launched_at): looked up before the events are stored, which then only need to come back
    from the database when one of these waits for them."""
    names = set(names)
    if not names:
        return []
    return session.execute(
        sa.select(Campaign.id, Campaign.trigger_event, Campaign.spec, Campaign.launched_at)
        .where(Campaign.app_id == app_id, Campaign.status == CampaignStatus.RUNNING,
               Campaign.trigger_event.in_(names))
    ).all()


def on_events(session: Session, app_id: int, campaigns: Sequence[sa.Row], stored: Sequence[dict],
              now: dt.datetime | None = None) -> int:
    """Queue the triggered sends of `campaigns` (`watching`) for freshly stored events (id,
    user_id, name, time); returns how many."""
    now = now or utcnow()
    if not campaigns or not stored:
        return 0
    runs = dict(session.execute(
        sa.select(CampaignRun.campaign_id, sa.func.min(CampaignRun.id))
        .where(CampaignRun.campaign_id.in_([c.id for c in campaigns])).group_by(CampaignRun.campaign_id)
    ).all())
    rows = []
    for c in campaigns:
        delay = dt.timedelta(minutes=c.spec["schedule"].get("delay_minutes", 0))
        for e in stored:
            if e["name"] != c.trigger_event or e["time"] < max(c.launched_at, now - MAX_EVENT_AGE):
                continue
            rows.append({"app_id": app_id, "campaign_id": c.id, "run_id": runs[c.id], "user_id": e["user_id"],
                         "dedupe_key": f"event:{e['id']}", "status": DeliveryStatus.PENDING,
                         "send_after": e["time"] + delay, "control": False, "attempts": 0,
                         "created_at": now, "updated_at": now})
    if rows:
        table = Delivery.__table__
        session.execute(insert_for(session, table).on_conflict_do_nothing(
            index_elements=["campaign_id", "user_id", "dedupe_key"]), rows)
    return len(rows)
