"""Campaign lifecycle for the UI: the service's transition, commit, then queue the work it implies.

The JSON API does the same in its views (tidings/api/campaigns.py); both re-queue a resumed
campaign's work through `scheduler.fanout.requeue_campaign` (services never enqueue).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from campaigns import service
from campaigns.models import Campaign
from scheduler import fanout
from tidings.config import Settings


def _locked(session: Session, app_id: int, campaign_id: int) -> Campaign:
    return service.get_campaign(session, app_id, campaign_id, lock=True)


def launch(session: Session, app_id: int, campaign_id: int, settings: Settings) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    run_ids = service.launch(session, campaign, settings)
    session.commit()  # commit before enqueueing, or the worker races the rows
    fanout.enqueue_runs(run_ids)
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
    fanout.requeue_campaign(session, campaign)
    return campaign


def cancel(session: Session, app_id: int, campaign_id: int) -> Campaign:
    campaign = _locked(session, app_id, campaign_id)
    service.cancel(session, campaign)
    session.commit()
    return campaign


ACTIONS = {"launch": launch, "pause": pause, "resume": resume, "cancel": cancel}
