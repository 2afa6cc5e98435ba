"""People services: upsert users and devices, ingest events, erase a person.

Batches are applied with a handful of set-based statements (one SELECT ... FOR UPDATE, one
multi-row INSERT ... ON CONFLICT, one executemany UPDATE) rather than row-by-row ORM work, so
a 1,000-user batch or a CSV chunk costs a few round trips. Callers validate with
`segments.schemas` first and own the transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from segments.models import Device, Event, EventRollup, SmsOptOut, User
from segments.rollups import hold_off_rollups
from segments.versions import version_key
from tidings.db import bulk_insert, bulk_update, insert_for, one_of, utcnow
from tidings.errors import NotFoundError

PROFILE_FIELDS = ("phone", "language", "timezone", "country", "region", "city", "lat", "lon",
                  "sms_opt_in", "push_opt_in")
DEVICE_FIELDS = ("platform", "device_type", "os_version", "app_version", "push_token")
USER_DEFAULTS = {"sms_opt_in": False, "push_opt_in": True}

users = User.__table__
devices = Device.__table__
events = Event.__table__
rollups = EventRollup.__table__
optouts = SmsOptOut.__table__


def phone_hash(app_id: int, phone: str) -> str:
    return hashlib.sha256(f"{app_id}:{phone}".encode()).hexdigest()


def _fold(changes: Iterable[tuple[str, dict]]) -> dict[str, dict]:
    """Combine repeated external ids of one batch in order, as if applied one after another."""
    folded: dict[str, dict] = {}
    for external_id, data in changes:
        current = folded.setdefault(external_id, {})
        for key, value in data.items():
            if key == "attributes":
                current.setdefault("attributes", {}).update(value)
            elif key == "devices":
                merged = {d["id"]: d for d in current.get("devices", [])}
                for device in value:
                    merged[device["id"]] = {**merged.get(device["id"], {}), **device}
                current["devices"] = list(merged.values())
            else:
                current[key] = value
    return folded


def _merge_attributes(old: dict | None, changes: dict | None) -> dict:
    merged = dict(old or {})
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _lock_existing(session: Session, app_id: int, external_ids: Sequence[str]) -> dict[str, sa.Row]:
    rows = session.execute(
        sa.select(users.c.id, users.c.external_id, users.c.attributes, *(users.c[f] for f in PROFILE_FIELDS))
        .where(users.c.app_id == app_id, one_of(session, users.c.external_id, external_ids))
        .order_by(users.c.id)
        .with_for_update()
    )
    return {row.external_id: row for row in rows}


def upsert_users(session: Session, app_id: int, changes: Iterable[tuple[str, dict]],
                 now: dt.datetime | None = None) -> dict[str, tuple[int, bool]]:
    """Create or update users; returns external_id -> (user id, created)."""
    now = now or utcnow()
    folded = _fold(changes)
    if not folded:
        return {}
    existing = _lock_existing(session, app_id, list(folded))
    result: dict[str, tuple[int, bool]] = {}

    new_rows = []
    for external_id, data in folded.items():
        if external_id in existing:
            continue
        row = {"app_id": app_id, "external_id": external_id, "created_at": now, "updated_at": now,
               "last_seen_at": None, **USER_DEFAULTS}
        row.update({f: data.get(f, row.get(f)) for f in PROFILE_FIELDS})
        row["attributes"] = _merge_attributes({}, data.get("attributes"))
        new_rows.append(row)
    if new_rows:
        inserted = bulk_insert(session, users, new_rows, conflict=["app_id", "external_id"],
                               returning=(users.c.id, users.c.external_id))
        for row in inserted:
            result[row.external_id] = (row.id, True)
        lost = [r["external_id"] for r in new_rows if r["external_id"] not in result]
        if lost:  # created concurrently by another request: apply ours as an update
            existing.update(_lock_existing(session, app_id, lost))

    updates = []
    for external_id, row in existing.items():
        data = folded[external_id]
        values = {f: data.get(f, getattr(row, f)) for f in PROFILE_FIELDS}
        values["attributes"] = _merge_attributes(row.attributes, data.get("attributes"))
        values["id"] = row.id
        updates.append(values)
        result[external_id] = (row.id, False)
    bulk_update(session, users, updates, values={"updated_at": now})

    device_changes = [(result[ext][0], d) for ext, data in folded.items() for d in data.get("devices", ())]
    if device_changes:
        upsert_devices(session, app_id, device_changes, now)
    return result


@dataclass(frozen=True)
class StagedProfiles:
    """Loaded profile changes folded by user and written out as COPY rows, for `upsert_profiles`.

    Made by `stage_profiles` where the rows are validated (the CSV import's helper processes),
    so that the process writing them only sends them on.
    """

    users: int  # distinct external ids, one row each
    rows: str  # COPY text format, the columns of `_staging`


def stage_profiles(changes: Iterable[tuple[str, dict]]) -> StagedProfiles | None:
    """The changes ready for `upsert_profiles` on PostgreSQL, or None when they are not plain profile values.

    Plain: no devices, no nulls (an empty cell leaves a field as it is). A repeated external id is
    folded into one row, applied in order as `_fold` does.
    """
    folded: dict[str, dict] = {}
    for external_id, data in changes:
        if "devices" in data or None in data.values() or None in data.get("attributes", {}).values():
            return None
        old = folded.get(external_id)
        if old is None:
            folded[external_id] = data
        else:  # repeated in the batch: applied in order, as `_fold` does
            merged = {**old, **data}
            if "attributes" in old and "attributes" in data:
                merged["attributes"] = {**old["attributes"], **data["attributes"]}
            folded[external_id] = merged
    return StagedProfiles(len(folded), _copy_rows(folded))


_TEXT_FIELDS = ("phone", "language", "timezone", "country", "region", "city")
_NULL = "\\N"
_TEXT_NULLS = (_NULL,) * len(_TEXT_FIELDS)
_BOOL_CELLS = {True: "t", False: "f", None: _NULL}
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")  # what COPY's text format escapes
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _copy_rows(folded: dict[str, dict]) -> str:
    """COPY text rows, columns of `_staging`; an absent field is NULL.

    Costs a few microseconds a row: the texts are checked for characters to escape all at once
    (they seldom hold any) and the attributes are encoded as one JSON array, cut back into objects.
    """
    datas = list(folded.values())
    texts = "".join(itertools.chain(folded, *(filter(None, map(dict.get, datas, itertools.repeat(field)))
                                             for field in _TEXT_FIELDS)))
    attributes = _json_objects([d.get("attributes") or {} for d in datas])
    lines = []
    if _COPY_SPECIAL.search(texts) is None:  # as they are
        for (external_id, data), attrs in zip(folded.items(), attributes, strict=True):
            get = data.get
            lat, lon = get("lat"), get("lon")
            lines.append("\t".join((
                external_id, *map(get, _TEXT_FIELDS, _TEXT_NULLS),
                # + 0.0: -0.0 is stored as 0, as it was when these went through a JSONB number
                _NULL if lat is None else repr(lat + 0.0), _NULL if lon is None else repr(lon + 0.0),
                _BOOL_CELLS[get("sms_opt_in")], _BOOL_CELLS[get("push_opt_in")], attrs)))
    else:
        for (external_id, data), attrs in zip(folded.items(), attributes, strict=True):
            get = data.get
            lat, lon = get("lat"), get("lon")
            lines.append("\t".join((
                _copy_text(external_id), *(_NULL if v is None else _copy_text(v) for v in map(get, _TEXT_FIELDS)),
                _NULL if lat is None else repr(lat + 0.0), _NULL if lon is None else repr(lon + 0.0),
                _BOOL_CELLS[get("sms_opt_in")], _BOOL_CELLS[get("push_opt_in")], attrs)))
    lines.append("")
    return "\n".join(lines)


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _json_objects(objects: list[dict]) -> list[str]:
    """JSON of each object, escaped for COPY: one encoder call for all, when the array cuts back exactly."""
    if not objects:
        return []
    array = _JSON.encode(objects)
    # Every boundary between two objects reads "},{"; any other "},{" (inside a string) makes too many pieces.
    pieces = array[2:-2].split("},{")
    if len(pieces) == len(objects):
        encoded = [f"{{{piece}}}" for piece in pieces]
    else:
        encoded = list(map(_JSON.encode, objects))
    return encoded if "\\" not in array else list(map(_copy_text, encoded))  # JSON has no raw tab or newline


def upsert_profiles(session: Session, app_id: int, changes: Sequence[tuple[str, dict]] | StagedProfiles,
                    now: dt.datetime | None = None) -> tuple[int, int]:
    """Create or update users from loaded profile fields that only set values; returns (created, updated).

    The CSV import's shape: no devices, no nulls (an empty cell leaves a field as it is). The
    outcome is that of `upsert_users`, at a fraction of the cost: the rows are COPYed into a
    temporary table, then one statement locks the existing users in id order
    and merges into them inside PostgreSQL (`COALESCE` per field, `||` for attributes) and
    inserts the others, instead of reading them back into Python, merging and writing again.
    `changes` may come already staged (`stage_profiles`). Anything else, or another database,
    goes through `upsert_users`.
    """
    now = now or utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"
    if isinstance(changes, StagedProfiles):
        if not postgres:
            raise ValueError("staged profiles are written by PostgreSQL's COPY only")
        staged = changes
    else:
        staged = stage_profiles(changes) if postgres else None
        if staged is None:
            result = upsert_users(session, app_id, changes, now)
            created = sum(1 for _, was_created in result.values() if was_created)
            return created, len(result) - created
    if not staged.users:
        return 0, 0

    connection = session.connection()
    connection.exec_driver_sql(_staging_ddl())
    with connection.connection.cursor() as cursor, cursor.copy(_STAGING_COPY) as copy:
        copy.write(staged.rows)
    statement = _staged_upsert_statement()
    created = 0
    for _ in range(3):
        inserted, updated = connection.execute(statement, {"for_app": app_id, "at": now}).one()
        created += inserted
        if inserted + updated == staged.users:
            return created, staged.users - created
        # Some users were created by a concurrent request between our look-up and our insert:
        # run again, they are now updated (applying the same values twice changes nothing).
    raise RuntimeError("users kept being created concurrently with a profile upsert")


# Text cells go to their VARCHAR columns by assignment in the statement (too long is an error
# there, not a silent cut), as typed values would from JSON.
_staging = sa.Table(
    "staged_profiles", sa.MetaData(),
    sa.Column("external_id", sa.Text, nullable=False),
    *(sa.Column(f, sa.Text) for f in _TEXT_FIELDS),
    sa.Column("lat", sa.Double), sa.Column("lon", sa.Double),
    sa.Column("sms_opt_in", sa.Boolean), sa.Column("push_opt_in", sa.Boolean),
    sa.Column("attributes", postgresql.JSONB, nullable=False),
    prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS",
)
_STAGING_COPY = f"COPY {_staging.name} ({', '.join(c.name for c in _staging.c)}) FROM STDIN"


@functools.cache
def _staging_ddl() -> str:
    """One staging table per connection, emptied by each commit that used it (and here, for a
    second batch in one transaction). Creating and dropping one per batch left ~20 dead catalog
    rows each time."""
    create = sa.schema.CreateTable(_staging, if_not_exists=True).compile(dialect=postgresql.dialect())
    return f"{create}; DELETE FROM {_staging.name}"


@functools.cache
def _staged_upsert_statement() -> sa.Select:
    source = _staging
    app_id = sa.bindparam("for_app", type_=sa.BigInteger)
    now = sa.bindparam("at", type_=users.c.updated_at.type)
    locked = (sa.select(users.c.id, users.c.external_id)
              .where(users.c.app_id == app_id, users.c.external_id == source.c.external_id)
              .order_by(users.c.id).with_for_update(of=users)  # id order, like `_lock_existing`
              .cte("locked"))
    # An absent field is NULL in the staging table: COALESCE keeps the user's value.
    updated = (sa.update(users)
               .where(users.c.id == locked.c.id, source.c.external_id == locked.c.external_id)
               .values({**{f: sa.func.coalesce(source.c[f], users.c[f]) for f in PROFILE_FIELDS},
                        "attributes": users.c.attributes.op("||")(source.c.attributes), "updated_at": now})
               .returning(users.c.id).cte("updated"))
    values = {"app_id": app_id, "external_id": source.c.external_id,
              **{f: sa.func.coalesce(source.c[f], USER_DEFAULTS[f]) if f in USER_DEFAULTS else source.c[f]
                 for f in PROFILE_FIELDS},
              "attributes": source.c.attributes, "created_at": now, "updated_at": now}
    created = (postgresql.insert(users)
               .from_select(list(values), sa.select(*values.values())
                            .where(~sa.exists().where(locked.c.external_id == source.c.external_id)))
               .on_conflict_do_nothing(index_elements=["app_id", "external_id"])
               .returning(users.c.id).cte("created"))
    return sa.select(sa.select(sa.func.count()).select_from(created).scalar_subquery(),
                     sa.select(sa.func.count()).select_from(updated).scalar_subquery())


def upsert_devices(session: Session, app_id: int, changes: Sequence[tuple[int, dict]], now: dt.datetime) -> None:
    """Upsert devices by the app's device id; a device named by another user moves to that user."""
    ids = [d["id"] for _, d in changes]
    existing = {
        row.device_id: row
        for row in session.execute(
            sa.select(devices).where(devices.c.app_id == app_id, one_of(session, devices.c.device_id, ids))
            .order_by(devices.c.id).with_for_update()
        )
    }
    updates, inserts = [], []
    for user_id, data in changes:
        old = existing.get(data["id"])
        values = {f: data.get(f, getattr(old, f) if old is not None else None) for f in DEVICE_FIELDS}
        values["os_version_key"] = version_key(values["os_version"])
        values["app_version_key"] = version_key(values["app_version"])
        values["user_id"] = user_id
        if old is not None and "push_token" in data and data["push_token"] != old.push_token:
            values["push_token_valid"] = True
        elif old is not None:
            values["push_token_valid"] = old.push_token_valid
        else:
            values["push_token_valid"] = True
        if old is None:
            inserts.append({**values, "app_id": app_id, "device_id": data["id"], "created_at": now, "updated_at": now})
        else:
            updates.append({**values, "id": old.id})
    bulk_update(session, devices, updates, values={"updated_at": now})
    # A device created meanwhile by a concurrent request is updated instead (DO UPDATE).
    bulk_insert(session, devices, inserts, conflict=["app_id", "device_id"],
                update=[*DEVICE_FIELDS, "os_version_key", "app_version_key", "user_id", "push_token_valid", "updated_at"])


def ensure_users(session: Session, app_id: int, external_ids: Iterable[str],
                 now: dt.datetime | None = None) -> dict[str, int]:
    """Ids of these users, creating bare profiles for the unknown ones."""
    now = now or utcnow()
    wanted = sorted(set(external_ids))
    found = dict(session.execute(
        sa.select(users.c.external_id, users.c.id)
        .where(users.c.app_id == app_id, one_of(session, users.c.external_id, wanted))
    ).all())
    missing = [e for e in wanted if e not in found]
    if missing:
        found.update((row.external_id, row.id) for row in bulk_insert(session, users, [
            {"app_id": app_id, "external_id": e, "attributes": {}, "created_at": now, "updated_at": now,
             **USER_DEFAULTS} for e in missing
        ], conflict=["app_id", "external_id"], returning=(users.c.external_id, users.c.id)))
        lost = [e for e in missing if e not in found]
        if lost:  # created concurrently by another request
            found.update(session.execute(
                sa.select(users.c.external_id, users.c.id)
                .where(users.c.app_id == app_id, one_of(session, users.c.external_id, lost))
            ).all())
    return found


EVENT_COLUMNS = ("user_id", "name", "time", "properties", "client_event_id")


def ingest_events(session: Session, app_id: int, batch: Sequence[dict], now: dt.datetime | None = None, *,
                  returning: Collection[str] | None = None) -> list[dict]:
    """Store a validated batch of events; returns the events stored (id, user_id, name, time),
    or only those named in `returning` (what triggered campaigns wait for; most batches need none).

    An event whose client `id` the app already sent (in this batch or before) is not stored again.
    `last_seen_at` of each user moves forward to their newest event.

    On PostgreSQL this is one statement after `ensure_users`: the rows go in as one JSON document,
    and the same statement moves `last_seen_at` from what it inserted (a data-modifying CTE), so
    no event is read back into Python to be sent again.
    """
    now = now or utcnow()
    user_ids = ensure_users(session, app_id, (e["user"] for e in batch), now)
    if session.get_bind().dialect.name != "postgresql":
        stored = _ingest_events_portable(session, app_id, batch, user_ids, now)
        return stored if returning is None else [e for e in stored if e["name"] in returning]
    received = now.isoformat()  # formatted here, once, rather than per row by the JSON encoder
    rows = []
    for e in _first_of_each_client_id(batch):
        when = e.get("time")
        rows.append({"user_id": user_ids[e["user"]], "name": e["name"],
                     "time": when.isoformat() if when is not None else received,
                     "properties": e.get("properties") or {}, "client_event_id": e.get("id")})
    if not rows:
        return []
    v = sa.func.jsonb_to_recordset(
        sa.cast(sa.literal(json.dumps(rows, separators=(",", ":")), sa.Text), postgresql.JSONB)
    ).table_valued(*(sa.column(c, events.c[c].type) for c in EVENT_COLUMNS)).render_derived(name="v", with_types=True)
    stored = (
        postgresql.insert(events)
        .from_select(["app_id", *EVENT_COLUMNS, "received_at"],
                     sa.select(sa.literal(app_id, sa.BigInteger), *(v.c[c] for c in EVENT_COLUMNS),
                               sa.literal(now, events.c.received_at.type)))
        .on_conflict_do_nothing(index_elements=["app_id", "client_event_id"],
                                index_where=events.c.client_event_id.is_not(None))
        .returning(events.c.id, events.c.user_id, events.c.name, events.c.time)
        .cte("stored")
    )
    # Users in id order, as everywhere else that locks several users, so concurrent batches
    # touching the same people wait for each other instead of deadlocking.
    newest = (sa.select(stored.c.user_id, sa.func.max(stored.c.time).label("time"))
              .group_by(stored.c.user_id).order_by(stored.c.user_id).subquery("newest"))
    seen = (sa.update(users).values(last_seen_at=newest.c.time, updated_at=now)  # as the column's onupdate would
            .where(users.c.id == newest.c.user_id,
                   sa.or_(users.c.last_seen_at.is_(None), users.c.last_seen_at < newest.c.time))
            .cte("seen"))
    # The time as the driver gives it (aware), normalized here in one pass rather than per row
    # by the column type.
    wanted = sa.select(stored.c.id, stored.c.user_id, stored.c.name,
                       sa.type_coerce(stored.c.time, sa.DateTime(timezone=True))).add_cte(seen)
    if returning is not None:  # the statement stores all the same: data-modifying CTEs run to completion
        wanted = wanted.where(stored.c.name == sa.any_(sa.literal(sorted(returning), postgresql.ARRAY(sa.Text))))
    result = session.execute(wanted, execution_options={"synchronize_session": False})
    utc = dt.UTC
    return [{"id": i, "user_id": u, "name": n, "time": t.astimezone(utc)} for i, u, n, t in result.all()]


def _first_of_each_client_id(batch: Sequence[dict]) -> Iterator[dict]:
    """The batch without repeats of a client event id (events without one all stay)."""
    seen: set = set()
    for e in batch:
        client_id = e.get("id")
        if client_id is not None:
            if client_id in seen:
                continue
            seen.add(client_id)
        yield e


def _ingest_events_portable(session: Session, app_id: int, batch: Sequence[dict], user_ids: dict[str, int],
                            now: dt.datetime) -> list[dict]:
    """`ingest_events` on SQLite (the embedded default)."""
    rows = [{
        "app_id": app_id, "user_id": user_ids[e["user"]], "name": e["name"],
        "time": e.get("time") or now, "properties": e.get("properties") or {},
        "client_event_id": e.get("id"), "received_at": now,
    } for e in _first_of_each_client_id(batch)]
    if not rows:
        return []
    stored = [row._asdict() for row in bulk_insert(
        session, events, rows, conflict=["app_id", "client_event_id"],
        conflict_where=events.c.client_event_id.is_not(None),
        returning=(events.c.id, events.c.user_id, events.c.name, events.c.time))]
    newest: dict[int, dt.datetime] = {}
    for r in stored:
        if r["user_id"] not in newest or r["time"] > newest[r["user_id"]]:
            newest[r["user_id"]] = r["time"]
    bulk_update(session, users, [{"id": uid, "last_seen_at": t} for uid, t in sorted(newest.items())],
                where=lambda v: sa.or_(users.c.last_seen_at.is_(None), users.c.last_seen_at < v.c.last_seen_at))
    return stored


def opt_out(session: Session, app_ids: Iterable[int], phone: str, now: dt.datetime | None = None) -> None:
    """Opt `phone` out of SMS for these apps: the surviving hash (idempotent), and every user's flag."""
    app_ids = sorted(set(app_ids))
    if not app_ids or not phone:
        return
    now = now or utcnow()
    stmt = insert_for(session, optouts).on_conflict_do_nothing(index_elements=["app_id", "phone_hash"])
    session.execute(stmt, [{"app_id": a, "phone_hash": phone_hash(a, phone), "created_at": now} for a in app_ids])
    session.execute(
        sa.update(users)
        .where(users.c.app_id.in_(app_ids), users.c.phone == phone, users.c.sms_opt_in.is_not(False))
        .values(sms_opt_in=False, updated_at=now),
        execution_options={"synchronize_session": False},
    )


def opt_in(session: Session, app_ids: Iterable[int], phone: str, now: dt.datetime | None = None) -> None:
    """Undo `opt_out`: the number texted START/YES/UNSTOP to the sender."""
    app_ids = sorted(set(app_ids))
    if not app_ids or not phone:
        return
    now = now or utcnow()
    session.execute(
        sa.delete(optouts).where(optouts.c.app_id.in_(app_ids),
                                 optouts.c.phone_hash.in_([phone_hash(a, phone) for a in app_ids])),
        execution_options={"synchronize_session": False},
    )
    session.execute(
        sa.update(users)
        .where(users.c.app_id.in_(app_ids), users.c.phone == phone, users.c.sms_opt_in.is_not(True))
        .values(sms_opt_in=True, updated_at=now),
        execution_options={"synchronize_session": False},
    )


def get_user(session: Session, app_id: int, external_id: str) -> User:
    user = session.scalar(sa.select(User).where(User.app_id == app_id, User.external_id == external_id))
    if user is None:
        raise NotFoundError(f'no user "{external_id}"', {"user": external_id})
    return user


RECENT_EVENTS_PER_NAME = 200


def recently_seen(session: Session, app_id: int, limit: int) -> list[User]:
    """The app's people seen most recently first (last_seen_at, then id), then those never seen.

    No index has last_seen_at (so that moving it is a heap-only update, migration 0007). On
    PostgreSQL the newest events of each event name, read backwards along
    ix_events_app_name_time_user, name the candidates: every person whose newest event is newer
    than the oldest event read of any name that had more is among them, with their newest
    event. When the last of the `limit` people is such a person, the answer is complete; only
    otherwise (very few people hold all the newest events) are all the app's people sorted.
    """
    ranked = _recently_seen_from_events(session, app_id, limit) \
        if session.get_bind().dialect.name == "postgresql" else None
    if ranked is None:
        ranked = session.scalars(
            sa.select(User).where(User.app_id == app_id, User.last_seen_at.is_not(None))
            .order_by(User.last_seen_at.desc(), User.id.desc()).limit(limit)).all()
    rows = list(ranked)
    if len(rows) < limit:
        rows += session.scalars(sa.select(User).where(User.app_id == app_id, User.last_seen_at.is_(None))
                                .order_by(User.id.desc()).limit(limit - len(rows))).all()
    return rows


def _recently_seen_from_events(session: Session, app_id: int, limit: int) -> list[User] | None:
    """`recently_seen`'s first `limit` people found from the newest events, or None if unsure."""
    per_name = RECENT_EVENTS_PER_NAME
    # The app's event names, one index descent each (a loose index scan).
    first = (sa.select(events.c.name).where(events.c.app_id == app_id)
             .order_by(events.c.name).limit(1).scalar_subquery())
    names = sa.select(first.label("name")).cte("names", recursive=True)
    following = (sa.select(events.c.name).where(events.c.app_id == app_id, events.c.name > names.c.name)
                 .order_by(events.c.name).limit(1).scalar_subquery())
    names = names.union_all(sa.select(following).where(names.c.name.is_not(None)))
    newest = (sa.select(events.c.user_id, events.c.time)
              .where(events.c.app_id == app_id, events.c.name == names.c.name)
              .order_by(events.c.time.desc()).limit(per_name).lateral("newest"))
    ranked = (sa.select(newest.c.user_id, newest.c.time, names.c.name,
                        sa.func.row_number().over(partition_by=names.c.name, order_by=newest.c.time.desc())
                        .label("n"))
              .select_from(names.join(newest, sa.true())).where(names.c.name.is_not(None)).cte("ranked"))
    # Below this time a name may have events not read (None: every name was read whole).
    unsure = sa.select(sa.func.max(ranked.c.time)).where(ranked.c.n == per_name).scalar_subquery()
    seen = (sa.select(ranked.c.user_id, sa.func.max(ranked.c.time).label("time"), unsure.label("unsure"))
            .group_by(ranked.c.user_id).order_by(sa.desc("time"), ranked.c.user_id.desc()).limit(limit))
    found = session.execute(seen).all()
    if len(found) == limit and found[-1].unsure is not None and found[-1].time <= found[-1].unsure:
        return None
    if found and len(found) < limit and found[0].unsure is not None:
        return None  # fewer people than asked for among the events read, but more events exist
    people = {u.id: u for u in session.scalars(
        sa.select(User).where(User.app_id == app_id, User.id.in_([r.user_id for r in found])))}
    return sorted((people[r.user_id] for r in found if r.user_id in people),
                  key=lambda u: (u.last_seen_at, u.id), reverse=True)


def erase_user(session: Session, app_id: int, external_id: str) -> None:
    """Erase a person: profile, devices, events, event rollups and rendered messages go.

    An SMS opt-out survives only as a hash of the number (sms_optouts), never the number itself.
    """
    user = get_user(session, app_id, external_id)
    hold_off_rollups(session)  # no rollup writes their rows back after this
    session.execute(sa.delete(rollups).where(rollups.c.user_id == user.id))
    session.execute(sa.delete(users).where(users.c.id == user.id))
    session.expunge(user)


def is_sms_opted_out(session: Session, app_id: int, phone: str) -> bool:
    return session.scalar(
        sa.select(sa.func.count()).select_from(SmsOptOut)
        .where(SmsOptOut.app_id == app_id, SmsOptOut.phone_hash == phone_hash(app_id, phone))
    ) > 0
