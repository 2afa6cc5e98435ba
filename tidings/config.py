"""Settings read from the environment (CONTRACT.md), shared by the web app, workers and CLI."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

DEFAULT_INSTANCE = Path(os.environ.get("TIDINGS_INSTANCE_PATH", Path.cwd() / "instance"))


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None
    secret_key: str
    public_base_url: str = "http://127.0.0.1:5000"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    fcm_credentials: str | None = None
    fcm_api_base_url: str = "https://fcm.googleapis.com"
    instance_path: str = str(DEFAULT_INSTANCE)
    production: bool = False
    max_body_bytes: int = 5 * 1024 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    secret_key_generated: bool = False

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: in-process queue and worker (dev/demo only)."""
        return not self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if env is None else env
        instance = overrides.pop("instance_path", None) or env.get("TIDINGS_INSTANCE_PATH") or str(DEFAULT_INSTANCE)
        production = env.get("TIDINGS_ENV", "").lower() == "production"
        secret = env.get("SECRET_KEY")
        generated = False
        if not secret:
            if production:
                raise RuntimeError("SECRET_KEY is required when TIDINGS_ENV=production")
            secret, generated = secrets.token_hex(32), True
        values = dict(
            database_url=normalize_database_url(env.get("DATABASE_URL") or default_sqlite_url(instance)),
            redis_url=env.get("REDIS_URL") or None,
            secret_key=secret,
            secret_key_generated=generated,
            public_base_url=(env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_from=env.get("TWILIO_FROM") or None,
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            twilio_api_base_url=(env.get("TWILIO_API_BASE_URL") or "https://api.twilio.com").rstrip("/"),
            fcm_credentials=env.get("FCM_CREDENTIALS") or None,
            fcm_api_base_url=(env.get("FCM_API_BASE_URL") or "https://fcm.googleapis.com").rstrip("/"),
            instance_path=instance,
            production=production,
        )
        values.update(overrides)
        if "database_url" in overrides:
            values["database_url"] = normalize_database_url(values["database_url"])
        return cls(**values)


def default_sqlite_url(instance_path: str) -> str:
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(instance_path).resolve() / 'tidings.sqlite'}"


def normalize_database_url(url: str) -> str:
    """Map a plain `postgresql://` (or `postgres://`) URL onto the psycopg 3 driver we install."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


PROVIDER_KEYS = ("twilio_account_sid", "twilio_auth_token", "twilio_from", "twilio_messaging_service_sid",
                 "twilio_api_base_url", "fcm_credentials", "fcm_api_base_url")


def provider_config(settings: Settings, app_settings: Mapping | None = None) -> dict:
    """The provider settings in force for one app: the env ones, overridden per app.

    `app_settings` is the app row's `settings` dict; an empty value there does not override.
    `fcm_credentials` is a path to a service-account JSON (env) or, per app, either a path or
    the JSON document itself (saved through the UI).
    """
    config = {key: getattr(settings, key) for key in PROVIDER_KEYS}
    config["public_base_url"] = settings.public_base_url
    for key in PROVIDER_KEYS:
        value = (app_settings or {}).get(key)
        if value:
            config[key] = value
    return config


def sms_configured(config: Mapping) -> bool:
    return bool(config.get("twilio_account_sid") and config.get("twilio_auth_token")
                and (config.get("twilio_from") or config.get("twilio_messaging_service_sid")))


def push_configured(config: Mapping) -> bool:
    return bool(config.get("fcm_credentials"))


_current: Settings | None = None


def set_current(settings: Settings) -> None:
    """Remember the process's settings (for jobs, which get ids, not settings)."""
    global _current
    _current = settings


def current() -> Settings:
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current
