"""The `tidings` command (CONTRACT.md "Command line")."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time

import click

from tidings.errors import TidingsError


def _settings():
    from tidings.config import Settings

    return Settings.from_env()


def _init(settings=None):
    """Configure the process-wide engine and queues without building the web app."""
    import tidings.schema  # noqa: F401  (every model, so foreign keys resolve in jobs)
    from scheduler import queues
    from tidings import config, db

    settings = settings or _settings()
    db.configure(settings.database_url)
    queues.configure(settings.redis_url)
    config.set_current(settings)
    return settings


def _fail(exc: TidingsError):
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(2)


@click.group()
def main():
    """Tidings: campaign messaging and targeting."""


@main.group("db")
def db_group():
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade():
    """Create or migrate the schema (Alembic)."""
    from tidings import migrate

    settings = _settings()
    migrate.upgrade(settings.database_url)
    click.echo("database is up to date")


@main.group("apps")
def apps_group():
    """Apps (workspaces) and their keys."""


@apps_group.command("create")
@click.argument("name")
def apps_create(name):
    """Create an app; prints {"app_id", "server_key", "client_key"} once."""
    from tidings.apps import create_app_record
    from tidings.db import session_scope

    _init()
    try:
        with session_scope() as session:
            app, server_key, client_key = create_app_record(session, name)
            app_id = app.id
    except TidingsError as exc:
        _fail(exc)
    click.echo(json.dumps({"app_id": app_id, "server_key": server_key, "client_key": client_key}))


@main.group("users")
def users_group():
    """Marketer logins for the web UI."""


@users_group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "marketer", "viewer"]), required=True)
@click.option("--password", help="at least 8 characters; a random one is printed when omitted")
def users_create(email, role, password):
    """Create a marketer login."""
    from tidings.accounts import create_account
    from tidings.db import session_scope

    _init()
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    try:
        with session_scope() as session:
            account = create_account(session, email, role, password)
            out = {"id": account.id, "email": account.email, "role": account.role}
    except TidingsError as exc:
        _fail(exc)
    if generated:
        out["password"] = password
    click.echo(json.dumps(out))


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=None, type=int, help="gunicorn workers (with REDIS_URL); default 2 x cores")
def serve(host, port, workers):
    """Web UI + API; with no REDIS_URL also an embedded worker and scheduler."""
    from tidings.app import create_app

    settings = _settings()
    if settings.embedded:
        from scheduler import queues, runner

        app = create_app(settings)
        queues.start_embedded_worker()
        runner.start_embedded_scheduler()
        click.echo(f"Tidings (embedded queue, {settings.database_url.split(':')[0]}) on http://{host}:{port}/")
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True, use_reloader=False)
        return
    import os

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers or 2 * (os.cpu_count() or 1))
            self.cfg.set("accesslog", None)

        def load(self):
            app = create_app(settings)
            # What the app holds for its lifetime (modules, compiled queries, schemas) is never
            # garbage: out of the collector's sight, each full collection has a request's
            # objects to walk instead of the whole heap.
            import gc

            gc.freeze()
            return app

    Server().run()


@main.command("worker")
@click.option("--burst", is_flag=True, help="exit when the queues are empty")
def worker(burst):
    """An RQ worker over all of Tidings' queues (needs REDIS_URL)."""
    settings = _settings()
    if settings.embedded:
        click.echo("error: `tidings worker` needs REDIS_URL (without it, `tidings serve` runs an embedded worker)", err=True)
        sys.exit(2)
    _init(settings)
    from scheduler import queues

    queues.make_worker().work(burst=burst, with_scheduler=False, logging_level="INFO")


@main.command("scheduler")
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--interval", default=5.0, show_default=True, help="seconds between passes")
def scheduler_cmd(once, interval):
    """Start due campaign runs and re-queue stuck work (safe to run twice)."""
    _init()
    from scheduler import runner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    while True:
        runner.tick()
        if once:
            return
        time.sleep(interval)


@main.group("events")
def events_group():
    """Stored events."""


@events_group.command("rollup")
def events_rollup():
    """Sum every event stored so far into the event rollups (the scheduler does it each minute;
    run this once after an upgrade that added them, so the first minutes need not catch up)."""
    _init()
    from segments import rollups
    from tidings.db import get_engine

    engine = get_engine()
    if engine.dialect.name != "postgresql":
        click.echo(json.dumps({"upto": None, "events": 0, "note": "rollups are PostgreSQL-only"}))
        return
    result = rollups.roll_up(engine)
    if result["upto"] is None:
        click.echo("error: event inserts did not pause for the rollup; try again", err=True)
        sys.exit(1)
    click.echo(json.dumps(result))


@main.command("demo")
@click.option("--users", default=2000, show_default=True)
def demo(users):
    """Load a demo app with users, events, segments, campaigns and hooks."""
    from tidings import migrate
    from tidings.db import session_scope
    from tidings.demo import DEMO_LOGIN, load_demo

    settings = _settings()
    migrate.upgrade(settings.database_url)
    _init(settings)
    with session_scope() as session:
        info = load_demo(session, users=users)
    info["login"] = {"email": DEMO_LOGIN[0], "password": DEMO_LOGIN[1]}
    click.echo(json.dumps(info))


if __name__ == "__main__":
    main()
