"""Alembic environment: runs against the process-wide engine configured by `tidings db upgrade`."""

from alembic import context

from tidings import db
from tidings.schema import metadata

config = context.config


def run_migrations_online() -> None:
    engine = db.engine if db.engine is not None else db.configure(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported")
run_migrations_online()
