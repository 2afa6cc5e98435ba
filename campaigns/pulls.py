"""In-app messages and power-hook values that apps pull for one person, now.

Both evaluate the running campaigns' segments in memory on the person's profile and recent
events, over a per-process snapshot of the app's running in-app and config campaigns. The
snapshot is keyed by the app's `config_version` (read together with the API key), so a change
to any campaign or hook reaches every process on its next request. A person's first pull of a
campaign records their delivery (or, in control, their exposure) once; later pulls only read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.models import Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryStatus, Hook, Interaction
from campaigns.service import render_for
from campaigns.targeting import Arm, CompiledCampaign
from campaigns.templates import RenderError
from segments.models import User
from segments.query import Profile, compile_predicate, load_profile
from segments.query.ast import Or
from tidings.db import insert_for, utcnow
from tidings.errors import NotFoundError

S = DeliveryStatus
INTERACTIONS = ("impression", "click", "dismiss", "open")
deliveries = Delivery.__table__


@dataclasses.dataclass
class Pulled:
    """One running pulled campaign, compiled, with the key of its standing run."""

    compiled: CompiledCampaign
    run_id: int
    triggered: bool
    expires_hours: dict[str, int | None]  # by variant name (in-app)

    @property
    def id(self) -> int:
        return self.compiled.campaign_id


class Snapshot:
    """The running in-app and config campaigns and the hooks of one app, at one config version."""

    def __init__(self, session: Session, app_id: int, version: int):
        self.app_id, self.version = app_id, version
        running = session.scalars(
            sa.select(Campaign).where(Campaign.app_id == app_id, Campaign.status == CampaignStatus.RUNNING,
                                      Campaign.channel.in_(["inapp", "config"]))
            .order_by(Campaign.launched_at, Campaign.id)).all()
        runs = dict(session.execute(
            sa.select(CampaignRun.campaign_id, sa.func.min(CampaignRun.id))
            .where(CampaignRun.campaign_id.in_([c.id for c in running])).group_by(CampaignRun.campaign_id)).all())
        self.inapp: list[Pulled] = []
        self.config: list[Pulled] = []  # oldest launch first: a later campaign's override wins
        for c in running:
            pulled = Pulled(CompiledCampaign(session, c), runs[c.id], c.spec["schedule"]["type"] == "triggered",
                            {v["name"]: v["content"].get("expires_hours") for t in c.spec["targets"]
                             for v in t["variants"]})
            (self.inapp if c.channel == "inapp" else self.config).append(pulled)
        self.hooks = {h.key: h.default for h in session.scalars(sa.select(Hook).where(Hook.app_id == app_id))}
        nodes = [n for p in self.inapp + self.config for n in p.compiled.nodes()]
        self.query = Or(tuple(nodes))
        self._predicates: tuple[int, dict] | None = None
        self._lock = threading.Lock()

    def predicates(self, now: dt.datetime) -> dict[int, Callable[[Profile], bool]]:
        """Compiled predicates for every node, reused within the same second."""
        second = int(now.timestamp())
        cached = self._predicates
        if cached is not None and cached[0] == second:
            return cached[1]
        compiled = {}
        for p in self.inapp + self.config:
            for node in p.compiled.nodes():
                compiled[id(node)] = compile_predicate(node, now)
        self._predicates = (second, compiled)
        return compiled

    def arm_for(self, pulled: Pulled, profile: Profile, external_id: str, now: dt.datetime) -> Arm | None:
        c, preds = pulled.compiled, self.predicates(now)
        if c.audience is not None and not preds[id(c.audience)](profile):
            return None
        for index, node in enumerate(c.targets):
            if node is None or preds[id(node)](profile):
                return c.split(index, external_id)
        return None


_snapshots: dict[int, Snapshot] = {}
_lock = threading.Lock()


def snapshot(session: Session, app_id: int, version: int) -> Snapshot:
    current = _snapshots.get(app_id)
    if current is not None and current.version == version:
        return current
    with _lock:
        current = _snapshots.get(app_id)
        if current is None or current.version != version:
            current = _snapshots[app_id] = Snapshot(session, app_id, version)
    return current


def _user(session: Session, app_id: int, external_id: str) -> User | None:
    return session.scalar(sa.select(User).where(User.app_id == app_id, User.external_id == external_id))


def _record(session: Session, rows: list[dict]) -> None:
    """Write first-pull deliveries once (a concurrent pull may have written them already)."""
    if rows:
        session.execute(insert_for(session, deliveries).on_conflict_do_nothing(
            index_elements=["campaign_id", "user_id", "dedupe_key"]), rows)


def _new_row(pulled: Pulled, user: User, arm: Arm, content, now: dt.datetime) -> dict:
    return {"app_id": user.app_id, "campaign_id": pulled.id, "run_id": pulled.run_id, "user_id": user.id,
            "dedupe_key": f"run:{pulled.run_id}", "target_index": arm.target_index, "variant": arm.variant,
            "control": arm.control, "status": S.CONTROL if arm.control else S.SENT,
            "reason": "control" if arm.control else None, "content": content, "send_after": now,
            "sent_at": None if arm.control else now, "attempts": 0, "created_at": now, "updated_at": now}


def inapp_messages(session: Session, app_id: int, version: int, external_id: str,
                   now: dt.datetime | None = None) -> list[dict]:
    """What running in-app campaigns hold for this person now (CONTRACT.md shape)."""
    now = now or utcnow()
    snap = snapshot(session, app_id, version)
    user = _user(session, app_id, external_id) if snap.inapp else None
    if user is None:
        return []
    profile = load_profile(session, user, snap.query, now)
    ids = [p.id for p in snap.inapp]
    existing = _deliveries_of(session, user.id, ids)
    dismissed = set(session.scalars(sa.select(Interaction.delivery_id).where(
        Interaction.delivery_id.in_([d.id for d in existing]), Interaction.type == "dismiss"))) if existing else set()
    by_campaign: dict[int, list] = {}
    for d in existing:
        by_campaign.setdefault(d.campaign_id, []).append(d)

    arms = {p.id: snap.arm_for(p, profile, user.external_id, now) for p in snap.inapp}
    new_rows, changed = [], False
    for pulled in snap.inapp:
        arm = arms[pulled.id]
        rows = by_campaign.get(pulled.id, [])
        if pulled.triggered:
            for d in rows:  # sends waiting for their delay: decided at first pull after it
                if d.status == S.PENDING and d.send_after <= now:
                    _settle_triggered(session, pulled, user, d.id, arm, now)
                    changed = True
            continue
        if arm is None or any(d.dedupe_key == f"run:{pulled.run_id}" for d in rows):
            continue
        content = None
        if not arm.control:
            try:
                content = render_for(pulled.compiled, arm, user)
            except RenderError:
                continue  # a bad value for this person: show nothing rather than a broken message
        new_rows.append(_new_row(pulled, user, arm, content, now))
    _record(session, new_rows)
    if new_rows or changed:
        session.flush()
        existing = _deliveries_of(session, user.id, ids)
    live = {p.id: p for p in snap.inapp}
    messages = []
    for d in existing:
        pulled = live[d.campaign_id]
        if d.status not in (S.SENT, S.DELIVERED) or d.id in dismissed or d.content is None:
            continue
        if not pulled.triggered and arms[pulled.id] is None:
            continue  # no longer in the audience
        hours = pulled.expires_hours.get(d.variant)
        expires_at = d.sent_at + dt.timedelta(hours=hours) if hours else None
        if expires_at is not None and expires_at <= now:
            continue
        messages.append({"delivery_id": d.id, "campaign_id": d.campaign_id, "variant": d.variant,
                         "content": d.content, "expires_at": expires_at.isoformat() if expires_at else None})
    return messages


def _deliveries_of(session: Session, user_id: int, campaign_ids: list[int]) -> list[sa.Row]:
    return session.execute(
        sa.select(deliveries.c.id, deliveries.c.campaign_id, deliveries.c.dedupe_key, deliveries.c.status,
                  deliveries.c.variant, deliveries.c.content, deliveries.c.sent_at, deliveries.c.send_after)
        .where(deliveries.c.user_id == user_id, deliveries.c.campaign_id.in_(campaign_ids))
        .order_by(deliveries.c.id)).all()


def _settle_triggered(session: Session, pulled: Pulled, user: User, delivery_id: int, arm: Arm | None,
                      now: dt.datetime) -> None:
    if arm is None:
        session.execute(sa.delete(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.status == S.PENDING))
        return
    content = None
    if not arm.control:
        try:
            content = render_for(pulled.compiled, arm, user)
        except RenderError as exc:
            session.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id).values(
                status=S.FAILED, reason="render_error", error=exc.message, failed_at=now, updated_at=now))
            return
    session.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.status == S.PENDING)
                    .values(status=S.CONTROL if arm.control else S.SENT, control=arm.control,
                            reason="control" if arm.control else None, target_index=arm.target_index,
                            variant=arm.variant, content=content, sent_at=None if arm.control else now,
                            updated_at=now))


def hook_values(session: Session, app_id: int, version: int, external_id: str,
                now: dt.datetime | None = None) -> dict:
    """Every hook's value for this person and the campaign arms that set them."""
    now = now or utcnow()
    snap = snapshot(session, app_id, version)
    values = dict(snap.hooks)
    assignments: list[dict] = []
    if not snap.config:
        return {"hooks": values, "assignments": assignments}
    user = _user(session, app_id, external_id)
    if user is not None:
        profile = load_profile(session, user, snap.query, now)
        recorded = set(session.scalars(sa.select(deliveries.c.campaign_id).where(
            deliveries.c.user_id == user.id, deliveries.c.campaign_id.in_([p.id for p in snap.config]))))
    else:  # not known yet: defaults and segment-free targets only, nothing recorded
        profile, recorded = Profile(), set()
    new_rows = []
    for pulled in snap.config:
        arm = snap.arm_for(pulled, profile, external_id, now)
        if arm is None:
            continue
        content = None
        if not arm.control:
            try:
                content = render_for(pulled.compiled, arm, user or _anonymous(external_id))
            except RenderError:
                continue
            for key, value in content["hooks"].items():
                if key in values:
                    values[key] = value
            assignments.append({"campaign_id": pulled.id, "variant": arm.variant})
        if user is not None and pulled.id not in recorded:
            new_rows.append(_new_row(pulled, user, arm, content, now))
    if new_rows:
        _record(session, new_rows)
    return {"hooks": values, "assignments": assignments}


def _anonymous(external_id: str):
    """A person the app has not told us about yet, for rendering: an id and nothing else."""
    return User(external_id=external_id, attributes={})


def record_interaction(session: Session, app_id: int, delivery_id: int, kind: str, now: dt.datetime | None = None) -> None:
    """impression / click / dismiss / open, once per delivery and type; a repeat changes nothing."""
    owner = session.scalar(sa.select(deliveries.c.app_id).where(deliveries.c.id == delivery_id))
    if owner is None or owner != app_id:
        raise NotFoundError(f"no delivery {delivery_id}")
    table = Interaction.__table__
    session.execute(insert_for(session, table).on_conflict_do_nothing(index_elements=["delivery_id", "type"]),
                    {"app_id": app_id, "delivery_id": delivery_id, "type": kind, "created_at": now or utcnow()})
