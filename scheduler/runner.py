"""The scheduler loop: one `tick` starts due runs, batches due sends, sweeps lost work and sums
new events into the event rollups (once a minute).

Safe with several schedulers at once: due campaigns and due deliveries are claimed with
`FOR UPDATE SKIP LOCKED`, a run is unique per (campaign, occurrence), and everything the
sweeper re-queues is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import sqlalchemy as sa

from campaigns import service as campaigns
from campaigns.models import (
    BatchStatus, Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryBatch, DeliveryStatus, RunStatus,
)
from scheduler import fanout, sweeper
from segments import rollups
from tidings.db import get_engine, session_scope, utcnow

log = logging.getLogger(__name__)

S = DeliveryStatus
DUE_BATCH_LIMIT = 20_000
FANOUT_STALE = dt.timedelta(minutes=2)
BATCH_STALE = dt.timedelta(minutes=5)
SENDING_GRACE = dt.timedelta(minutes=3)  # an SMS receipt normally comes back within seconds


def tick(now: dt.datetime | None = None) -> dict:
    """One pass of every duty; returns what it did (for logs and tests)."""
    now = now or utcnow()
    done = {
        "runs_started": start_due_runs(now),
        "fanouts_queued": requeue_fanouts(now),
        "sending_reset": reset_stale_sending(now),
        "batches_queued": batch_due_deliveries(now),
        "batches_requeued": requeue_stale_batches(now),
        "runs_finished": finish_runs(now),
    }
    with session_scope() as session:
        done["imports_requeued"] = len(sweeper.requeue_stuck_imports(session, now))
    rolled = rollups.roll_up_if_due(get_engine(), now)
    done["events_rolled_up"] = rolled["events"] if rolled else 0
    return done


def start_due_runs(now: dt.datetime) -> int:
    started = []
    with session_scope() as session:
        due = session.scalars(
            sa.select(Campaign)
            .where(Campaign.status.in_([CampaignStatus.SCHEDULED, CampaignStatus.RUNNING]),
                   Campaign.next_run_at.is_not(None), Campaign.next_run_at <= now)
            .order_by(Campaign.next_run_at).limit(100).with_for_update(skip_locked=True)
        ).all()
        for campaign in due:
            occurrence = campaigns.occurrence_of(campaign)
            run = campaigns.start_run(session, campaign, occurrence, now)
            if campaign.spec["schedule"]["type"] == "recurring":
                campaign.next_run_at, _ = campaigns.next_occurrence(campaign, occurrence)
            else:
                campaign.next_run_at = None
            campaign.status = CampaignStatus.RUNNING
            if run is not None:
                started.append(run.id)
    fanout.enqueue_runs(started)
    return len(started)


def requeue_fanouts(now: dt.datetime) -> int:
    with session_scope() as session:
        stuck = session.scalars(
            sa.select(CampaignRun.id).join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .where(CampaignRun.status.in_([RunStatus.PENDING, RunStatus.FANNING_OUT]),
                   Campaign.status == CampaignStatus.RUNNING, CampaignRun.updated_at < now - FANOUT_STALE)
        ).all()
        if stuck:
            session.execute(sa.update(CampaignRun).where(CampaignRun.id.in_(stuck)).values(updated_at=now))
    fanout.enqueue_runs(list(stuck))
    return len(stuck)


def reset_stale_sending(now: dt.datetime) -> int:
    """`sending` with no receipt after the grace period: the provider never got it; send again."""
    with session_scope() as session:
        result = session.execute(
            sa.update(Delivery)
            .where(Delivery.status == S.SENDING, Delivery.sending_at < now - SENDING_GRACE)
            .values(status=S.PENDING, batch_id=None, updated_at=now)
        )
        return result.rowcount or 0


def batch_due_deliveries(now: dt.datetime) -> int:
    made: list[int] = []
    with session_scope() as session:
        rows = session.execute(
            sa.select(Delivery.id, Delivery.app_id, Delivery.campaign_id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Delivery.status == S.PENDING, Delivery.batch_id.is_(None), Delivery.send_after <= now,
                   Campaign.status == CampaignStatus.RUNNING, Campaign.channel.in_(["sms", "push"]))
            .order_by(Delivery.id).limit(DUE_BATCH_LIMIT)
            .with_for_update(of=Delivery, skip_locked=True)
        ).all()
        by_campaign: dict[tuple[int, int], list[int]] = {}
        for r in rows:
            by_campaign.setdefault((r.app_id, r.campaign_id), []).append(r.id)
        for (app_id, campaign_id), ids in by_campaign.items():
            made += fanout.make_batches(session, app_id, campaign_id, ids, now)
    fanout.enqueue_batches(made)
    return len(made)


def requeue_stale_batches(now: dt.datetime) -> int:
    with session_scope() as session:
        stale = session.scalars(
            sa.select(DeliveryBatch.id).join(Campaign, Campaign.id == DeliveryBatch.campaign_id)
            .where(DeliveryBatch.status == BatchStatus.QUEUED, DeliveryBatch.updated_at < now - BATCH_STALE,
                   Campaign.status == CampaignStatus.RUNNING)
            .with_for_update(of=DeliveryBatch, skip_locked=True)
        ).all()
        if stale:
            session.execute(sa.update(DeliveryBatch).where(DeliveryBatch.id.in_(stale)).values(updated_at=now))
    fanout.enqueue_batches(list(stale))
    return len(stale)


def finish_runs(now: dt.datetime) -> int:
    """Runs with every delivery written and none left to send are finished; so are one-shot campaigns."""
    with session_scope() as session:
        open_work = sa.exists().where(Delivery.run_id == CampaignRun.id,
                                      Delivery.status.in_([S.PENDING, S.SENDING]))
        finished = session.scalars(
            sa.update(CampaignRun)
            .where(CampaignRun.status == RunStatus.SENDING, CampaignRun.fanned_out_at.is_not(None), ~open_work)
            .values(status=RunStatus.FINISHED, finished_at=now, updated_at=now)
            .returning(CampaignRun.campaign_id)
        ).all()
        if finished:
            session.execute(
                sa.update(Campaign)
                .where(Campaign.id.in_(finished), Campaign.status == CampaignStatus.RUNNING,
                       Campaign.next_run_at.is_(None), Campaign.trigger_event.is_(None),
                       Campaign.channel.in_(["sms", "push"]))
                .values(status=CampaignStatus.FINISHED, finished_at=now))
        return len(finished)


def start_embedded_scheduler(interval: float = 2.0) -> threading.Thread:
    def loop():
        while True:
            try:
                tick()
            except Exception:  # the loop must survive a bad pass
                log.exception("scheduler pass failed")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="tidings-embedded-scheduler", daemon=True)
    thread.start()
    return thread
