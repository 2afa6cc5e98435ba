"""Schema migrations through Alembic, with the scripts shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from tidings import db

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    db.configure(url)
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    """Developer helper: autogenerate a migration from the models."""
    db.configure(url)
    command.revision(alembic_config(url), message=message, autogenerate=True)
