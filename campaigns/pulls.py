"""In-app messages and power-hook values that apps pull for one person, now.

Both evaluate the running campaigns' segments in memory on the person's profile and recent
events, over a per-process snapshot of the app's running in-app and config campaigns. The
snapshot is keyed by the app's `config_version` (read together with the API key), so a change
to any campaign or hook reaches every process on its next request. A person's first pull of a
campaign records their delivery (or, in control, their exposure) once; later pulls only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Callable

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Hook,
    Interaction,
)
from campaigns.service import render_for
from campaigns.targeting import Arm, CompiledCampaign
from campaigns.templates import RenderError
from segments.models import User
from segments.query import Profile, compile_predicate, load_profile
from segments.query.ast import Or
from segments.query.fields import window_start
from segments.query.memory import DeviceView, EventView, event_windows
from tidings.db import insert_for, utcnow
from tidings.errors import NotFoundError

S = DeliveryStatus
MAX_KEPT_ARMS = 20_000  # people whose splits a snapshot keeps (under 1 kB each)
INTERACTIONS = ("impression", "click", "dismiss", "open")
deliveries = Delivery.__table__


@dataclasses.dataclass
class Pulled:
    """One running pulled campaign, compiled, with the key of its standing run."""

    compiled: CompiledCampaign
    run_id: int
    triggered: bool
    expires_hours: dict[str, int | None]  # by variant name (in-app)
    # Content without template syntax, rendered once, by (target index, variant): the same for
    # everyone (config campaigns only: their content is read, never changed, once rendered).
    constant: dict[tuple[int, str], dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = self.compiled.campaign_id
        self.run_key = f"run:{self.run_id}"  # the dedupe key of its deliveries


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
        for pulled in self.config:
            for index, contents in enumerate(pulled.compiled.contents):
                for variant, content in contents.items():
                    if content.constant:
                        with contextlib.suppress(RenderError):  # a pull renders it again, and fails
                            pulled.constant[index, variant] = content.render({})
        self.ids = {"inapp": [p.id for p in self.inapp], "config": [p.id for p in self.config]}
        self.position = {p.id: i for i, p in enumerate(self.inapp)}  # in-app campaign id -> index
        self.hooks = {h.key: h.default for h in session.scalars(sa.select(Hook).where(Hook.app_id == app_id))}
        nodes = [n for p in self.inapp + self.config for n in p.compiled.nodes()]
        self.query = Or(tuple(nodes))
        self.windows = sorted(event_windows(self.query).items())  # the events the segments look at
        # Campaigns often target the same segments: equal conditions share one slot, evaluated
        # once per pull.
        self._distinct: list = []
        self._slot: dict[int, int] = {}
        slots: dict = {}
        for node in nodes:
            if node not in slots:
                slots[node] = len(self._distinct)
                self._distinct.append(node)
            self._slot[id(node)] = slots[node]
        self._predicates: tuple[int, list] | None = None
        self._arms: dict[tuple, tuple[Arm | None, ...]] = {}
        self._names_literal = _array_literal(name for name, _ in self.windows)
        self._ids_literal = {kind: _array_literal(ids) for kind, ids in self.ids.items()}

    def predicates(self, now: dt.datetime) -> list[Callable[[Profile], bool]]:
        """A compiled predicate per distinct condition, reused within the same second."""
        second = int(now.timestamp())
        cached = self._predicates
        if cached is not None and cached[0] == second:
            return cached[1]
        compiled = [compile_predicate(node, now) for node in self._distinct]
        self._predicates = (second, compiled)
        return compiled

    def choices(self, pulled: list[Pulled], profile: Profile, now: dt.datetime) -> tuple[int | None, ...]:
        """Each campaign's target for this person, in `pulled` order: the index of the first
        target whose segment matches, None when outside the audience or every target."""
        preds, slot, seen = self.predicates(now), self._slot, {}

        def matches(node) -> bool:
            index = slot[id(node)]
            found = seen.get(index)
            if found is None:
                found = seen[index] = preds[index](profile)
            return found

        out: list[int | None] = []
        for p in pulled:
            c, choice = p.compiled, None
            if c.audience is None or matches(c.audience):
                for index, node in enumerate(c.targets):
                    if node is None or matches(node):
                        choice = index
                        break
            out.append(choice)
        return tuple(out)

    def arms(self, pulled: list[Pulled], choices: tuple[int | None, ...], external_id: str) -> tuple[Arm | None, ...]:
        """The arm of each chosen target (see `choices`) for this person. Splits are hashes of
        the person's id, the same on every pull of this snapshot: the last people's are kept."""
        key = (id(pulled), external_id, choices)
        arms = self._arms.get(key)
        if arms is None:
            arms = tuple(None if index is None else p.compiled.split(index, external_id)
                         for p, index in zip(pulled, choices))
            if len(self._arms) >= MAX_KEPT_ARMS:
                self._arms.clear()
            self._arms[key] = arms
        return arms

    def params(self, kind: str, external_id: str, now: dt.datetime) -> dict:
        """`_person_params` for this snapshot's `kind` ("inapp" or "config") campaigns, the
        constant arrays written once."""
        return {"app_id": self.app_id, "external_id": external_id, "names": self._names_literal,
                "cutoffs": _cutoffs_literal(self.windows, now), "campaigns": self._ids_literal[kind]}


def _array_literal(values) -> str:
    """A PostgreSQL array literal of `values` (their text, each quoted)."""
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{q}"' for q in quoted) + "}"


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


# -- one person, read once per pull ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """A delivery the person already has of one of the pulled campaigns."""

    id: int
    campaign_id: int
    dedupe_key: str
    status: str
    variant: str | None
    content: dict | str | None  # str: the JSON text itself (read for the fast path, see read_only_pull)
    sent_at: dt.datetime | None
    send_after: dt.datetime
    dismissed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Person:
    """One person as a pull sees them: fields for templates, the profile segments see, what they hold."""

    id: int
    app_id: int
    external_id: str
    attributes: dict
    language: str | None
    country: str | None
    region: str | None
    city: str | None
    timezone: str | None
    profile: Profile
    held: tuple[Held, ...]  # empty unless loaded `with_deliveries`
    recorded: frozenset[int]  # the campaigns (of those asked about) they have a delivery of


def load_person(session: Session, snap: Snapshot, external_id: str, campaign_ids: list[int],
                now: dt.datetime, with_deliveries: bool = True) -> Person | None:
    """The person, their devices, the events the snapshot's segments look at, and their deliveries
    of `campaign_ids` (or only which of them they have one of): on PostgreSQL in one round trip,
    elsewhere through the ORM (tests check the two agree)."""
    if session.get_bind().dialect.name == "postgresql":
        return _load_person_pg(session, snap, external_id, campaign_ids, now, with_deliveries)
    return _load_person_orm(session, snap, external_id, campaign_ids, now, with_deliveries)


def _load_person_orm(session: Session, snap: Snapshot, external_id: str, campaign_ids: list[int],
                     now: dt.datetime, with_deliveries: bool = True) -> Person | None:
    user = session.scalar(sa.select(User).where(User.app_id == snap.app_id, User.external_id == external_id))
    if user is None:
        return None
    profile = load_profile(session, user, snap.query, now)
    if with_deliveries:
        held = _held(session, user.id, campaign_ids)
        recorded = frozenset(d.campaign_id for d in held)
    else:
        held, recorded = (), frozenset(session.scalars(sa.select(deliveries.c.campaign_id).where(
            deliveries.c.user_id == user.id, deliveries.c.campaign_id.in_(campaign_ids))))
    return Person(user.id, user.app_id, user.external_id, user.attributes or {}, user.language, user.country,
                  user.region, user.city, user.timezone, profile, held, recorded)


def _held(session: Session, user_id: int, campaign_ids: list[int]) -> tuple[Held, ...]:
    interactions = Interaction.__table__
    dismissed = sa.exists().where(interactions.c.delivery_id == deliveries.c.id, interactions.c.type == "dismiss")
    return tuple(Held(*row) for row in session.execute(
        sa.select(deliveries.c.id, deliveries.c.campaign_id, deliveries.c.dedupe_key, deliveries.c.status,
                  deliveries.c.variant, deliveries.c.content, deliveries.c.sent_at, deliveries.c.send_after,
                  dismissed)
        .where(deliveries.c.user_id == user_id, deliveries.c.campaign_id.in_(campaign_ids))
        .order_by(deliveries.c.id)))


# Devices, events and deliveries come back as JSON arrays, timestamps as UTC ISO text. Only
# bind parameters: the event windows are arrays of names and earliest times.
_PERSON_COLUMNS = """
       u.id, u.attributes, u.language, u.timezone, u.country, u.region, u.city, u.lat, u.lon,
       u.sms_opt_in, u.push_opt_in, u.created_at, u.last_seen_at,
       (SELECT json_agg(json_build_array(d.platform, d.device_type, d.os_version, d.app_version,
                                         d.os_version_key, d.app_version_key) ORDER BY d.id)
          FROM devices d WHERE d.user_id = u.id),
       (SELECT json_agg(json_build_array(e.name, e.time AT TIME ZONE 'UTC', e.properties) ORDER BY e.time, e.id)
          FROM unnest(%(names)s::text[], %(cutoffs)s::timestamptz[]) AS w(name, cutoff)
          JOIN events e ON e.user_id = u.id AND e.app_id = u.app_id AND e.name = w.name
                       AND e.time >= w.cutoff),
