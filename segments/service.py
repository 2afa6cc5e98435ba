"""Segment services: save named queries (checked and cycle-free), size, preview, churn, membership."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from segments import rollups
from segments.models import Segment, User
from segments.query import QueryError, parse, referenced_segments, resolve
from segments.query.memory import evaluate, load_profile
from segments.query.sql import select_user_ids
from tidings.db import utcnow
from tidings.errors import ConflictError, InvalidError, NotFoundError

SAMPLE_SIZE = 20
users = User.__table__


def _lookup(session: Session, app_id: int, override: tuple[str, str] | None = None):
    """name -> query text of the app's segments, with one segment's text replaced (being edited)."""

    def lookup(name: str) -> str | None:
        if override and name == override[0]:
            return override[1]
        return session.scalar(sa.select(Segment.query).where(Segment.app_id == app_id, Segment.name == name))

    return lookup


def compile_query(session: Session, app_id: int, text: str, *, as_name: str | None = None):
    """Parse a query and inline the segments it names; QueryError (422) when it is not valid.

    `as_name`: the query is (to become) the text of the segment of that name, so references to
    that name resolve to the new text and cycles through it are caught before saving.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query is empty", 0)
    node = parse(text)
    return resolve(node, _lookup(session, app_id, (as_name, text) if as_name else None))


def get_segment(session: Session, app_id: int, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None or segment.app_id != app_id:
        raise NotFoundError(f"no segment {segment_id}")
    return segment


def list_segments(session: Session, app_id: int) -> list[Segment]:
    return list(session.scalars(sa.select(Segment).where(Segment.app_id == app_id).order_by(Segment.name)))


def _check_name(session: Session, app_id: int, name: str, segment_id: int | None = None) -> str:
    name = name.strip() if isinstance(name, str) else name
    if not name:
        raise InvalidError("a segment needs a name", {"field": "name"})
    clash = session.scalar(sa.select(Segment.id).where(Segment.app_id == app_id, Segment.name == name))
    if clash is not None and clash != segment_id:
        raise ConflictError(f'a segment named "{name}" already exists', {"field": "name", "id": clash})
    return name


def dependents(session: Session, app_id: int, name: str) -> list[Segment]:
    """Segments whose queries name this one with segment("...")."""
    out = []
    for other in list_segments(session, app_id):
        if other.name != name and name in referenced_segments(parse(other.query)):
            out.append(other)
    return out


def create_segment(session: Session, app_id: int, name: str, query: str, description: str = "") -> Segment:
    name = _check_name(session, app_id, name)
    compile_query(session, app_id, query, as_name=name)
    segment = Segment(app_id=app_id, name=name, query=query, description=description or "")
    session.add(segment)
    session.flush()
    return segment


def update_segment(session: Session, app_id: int, segment_id: int, *, name: str | None = None,
                   query: str | None = None, description: str | None = None) -> Segment:
    segment = get_segment(session, app_id, segment_id)
    new_name = segment.name if name is None else _check_name(session, app_id, name, segment.id)
    new_query = segment.query if query is None else query
    if new_name != segment.name:
        users_of_it = dependents(session, app_id, segment.name)
        if users_of_it:
            raise ConflictError(
                f'segment "{segment.name}" is used by {_names(users_of_it)}; rename those references first',
                {"used_by": [s.id for s in users_of_it]},
            )
    compile_query(session, app_id, new_query, as_name=new_name)
    if new_name == segment.name:
        # Segments built on this one must still resolve (no cycle through the new text).
        for other in dependents(session, app_id, segment.name):
            try:
                resolve(parse(other.query), _lookup(session, app_id, (segment.name, new_query)))
            except QueryError as exc:
                raise InvalidError(f'segment "{other.name}" would break: {exc.message}',
                                   {"field": "query", "position": 0, "used_by": other.id}) from None
    segment.name, segment.query = new_name, new_query
    if description is not None:
        segment.description = description
    session.flush()
    return segment


def delete_segment(session: Session, app_id: int, segment_id: int) -> None:
    segment = get_segment(session, app_id, segment_id)
    users_of_it = dependents(session, app_id, segment.name)
    if users_of_it:
        raise ConflictError(f'segment "{segment.name}" is used by {_names(users_of_it)}',
                            {"used_by": [s.id for s in users_of_it]})
    session.delete(segment)
    session.flush()


def _names(segments: list[Segment]) -> str:
    return ", ".join(f'"{s.name}"' for s in segments)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def member_ids(session: Session, app_id: int, node, now: dt.datetime | None = None) -> sa.Select:
    return select_user_ids(node, app_id=app_id, now=now or utcnow(), dialect=_dialect(session),
                           rolled_up_to=rollups.usable_mark(session))


def count_users(session: Session, app_id: int, node, now: dt.datetime | None = None) -> int:
    ids = member_ids(session, app_id, node, now).subquery()
    return session.scalar(sa.select(sa.func.count()).select_from(ids))


def preview(session: Session, app_id: int, text: str, now: dt.datetime | None = None) -> dict:
    node = compile_query(session, app_id, text)
    now = now or utcnow()
    ids = member_ids(session, app_id, node, now).subquery()
    sample = session.scalars(
        sa.select(users.c.external_id).where(users.c.id.in_(sa.select(ids.c.id)))
        .order_by(users.c.id).limit(SAMPLE_SIZE)
    ).all()
    return {"count": count_users(session, app_id, node, now), "sample": list(sample)}


def churn(session: Session, app_id: int, segment: Segment, inactive_days: int,
          now: dt.datetime | None = None) -> dict:
    """Users of the segment; active = an event in the last `inactive_days`; churned = seen before, not since."""
    now = now or utcnow()
    node = compile_query(session, app_id, segment.query)
    ids = member_ids(session, app_id, node, now).subquery()
    cutoff = now - dt.timedelta(days=inactive_days)
    row = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(users.c.last_seen_at >= cutoff),
            sa.func.count().filter(users.c.last_seen_at < cutoff),
        ).where(users.c.id.in_(sa.select(ids.c.id)))
    ).one()
    total, active, churned = row
    seen = active + churned
    return {"users": total, "active": active, "churned": churned,
            "churn_rate": round(churned / seen, 6) if seen else None, "inactive_days": inactive_days}


def segments_of_user(session: Session, app_id: int, user: User, now: dt.datetime | None = None) -> list[int]:
    """Ids of the app's segments this user belongs to now (in-memory evaluation)."""
    now = now or utcnow()
    out = []
    for segment in list_segments(session, app_id):
        node = compile_query(session, app_id, segment.query)
        if evaluate(node, load_profile(session, user, node, now), now):
            out.append(segment.id)
    return sorted(out)


