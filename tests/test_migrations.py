"""The Alembic migrations build exactly the schema the models describe, on PostgreSQL and SQLite."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tidings import migrate
from tidings.schema import metadata


def diff(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata)
                # the GIN index is PostgreSQL-only (ddl_if), which autogenerate cannot see
                if not (d[0] in ("add_index", "remove_index") and d[1].name == "ix_users_attributes_gin")]


def test_postgresql_schema_matches_models(engine):
    assert diff(engine) == []


def test_sqlite_schema_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    migrate.upgrade(url)
    assert diff(sa.create_engine(url)) == []
