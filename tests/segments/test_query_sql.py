"""The SQL compiler, construct by construct, on PostgreSQL with hand-made people (and SQLite)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from tidings import db
from tidings.schema import metadata


def sqlite_engine(path: Path) -> sa.Engine:
    """A separate SQLite database with the whole schema (leaves the process-wide engine be)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", db._sqlite_on_connect)
    metadata.create_all(engine)
    return engine
