"""Fan-out: a run's audience becomes delivery rows, page by page, and batches for the send jobs.

Resolving uses the compiled segment SQL (audience AND any target; a CASE picks the first
target that matches), keyset-paged on users.id. Each page is one transaction: it locks the run,
writes the page's deliveries (unique per campaign/user/run, so a repeat writes nothing), moves
the run's cursor and creates the page's batches. A job that dies resumes at the cursor.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from campaigns.models import (
    BatchStatus, Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryBatch, DeliveryStatus, RunStatus,
)
from campaigns.service import effective_quiet_hours
from campaigns.targeting import CompiledCampaign
from scheduler import timing
from scheduler.queues import QueueName, enqueue, get_queue
from segments.models import User
from tidings.db import bulk_insert, one_of, session_scope, utcnow

log = logging.getLogger(__name__)

PAGE = 2000
BATCH = 500
JOB = "scheduler.fanout.fan_out"
SEND_JOB = "scheduler.send.send_batch"
users = User.__table__
deliveries = Delivery.__table__


def run_key(run_id: int) -> str:
    return f"run:{run_id}"


def fan_out(run_id: int) -> None:
    """The RQ job: write the run's deliveries and queue their batches. Idempotent and resumable."""
    with session_scope() as session:
        run = session.get(CampaignRun, run_id)
        if run is None or run.status not in (RunStatus.PENDING, RunStatus.FANNING_OUT):
            return
        campaign = session.get(Campaign, run.campaign_id)
        if campaign.status != CampaignStatus.RUNNING:
            return  # paused: the scheduler queues the fan-out again on resume; cancelled: never
        compiled = CompiledCampaign(session, campaign)
        dialect = session.get_bind().dialect.name
        now_eval = run.started_at or utcnow()
        condition, target = compiled.sql(now_eval, dialect)
        local_wall = run.scheduled_for if campaign.spec.get("local_time") else None
        quiet = effective_quiet_hours(campaign)
    while True:
        batch_ids = _page(run_id, compiled, condition, target, local_wall, quiet)
        if batch_ids is None:
            return
        enqueue_batches(batch_ids)


def _page(run_id, compiled, condition, target, local_wall, quiet) -> list[int] | None:
    """One page; returns the ids of the batches it made, or None when the fan-out is complete."""
    now = utcnow()
    with session_scope() as session:
        run = session.get(CampaignRun, run_id, with_for_update=True)
        if run.status not in (RunStatus.PENDING, RunStatus.FANNING_OUT):
            return None
        campaign_status = session.scalar(sa.select(Campaign.status).where(Campaign.id == run.campaign_id))
        if campaign_status != CampaignStatus.RUNNING:
            return None
        rows = session.execute(
            sa.select(users.c.id, users.c.external_id, users.c.timezone, target.label("target"))
            .where(users.c.app_id == run.app_id, users.c.id > run.cursor_user_id, condition)
            .order_by(users.c.id).limit(PAGE)
        ).all()
        if not rows:
            run.status, run.fanned_out_at = RunStatus.SENDING, now
            return None
        run.status = RunStatus.FANNING_OUT
        new = []
        for row in rows:
            arm = compiled.split(row.target, row.external_id)
            new.append({
                "app_id": run.app_id, "campaign_id": run.campaign_id, "run_id": run.id, "user_id": row.id,
                "dedupe_key": run_key(run.id), "target_index": arm.target_index, "variant": arm.variant,
                "control": arm.control,
                "status": DeliveryStatus.CONTROL if arm.control else DeliveryStatus.PENDING,
                "reason": "control" if arm.control else None,
                "send_after": now if arm.control else timing.send_time(now, row.timezone, local_wall=local_wall,
                                                                        quiet=quiet),
                "batch_id": None, "attempts": 0, "created_at": now, "updated_at": now,
            })
        # Rows due now get their batch before they are written: one write per delivery.
        due = [r for r in new if r["status"] == DeliveryStatus.PENDING and r["send_after"] <= now]
        batch_ids = []
        for start in range(0, len(due), BATCH):
            chunk = due[start:start + BATCH]
            batch = DeliveryBatch(app_id=run.app_id, campaign_id=run.campaign_id, size=len(chunk),
                                  created_at=now, updated_at=now)
            session.add(batch)
            session.flush()
            for r in chunk:
                r["batch_id"] = batch.id
            batch_ids.append(batch.id)
        written = bulk_insert(session, deliveries, new, conflict=["campaign_id", "user_id", "dedupe_key"],
                              returning=(deliveries.c.id,))
        run.cursor_user_id = rows[-1].id
        run.audience_count += len(written)
        return batch_ids  # a batch whose rows existed already (a re-run) finds nothing to send


def make_batches(session, app_id: int, campaign_id: int, delivery_ids: list[int], now: dt.datetime) -> list[int]:
    """Group pending deliveries into batches of BATCH (caller commits, then `enqueue_batches`)."""
    batch_ids = []
    for start in range(0, len(delivery_ids), BATCH):
        chunk = delivery_ids[start:start + BATCH]
        batch = DeliveryBatch(app_id=app_id, campaign_id=campaign_id, size=len(chunk), created_at=now,
                              updated_at=now)
        session.add(batch)
        session.flush()
        session.execute(sa.update(deliveries).where(one_of(session, deliveries.c.id, chunk)).values(batch_id=batch.id))
        batch_ids.append(batch.id)
    return batch_ids


def enqueue_runs(run_ids: list[int]) -> None:
    """Queue the fan-out of these runs (after the commit that created them)."""
    for run_id in run_ids:
        enqueue(QueueName.DEFAULT, JOB, run_id, job_timeout=3600)


def enqueue_batches(batch_ids: list[int]) -> None:
    if not batch_ids:
        return
    queue = get_queue(QueueName.SEND)
    queue.enqueue_many([queue.prepare_data(SEND_JOB, args=(bid,), timeout=1800) for bid in batch_ids])


def requeue_campaign(session, campaign: Campaign) -> None:
    """After a resume: runs left mid fan-out and batches left queued go back on the queues.

    Every job is idempotent, so queueing one whose earlier copy still exists is harmless.
    """
    if campaign.status != CampaignStatus.RUNNING:
        return
    runs = session.scalars(sa.select(CampaignRun.id).where(
        CampaignRun.campaign_id == campaign.id,
        CampaignRun.status.in_([RunStatus.PENDING, RunStatus.FANNING_OUT]))).all()
    batches = session.scalars(sa.select(DeliveryBatch.id).where(
        DeliveryBatch.campaign_id == campaign.id, DeliveryBatch.status == BatchStatus.QUEUED)).all()
    enqueue_runs(list(runs))
    enqueue_batches(list(batches))