"""
# In-app pulls read the person's deliveries of the campaigns, their content as JSON text apart
# (joined by RS, which JSON text never holds unescaped): the fast path passes it on unparsed.
_HELD = """
       h.held, h.contents"""
_HELD_JOIN = """
  LEFT JOIN LATERAL (
       SELECT json_agg(json_build_array(dl.id, dl.campaign_id, dl.dedupe_key, dl.status, dl.variant,
                                        dl.sent_at AT TIME ZONE 'UTC', dl.send_after AT TIME ZONE 'UTC',
                                        EXISTS (SELECT 1 FROM interactions i
                                                 WHERE i.delivery_id = dl.id AND i.type = 'dismiss'))
                       ORDER BY dl.id) AS held,
              string_agg(coalesce(dl.content::text, 'null'), E'\\x1e' ORDER BY dl.id) AS contents
         FROM deliveries dl WHERE dl.user_id = u.id AND dl.campaign_id = ANY(%(campaigns)s::bigint[])) h ON true"""
# Hook pulls only ask which campaigns the person has a delivery of: an index-only scan.
_RECORDED = """
       (SELECT array_agg(DISTINCT dl.campaign_id)
          FROM deliveries dl WHERE dl.user_id = u.id AND dl.campaign_id = ANY(%(campaigns)s::bigint[]))"""
# By `with_deliveries`.
_PERSON_SQL = {full: f"""SELECT {_PERSON_COLUMNS} {_HELD if full else _RECORDED}
  FROM users u {_HELD_JOIN if full else ""}
 WHERE u.app_id = %(app_id)s AND u.external_id = %(external_id)s""" for full in (True, False)}
# The read-only fast path (see read_only_pull): the same, with the app's config version, and only
# while the caller's key is still one of the app's keys.
_KEYED_PERSON_SQL = {full: f"""SELECT a.config_version, {_PERSON_COLUMNS} {_HELD if full else _RECORDED}
  FROM apps a LEFT JOIN users u ON u.app_id = a.id AND u.external_id = %(external_id)s {_HELD_JOIN if full else ""}
 WHERE a.id = %(app_id)s AND (a.client_key_hash = %(digest)s OR a.server_key_hash = %(digest)s)"""
                     for full in (True, False)}


def _utc(text: str | None) -> dt.datetime | None:
    """A UTC time PostgreSQL wrote as text (`AT TIME ZONE 'UTC'`), aware."""
    return None if text is None else dt.datetime.fromisoformat(text + "+00:00")  # cheaper than replace(tzinfo=)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def _load_person_pg(session: Session, snap: Snapshot, external_id: str, campaign_ids: list[int],
                    now: dt.datetime, with_deliveries: bool = True) -> Person | None:
    row = session.connection().exec_driver_sql(
        _PERSON_SQL[with_deliveries], _person_params(snap, external_id, campaign_ids, now)).first()
    return None if row is None else _person(snap, external_id, row, with_deliveries)


def _person_params(snap: Snapshot, external_id: str, campaign_ids: list[int], now: dt.datetime) -> dict:
    """The bind parameters of `_PERSON_SQL`. Arrays go as PostgreSQL array literals (text), which
    the driver sends as they are instead of encoding them element by element."""
    return {"app_id": snap.app_id, "external_id": external_id,
            "names": _array_literal(name for name, _ in snap.windows), "cutoffs": _cutoffs_literal(snap.windows, now),
            "campaigns": _array_literal(campaign_ids)}


def _cutoffs_literal(windows: list, now: dt.datetime) -> str:
    return "{" + ",".join(f'"{window_start(now, window).isoformat()}"' for _, window in windows) + "}"


def _person(snap: Snapshot, external_id: str, row, with_deliveries: bool, raw: bool = False) -> Person | None:
    """The Person of a `_PERSON_SQL` row. `raw`: deliveries keep their content as JSON text."""
    if row[0] is None:
        return None
    (user_id, attributes, language, timezone, country, region, city, lat, lon, sms_opt_in, push_opt_in,
     created_at, last_seen_at, devices, events, *held) = row
    attributes = attributes if attributes is not None else {}
    profile = Profile(
        attributes=attributes, language=language, timezone=timezone, country=country, region=region, city=city,
        lat=lat, lon=lon, sms_opt_in=sms_opt_in, push_opt_in=push_opt_in, created_at=_aware(created_at),
        last_seen_at=_aware(last_seen_at), id=user_id,
        devices=tuple(DeviceView(*d) for d in devices or ()),
        events=tuple(EventView(name, _utc(time), props if props is not None else {}) for name, time, props in events or ()),
    )
    if with_deliveries:
        meta, contents = held
        contents = contents.split("\x1e") if contents is not None else ()
        held = tuple(Held(i, c, k, st, v, _content(text, raw), _utc(sent), _utc(after), dismissed)
                     for (i, c, k, st, v, sent, after, dismissed), text in zip(meta or (), contents, strict=True))
        recorded = frozenset(d.campaign_id for d in held)
    else:
        held, recorded = (), frozenset(held[0] or ())
    return Person(user_id, snap.app_id, external_id, attributes, language, country, region, city, timezone, profile,
                  held, recorded)


def _content(text: str, raw: bool):
    if text == "null":
        return None
    return text if raw else json.loads(text)


def _record(session: Session, rows: list[dict]) -> None:
    """Write first-pull deliveries once (a concurrent pull may have written them already)."""
    if rows:
        session.execute(insert_for(session, deliveries).on_conflict_do_nothing(
            index_elements=["campaign_id", "user_id", "dedupe_key"]), rows)


def _new_row(pulled: Pulled, user: Person, arm: Arm, content, now: dt.datetime) -> dict:
    return {"app_id": user.app_id, "campaign_id": pulled.id, "run_id": pulled.run_id, "user_id": user.id,
            "dedupe_key": pulled.run_key, "target_index": arm.target_index, "variant": arm.variant,
            "control": arm.control, "status": S.CONTROL if arm.control else S.SENT,
            "reason": "control" if arm.control else None, "content": content, "send_after": now,
            "sent_at": None if arm.control else now, "attempts": 0, "created_at": now, "updated_at": now}


def inapp_messages(session: Session, app_id: int, version: int, external_id: str,
                   now: dt.datetime | None = None) -> list[dict]:
    """What running in-app campaigns hold for this person now (CONTRACT.md shape)."""
    now = now or utcnow()
    snap = snapshot(session, app_id, version)
    if not snap.inapp:
        return []
    ids = snap.ids["inapp"]
    person = load_person(session, snap, external_id, ids, now)
    if person is None:
        return []
    choices, new_rows, due = _inapp_plan(snap, person, now)
    for pulled, delivery_id, arm in due:
        _settle_triggered(session, pulled, person, delivery_id, arm, now)
    _record(session, new_rows)
    held = person.held
    if new_rows or due:
        session.flush()
        held = _held(session, person.id, ids)
    return _inapp_shown(snap, held, choices, now)


def _inapp_plan(snap: Snapshot, person: Person, now: dt.datetime):
    """(target chosen per campaign, first-pull rows to record, triggered sends now due to settle).
    A person's split is only worked out for what it decides: a first pull or a due send."""
    standing, waiting = set(), {}
    for d in person.held:
        standing.add((d.campaign_id, d.dedupe_key))
        if d.status == S.PENDING and d.send_after <= now:
            waiting.setdefault(d.campaign_id, []).append(d.id)
    choices = snap.choices(snap.inapp, person.profile, now)
    new_rows, due = [], []
    for pulled, index in zip(snap.inapp, choices):
        if pulled.triggered:  # sends waiting for their delay: decided at the first pull after it
            if pulled.id in waiting:
                arm = None if index is None else pulled.compiled.split(index, person.external_id)
                due += [(pulled, delivery_id, arm) for delivery_id in waiting[pulled.id]]
            continue
        if index is None or (pulled.id, pulled.run_key) in standing:
            continue
        arm = pulled.compiled.split(index, person.external_id)
        content = None
        if not arm.control:
            try:
                content = render_for(pulled.compiled, arm, person)
            except RenderError:
                continue  # a bad value for this person: show nothing rather than a broken message
        new_rows.append(_new_row(pulled, person, arm, content, now))
    return choices, new_rows, due


