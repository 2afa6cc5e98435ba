"""The Flask app factory: settings, database, queues, and the API, UI and webhook blueprints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, request

import webhooks
from scheduler import queues
from tidings import config as tconfig
from tidings import db
from tidings.config import Settings
from tidings.web import close_session

UPLOAD_ENDPOINTS = {"api.import_users"}


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `config` is a Settings, or overrides of the env-derived settings."""
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env(**dict(config or {}))
    app = Flask("tidings", instance_path=settings.instance_path, instance_relative_config=True)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
        TIDINGS=settings,
    )
    app.json.sort_keys = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import tidings.schema  # noqa: F401  (every model, so foreign keys resolve)

    db.configure(settings.database_url)
    queues.configure(settings.redis_url)
    tconfig.set_current(settings)

    @app.before_request
    def cap_body():
        # JSON bodies are small; only uploads may use the large limit.
        if request.endpoint not in UPLOAD_ENDPOINTS:
            request.max_content_length = settings.max_body_bytes

    app.teardown_appcontext(close_session)

    from tidings import api, limits

    limits.init_app(app, settings.redis_url)
    api.init_app(app)
    from tidings import ui

    ui.init_app(app)
    webhooks.init_app(app)

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    return app


def settings_of(app: Flask) -> Settings:
    return app.config["TIDINGS"]
