"""Campaigns, their runs, one delivery row per (campaign, recipient occurrence), batches, interactions, hooks.

The database is the source of truth for delivery: a run's fan-out writes delivery rows (unique
per campaign and `dedupe_key`), batches group them for RQ send jobs, and every status change
goes through `campaigns.states` so nothing moves backwards.
"""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db import Base, BigID, JSONType, UTCDateTime, app_fk, utcnow


class ChannelName(enum.StrEnum):
    SMS = "sms"
    PUSH = "push"
    INAPP = "inapp"
    CONFIG = "config"


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        sa.Index("ix_campaigns_due", "status", "next_run_at"),
        sa.Index("ix_campaigns_app_trigger", "app_id", "trigger_event"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk(), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    channel: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default=CampaignStatus.DRAFT)
    # The validated definition: audience, targets, conversion, schedule, local_time,
    # frequency_cap, quiet_hours, rate_limit_per_second (CONTRACT.md "Campaigns").
    spec: Mapped[dict] = mapped_column(JSONType)
    # Bumped on every change, so caches of running campaigns know when to reload.
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    paused_from: Mapped[str | None] = mapped_column(sa.String(16))
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    trigger_event: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    launched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RunStatus(enum.StrEnum):
    PENDING = "pending"          # created; audience not yet written
    FANNING_OUT = "fanning_out"  # writing delivery rows page by page (cursor_user_id)
    SENDING = "sending"          # every delivery row written; sends under way
    FINISHED = "finished"
    CANCELLED = "cancelled"


class CampaignRun(Base):
    """One occurrence of a campaign (a one-shot send, one cron tick, or the standing run of a
    triggered/in-app/config campaign). Unique per (campaign, scheduled_for): two schedulers
    cannot start the same occurrence twice."""

    __tablename__ = "campaign_runs"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "scheduled_for"),
        sa.Index("ix_campaign_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    campaign_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    scheduled_for: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16), default=RunStatus.PENDING)
    cursor_user_id: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    audience_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fanned_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"          # waiting to be sent (maybe until send_after)
    SENDING = "sending"          # handed to a worker for the provider call
    SENT = "sent"                # the provider accepted it
    DELIVERED = "delivered"      # the provider confirmed delivery (final)
    FAILED = "failed"            # permanent failure (final)
    SUPPRESSED = "suppressed"    # not sent on purpose: opted out, no number/token, capped... (final)
    CONTROL = "control"          # held out to measure uplift (final)


# Deliveries not written by a run (`run:<id>`): the predicate of ix_deliveries_not_run, which
# campaigns.reports repeats (the same words, for the planner to match them).
RUN_KEYS = "'run:%'"
NOT_RUN_KEY = f"dedupe_key NOT LIKE {RUN_KEYS}"


class Delivery(Base):
    """One recipient of one campaign occurrence. `dedupe_key` is `run:<id>` for scheduled runs
    and `event:<id>` for triggered sends, so no one is queued twice for the same reason."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "user_id", "dedupe_key"),
        sa.Index("ix_deliveries_run_status", "run_id", "status"),
        sa.Index("ix_deliveries_due", "status", "send_after"),
        sa.Index("ix_deliveries_batch", "batch_id"),
        sa.Index("ix_deliveries_user", "user_id", "campaign_id"),
        # The campaign report: a campaign's deliveries in person order, with everything the report
        # reads, so it groups people and units and merges with users without sorting or touching
        # the table (campaigns.reports). Any lookup by campaign uses it too.
        sa.Index("ix_deliveries_report", "campaign_id", "user_id", "target_index", "control", "run_id", "variant",
                 postgresql_include=["status", "sent_at", "dedupe_key", "id"]),
        # The report's conversion bounds: the earliest and latest sent_at of a campaign, narrow.
        sa.Index("ix_deliveries_sent", "campaign_id", "sent_at"),
        # The report's people who may have several deliveries in one run: only those with a
        # delivery not keyed by its run (triggered sends), none at all in a scheduled campaign.
        sa.Index("ix_deliveries_not_run", "campaign_id", "user_id",
                 postgresql_where=sa.text(NOT_RUN_KEY), sqlite_where=sa.text(NOT_RUN_KEY)),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    campaign_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str] = mapped_column(sa.String(64))
    target_index: Mapped[int | None] = mapped_column(sa.Integer)
    variant: Mapped[str | None] = mapped_column(sa.String(50))
    control: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default=DeliveryStatus.PENDING)
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    send_after: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    batch_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    provider_id: Mapped[str | None] = mapped_column(sa.String(255))
    content: Mapped[dict | None] = mapped_column(JSONType)  # as rendered for this person
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sending_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class BatchStatus(enum.StrEnum):
    QUEUED = "queued"
    DONE = "done"


class DeliveryBatch(Base):
    """A few hundred deliveries sent by one RQ job; the sweeper re-queues batches whose job was lost."""

    __tablename__ = "delivery_batches"
    __table_args__ = (sa.Index("ix_delivery_batches_status", "status", "updated_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    campaign_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16), default=BatchStatus.QUEUED)
    size: Mapped[int] = mapped_column(sa.Integer, default=0)
    enqueued: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Interaction(Base):
    """impression / click / dismiss / open of a delivery, recorded once per type."""

    __tablename__ = "interactions"
    __table_args__ = (sa.UniqueConstraint("delivery_id", "type"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    delivery_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("deliveries.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Hook(Base):
    """A power hook: a typed remote-config key with a default, overridden per segment by config campaigns."""

    __tablename__ = "hooks"
    __table_args__ = (sa.UniqueConstraint("app_id", "key"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    key: Mapped[str] = mapped_column(sa.String(100))
    type: Mapped[str] = mapped_column(sa.String(16))
    default: Mapped[object] = mapped_column(JSONType, nullable=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