def _inapp_shown(snap: Snapshot, held: tuple[Held, ...], choices: tuple[int | None, ...],
                 now: dt.datetime) -> list[dict]:
    messages = []
    for d in held:
        if d.status not in (S.SENT, S.DELIVERED) or d.dismissed or d.content is None:
            continue
        position = snap.position[d.campaign_id]
        pulled = snap.inapp[position]
        if not pulled.triggered and choices[position] is None:
            continue  # no longer in the audience
        hours = pulled.expires_hours.get(d.variant)
        expires_at = d.sent_at + dt.timedelta(hours=hours) if hours else None
        if expires_at is not None and expires_at <= now:
            continue
        messages.append({"delivery_id": d.id, "campaign_id": d.campaign_id, "variant": d.variant,
                         "content": d.content, "expires_at": expires_at.isoformat() if expires_at else None})
    return messages


def _settle_triggered(session: Session, pulled: Pulled, user: Person, delivery_id: int, arm: Arm | None,
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
    person = (load_person(session, snap, external_id, snap.ids["config"], now, with_deliveries=False)
              if snap.config else None)
    values, new_rows = _hooks_plan(snap, person, external_id, now)
    _record(session, new_rows)
    return values


def _hooks_plan(snap: Snapshot, person: Person | None, external_id: str, now: dt.datetime) -> tuple[dict, list[dict]]:
    """(the pull's answer, first-pull rows to record)."""
    values = dict(snap.hooks)
    assignments: list[dict] = []
    if person is not None:
        profile, recorded = person.profile, person.recorded
    else:  # not known yet: defaults and segment-free targets only, nothing recorded
        profile, recorded = Profile(), set()
    new_rows = []
    arms = snap.arms(snap.config, snap.choices(snap.config, profile, now), external_id)
    for pulled, arm in zip(snap.config, arms):
        if arm is None:
            continue
        content = None
        if not arm.control:
            content = pulled.constant.get((arm.target_index, arm.variant))
            if content is None:
                try:
                    content = render_for(pulled.compiled, arm, person or _anonymous(external_id))
                except RenderError:
                    continue
            for key, value in content["hooks"].items():
                if key in values:
                    values[key] = value
            assignments.append({"campaign_id": pulled.id, "variant": arm.variant})
        if person is not None and pulled.id not in recorded:
            new_rows.append(_new_row(pulled, person, arm, content, now))
    return {"hooks": values, "assignments": assignments}, new_rows


def read_only_pull(cursor, kind: str, app_id: int, key_digest: str, external_id: str,
                   now: dt.datetime | None = None) -> dict | None:
    """The answer of a pull (`kind` "inapp" or "hooks") that writes nothing, in one statement on a
    PostgreSQL driver `cursor`; None when the pull must go the full way (`inapp_messages` /
    `hook_values`, the authority): no snapshot of the app in this process yet, the app's config
    changed since, the key is no longer one of the app's, or the pull would record a delivery or
    settle a triggered send. Whatever it answers, the full way would have answered too; messages'
    content comes as `orjson.Fragment`s of its JSON text, for `orjson.dumps`."""
    now = now or utcnow()
    snap = _snapshots.get(app_id)
    if snap is None:
        return None
    params = snap.params("inapp" if kind == "inapp" else "config", external_id, now)
    params["digest"] = key_digest
    full = kind == "inapp"
    cursor.execute(_KEYED_PERSON_SQL[full], params, prepare=True)
    row = cursor.fetchone()
    if row is None or row[0] != snap.version:
        return None
    person = _person(snap, external_id, row[1:], full, raw=True)
    if kind == "hooks":
        values, new_rows = _hooks_plan(snap, person if snap.config else None, external_id, now)
        return None if new_rows else values
    if person is None or not snap.inapp:
        return {"messages": []}
    choices, new_rows, due = _inapp_plan(snap, person, now)
    if new_rows or due:
        return None
    messages = _inapp_shown(snap, person.held, choices, now)
    for message in messages:  # content stays the JSON text PostgreSQL wrote
        message["content"] = orjson.Fragment(message["content"])
    return {"messages": messages}


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
