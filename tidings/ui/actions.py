"""Campaign lifecycle for the UI: the service's transition, commit, then queue the work it implies.

The JSON API does the same in its views (tidings/api/campaigns.py); the re-queueing after a
resume lives here as a function so both could share it (it belongs in the service layer's
caller, never in a service: services do not enqueue).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import service
from campaigns.models import BatchStatus, Campaign, CampaignRun, CampaignStatus, DeliveryBatch, RunStatus
from scheduler import fanout
from scheduler.queues import QueueName, enqueue
from tidings.config import Settings


def _locked(session: Session, app_id: int, campaign_id: int) -> Campaign:
    return service.get_campaign(session, app_id, campaign_id, lock=True)


def launch(session: Session, app_id: int, campaign_id: int, settings: Settings) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    run_ids = service.launch(session, campaign, settings)
    session.commit()  # commit before enqueueing, or the worker races the rows
    for run_id in run_ids:
        enqueue(QueueName.DEFAULT, fanout.JOB, run_id, job_timeout=3600)
    return campaign


def pause(session: Session, app_id: int, campaign_id: int) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    service.pause(session, campaign)
    session.commit()
    return campaign


def resume(session: Session, app_id: int, campaign_id: int) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    service.resume(session, campaign)
    session.commit()
    requeue_after_resume(session, campaign)
    return campaign


def requeue_after_resume(session: Session, campaign: Campaign) -> None:
    """A paused send left runs mid fan-out and batches queued: queue them again (jobs are idempotent)."""
    if campaign.status != CampaignStatus.RUNNING:
        return
    runs = session.scalars(sa.select(CampaignRun.id).where(
        CampaignRun.campaign_id == campaign.id,
        CampaignRun.status.in_([RunStatus.PENDING, RunStatus.FANNING_OUT]))).all()
    batches = session.scalars(sa.select(DeliveryBatch.id).where(
        DeliveryBatch.campaign_id == campaign.id, DeliveryBatch.status == BatchStatus.QUEUED)).all()
    for run_id in runs:
        enqueue(QueueName.DEFAULT, fanout.JOB, run_id, job_timeout=3600)
    fanout.enqueue_batches(list(batches))


def cancel(session: Session, app_id: int, campaign_id: int) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    service.cancel(session, campaign)
    session.commit()
    return campaign


ACTIONS = {"launch": launch, "pause": pause, "resume": resume, "cancel": cancel}
