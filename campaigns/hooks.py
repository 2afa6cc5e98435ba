"""Power hooks: typed remote-config keys with defaults, overridden per segment by config campaigns."""

from __future__ import annotations

import math
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.models import Hook
from tidings.errors import ConflictError, InvalidError, NotFoundError
from tidings.models import bump_config_version

HOOK_TYPES = ("string", "number", "boolean", "json")
HOOK_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
MAX_JSON_CHARS = 20_000


def type_problem(hook_type: str, value: Any) -> str | None:
    """Why `value` is not a `hook_type` value, or None when it is."""
    if hook_type == "string":
        ok = isinstance(value, str) and len(value) <= MAX_JSON_CHARS
    elif hook_type == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif hook_type == "boolean":
        ok = isinstance(value, bool)
    else:
        ok = len(repr(value)) <= MAX_JSON_CHARS
    return None if ok else f"must be a {hook_type}" if hook_type != "json" else "is too large"


def list_hooks(session: Session, app_id: int) -> list[Hook]:
    return list(session.scalars(sa.select(Hook).where(Hook.app_id == app_id).order_by(Hook.key)))


def get_hook(session: Session, app_id: int, key: str) -> Hook:
    hook = session.scalar(sa.select(Hook).where(Hook.app_id == app_id, Hook.key == key))
    if hook is None:
        raise NotFoundError(f'no hook "{key}"')
    return hook


def create_hook(session: Session, app_id: int, key: str, hook_type: str, default: Any, description: str = "") -> Hook:
    if not HOOK_KEY.match(key or ""):
        raise InvalidError("a hook key starts with a letter or _ and uses letters, digits, _ . - (max 100)",
                           {"field": "key"})
    if hook_type not in HOOK_TYPES:
        raise InvalidError(f"type must be one of {', '.join(HOOK_TYPES)}", {"field": "type"})
    problem = type_problem(hook_type, default)
    if problem:
        raise InvalidError(f"default {problem}", {"field": "default"})
    if session.scalar(sa.select(Hook.id).where(Hook.app_id == app_id, Hook.key == key)) is not None:
        raise ConflictError(f'a hook "{key}" exists already', {"field": "key"})
    hook = Hook(app_id=app_id, key=key, type=hook_type, default=default, description=description or "")
    session.add(hook)
    session.flush()
    bump_config_version(session, app_id)
    return hook


def update_hook(session: Session, app_id: int, key: str, changes: dict) -> Hook:
    hook = get_hook(session, app_id, key)
    if "type" in changes and changes["type"] != hook.type:
        raise ConflictError("a hook's type cannot change (apps read it typed); create a new key",
                            {"field": "type"})
    if "default" in changes:
        problem = type_problem(hook.type, changes["default"])
        if problem:
            raise InvalidError(f"default {problem}", {"field": "default"})
        hook.default = changes["default"]
    if "description" in changes:
        hook.description = changes["description"] or ""
    session.flush()
    bump_config_version(session, app_id)
    return hook


def check_overrides(session: Session, app_id: int, overrides: dict, where: str) -> None:
    """A config variant's `hooks` must name existing hooks with values of their type (422)."""
    known = {h.key: h for h in list_hooks(session, app_id)}
    for key, value in overrides.items():
        hook = known.get(key)
        if hook is None:
            raise InvalidError(f'{where}.hooks: no hook "{key}" (create it with POST /hooks first)',
                               {"field": f"{where}.hooks.{key}"})
        problem = type_problem(hook.type, value)
        if problem:
            raise InvalidError(f'{where}.hooks.{key} {problem}', {"field": f"{where}.hooks.{key}"})


def overriding_campaigns(session: Session, app_id: int, key: str) -> list:
    """Config campaigns (not ended) whose variants set this hook."""
    from campaigns.models import Campaign, CampaignStatus

    found = []
    for campaign in session.scalars(sa.select(Campaign).where(
            Campaign.app_id == app_id, Campaign.channel == "config",
            Campaign.status.not_in([CampaignStatus.FINISHED, CampaignStatus.CANCELLED]))):
        if any(key in v["content"].get("hooks", {}) for t in campaign.spec["targets"] for v in t["variants"]):
            found.append(campaign)
    return found


def delete_hook(session: Session, app_id: int, key: str) -> None:
    hook = get_hook(session, app_id, key)
    users = overriding_campaigns(session, app_id, key)
    if users:
        raise ConflictError(f'hook "{key}" is overridden by campaign(s) {", ".join(str(c.id) for c in users)}',
                            {"campaigns": [c.id for c in users]})
    session.delete(hook)
    session.flush()
    bump_config_version(session, app_id)
