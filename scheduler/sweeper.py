"""The sweeper: the database is the source of truth, so work whose job was lost is queued again.

Redis may lose everything (restart, eviction) and a worker may die mid-job. Every job is
idempotent, so re-queueing work that might still be running is harmless; the sweeper only needs
to find work that has made no progress for a while.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.queues import QueueName, enqueue
from segments import imports
from segments.models import ImportStatus, UserImport
from tidings.db import utcnow

log = logging.getLogger(__name__)
IMPORT_STALE_AFTER = dt.timedelta(minutes=10)


def requeue_stuck_imports(session: Session, now: dt.datetime | None = None) -> list[int]:
    """Imports queued or running that made no progress for IMPORT_STALE_AFTER: queue them again."""
    now = now or utcnow()
    stale = list(session.scalars(
        sa.select(UserImport.id).where(
            UserImport.status.in_([ImportStatus.QUEUED, ImportStatus.RUNNING]),
            UserImport.updated_at < now - IMPORT_STALE_AFTER,
        )
    ))
    for import_id in stale:
        job_id = f"import-{import_id}-{int(now.timestamp())}"
        enqueue(QueueName.IMPORTS, imports.JOB, import_id, job_id=job_id, job_timeout=3600,
                on_failure=imports.FAILED)
        log.info("re-queued import %s", import_id)
    return stale
