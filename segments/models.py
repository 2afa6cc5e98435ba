"""People (an app's end users), their devices and events, segments, and CSV imports."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tidings.db import Base, BigID, JSONType, UTCDateTime, app_fk, utcnow



def user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


class User(Base):
    """One person in one app, known to the app by `external_id`."""

    __tablename__ = "users"
    __table_args__ = (
        sa.UniqueConstraint("app_id", "external_id"),
        sa.Index("ix_users_app_country", "app_id", "country"),
        sa.Index("ix_users_app_phone", "app_id", "phone"),
        sa.Index(
            "ix_users_attributes_gin", "attributes",
            postgresql_using="gin", postgresql_ops={"attributes": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
        # Room on every page, so that moving last_seen_at (no index has it) is a heap-only update.
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    external_id: Mapped[str] = mapped_column(sa.String(255))
    attributes: Mapped[dict] = mapped_column(JSONType, default=dict)
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    language: Mapped[str | None] = mapped_column(sa.String(35))
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    country: Mapped[str | None] = mapped_column(sa.String(2))
    region: Mapped[str | None] = mapped_column(sa.String(128))
    city: Mapped[str | None] = mapped_column(sa.String(128))
    lat: Mapped[float | None] = mapped_column(sa.Float)
    lon: Mapped[float | None] = mapped_column(sa.Float)
    sms_opt_in: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    push_opt_in: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    devices: Mapped[list[Device]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Device.id",
    )


class Device(Base):
    """A device of a user; `device_id` is the app's own id for it, unique within the app."""

    __tablename__ = "devices"
    __table_args__ = (
        sa.UniqueConstraint("app_id", "device_id"),
        sa.Index("ix_devices_user", "user_id"),
        # Device conditions of the segment language, answered by index-only scans.
        sa.Index("ix_devices_app_platform_user", "app_id", "platform", "user_id"),
        sa.Index("ix_devices_app_app_version_user", "app_id", "app_version_key", "user_id"),
        sa.Index("ix_devices_app_os_version_user", "app_id", "os_version_key", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    user_id: Mapped[int] = mapped_column(sa.BigInteger, user_fk())
    device_id: Mapped[str] = mapped_column(sa.String(255))
    platform: Mapped[str | None] = mapped_column(sa.String(16))
    device_type: Mapped[str | None] = mapped_column(sa.String(16))
    os_version: Mapped[str | None] = mapped_column(sa.String(64))
    app_version: Mapped[str | None] = mapped_column(sa.String(64))
    # Sortable forms of the versions (segments.versions.version_key), so SQL compares
    # "3.10.0" > "3.9" the way the in-memory evaluator does.
    os_version_key: Mapped[str | None] = mapped_column(sa.String(200))
    app_version_key: Mapped[str | None] = mapped_column(sa.String(200))
    push_token: Mapped[str | None] = mapped_column(sa.String(4096))
    push_token_valid: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="devices")


class Event(Base):
    """Something a user did. `client_event_id` dedupes SDK retries within an app."""

    __tablename__ = "events"
    __table_args__ = (
        # Only events sent with an id need deduplicating; most have none, so a partial index.
        sa.Index("uq_events_app_client_event_id", "app_id", "client_event_id", unique=True,
                 postgresql_where=sa.text("client_event_id IS NOT NULL"),
                 sqlite_where=sa.text("client_event_id IS NOT NULL")),
        # "did X [>= n times] [in last d]" over the whole audience: an index-only scan.
        sa.Index("ix_events_app_name_time_user", "app_id", "name", "time", "user_id"),
        # One user's history (profile page, in-memory evaluation, erase).
        sa.Index("ix_events_user_name_time", "user_id", "name", "time"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    # No foreign key to apps: an event's app is its user's (migration 0007), and the check
    # would cost every event ingested.
    app_id: Mapped[int] = mapped_column(sa.BigInteger)
    user_id: Mapped[int] = mapped_column(sa.BigInteger, user_fk())
    name: Mapped[str] = mapped_column(sa.String(255))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    properties: Mapped[dict] = mapped_column(JSONType, default=dict)
    client_event_id: Mapped[str | None] = mapped_column(sa.String(255))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRollup(Base):
    """Each person's events of one name, summed up to the rollup mark (segments.rollups).

    "did X" over the whole audience reads these (one row per person) plus the events after
    the mark, instead of every X event ever stored. Written only by the rollup job, never on
    ingest; erase_user deletes a person's rows with them.
    """

    __tablename__ = "event_rollups"
    __table_args__ = (
        sa.PrimaryKeyConstraint("user_id", "name"),
        # "did X [in last d]" and "... and not did X in last d": an index-only range scan over
        # the people who did X, by their last time.
        sa.Index("ix_event_rollups_app_name_last_user", "app_id", "name", "last_at", "user_id"),
    )

    # No foreign keys: checking two per row cost the job about half its time. Rows go
    # with their person through erase_user, which never overlaps a rollup (hold_off_rollups).
    app_id: Mapped[int] = mapped_column(sa.BigInteger)
    user_id: Mapped[int] = mapped_column(sa.BigInteger)
    name: Mapped[str] = mapped_column(sa.String(255))
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(sa.BigInteger)


class EventRollupMark(Base):
    """The one row saying how far event_rollups reach: every event with id <= upto is in them."""

    __tablename__ = "event_rollup_marks"

    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, autoincrement=False)
    upto: Mapped[int] = mapped_column(sa.BigInteger)
    rolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Segment(Base):
    """A named query in the segment language."""

    __tablename__ = "segments"
    __table_args__ = (sa.UniqueConstraint("app_id", "name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    name: Mapped[str] = mapped_column(sa.String(200))
    query: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SmsOptOut(Base):
    """A number that texted STOP. Kept as a hash so it survives erasing the person."""

    __tablename__ = "sms_optouts"
    __table_args__ = (sa.UniqueConstraint("app_id", "phone_hash"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk())
    phone_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class UserImport(Base):
    """A CSV upload of users, processed by an RQ job; its progress and per-row errors."""

    __tablename__ = "user_imports"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    app_id: Mapped[int] = mapped_column(sa.BigInteger, app_fk(), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=ImportStatus.QUEUED)
    filename: Mapped[str] = mapped_column(sa.String(255), default="")
    content: Mapped[bytes | None] = mapped_column(sa.LargeBinary, deferred=True)
    total_rows: Mapped[int | None] = mapped_column(sa.Integer)
    processed_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    imported_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    error_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    errors: Mapped[list] = mapped_column(JSONType, default=list)
    message: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
