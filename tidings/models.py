"""Workspace-level rows the shell owns: apps (with their API keys) and marketer accounts."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db import Base, BigID, JSONType, UTCDateTime, utcnow


class KeyKind(enum.StrEnum):
    SERVER = "server"
    CLIENT = "client"


def hash_key(key: str) -> str:
    """API keys are 256-bit random strings, so a plain SHA-256 is a safe, fast lookup hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_digest(header: str) -> str | None:
    """`hash_key` of the key in an `Authorization: Bearer <key>` header; None without one."""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    return hash_key(key) if scheme.lower() == "bearer" and key else None


def new_key(kind: KeyKind) -> str:
    prefix = "tds_sk_" if kind is KeyKind.SERVER else "tds_ck_"
    return prefix + secrets.token_urlsafe(32)


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    server_key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    client_key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    server_key_hint: Mapped[str] = mapped_column(sa.String(16))
    client_key_hint: Mapped[str] = mapped_column(sa.String(16))
    # Per-app provider settings overriding the env ones (twilio_*, fcm_*); secrets write-only.
    settings: Mapped[dict] = mapped_column(JSONType, default=dict)
    # Bumped with every change to the app's campaigns or hooks: pull endpoints keep a snapshot of
    # the running campaigns per process and reload it when this moves (read with the key).
    config_version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def rotate_key(self, kind: KeyKind) -> str:
        """Replace one key; returns the new plain key (shown once, never stored)."""
        key = new_key(kind)
        if kind is KeyKind.SERVER:
            self.server_key_hash, self.server_key_hint = hash_key(key), key[-4:]
        else:
            self.client_key_hash, self.client_key_hint = hash_key(key), key[-4:]
        return key


class Role(enum.StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    VIEWER = "viewer"


class Account(Base):
    """A marketer login for the web UI (not an app's end user)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def bump_config_version(session, app_id: int) -> None:
    """Invalidate every process's snapshot of this app's running campaigns and hooks."""
    session.execute(sa.update(App).where(App.id == app_id).values(config_version=App.config_version + 1))
