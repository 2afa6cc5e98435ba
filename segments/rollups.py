"""Event rollups: each person's events of each name, summed up to a mark.

`did "X"` (ever) over a whole audience has to find everyone with an X event. From the events
table that means every X event ever stored (2.2M index entries, hashed, for the bench's
"session_start"); from `event_rollups` it is one row per person who did X, plus the events
stored after the mark. The query compiler reads both (segments.query.sql), so a rollup that
is behind, or never ran, only makes queries slower, never wrong.

The job sums events with ids in (mark, ceiling] and moves the mark, in one transaction per
chunk. The ceiling is an id below which no event can still be in flight: taken under a brief
SHARE lock on events, which waits for the inserts under way to commit (and holds new ones back
for that moment). Events are never updated, and deleted only with their person (erase_user),
who takes their rollup rows along and never overlaps a rollup; so the rows stay exact.

PostgreSQL only: on SQLite (the embedded demo) the compiler reads events alone.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from segments.models import Event, EventRollup, EventRollupMark
from tidings.db import utcnow

log = logging.getLogger(__name__)

events = Event.__table__
rollups = EventRollup.__table__
marks = EventRollupMark.__table__

MARK = 1                          # the id of the one row of event_rollup_marks
CHUNK = 200_000                   # event ids summed per transaction (a few seconds at most)
ERASE_LOCK = 0x7469_6469_6E67_7301  # advisory lock key: rollups against erasures
INTERVAL = dt.timedelta(minutes=1)  # the scheduler rolls up at least this often...
DUE_AFTER = 100_000               # ...and as soon as this many events came after the mark
LOCK_TIMEOUT_MS = 2_000           # how long the job waits for in-flight inserts before giving up
# Past this many events after the mark, the compiler leaves rollups aside: the people with
# events after the mark are checked one by one, which would cost more than the rollups save.
USABLE_LAG = 500_000


def hold_off_rollups(session: Session) -> None:
    """Wait for a rollup under way to commit, and keep the next one out until this transaction
    ends: erase_user calls this, then deletes the person's rollup rows and events.

    Otherwise a rollup that read the person's events before the erasure committed would write
    their rows back after it. (Foreign keys from event_rollups to users would have cost the
    job half its time, and deadlocks with erasures besides; locking each new row's person
    up front held back event ingestion for seconds, measured p99 6 s.)
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(ERASE_LOCK)))


def usable_mark(session: Session) -> int | None:
    """The mark for the query compiler (`rolled_up_to`), or None: events alone."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    upto = session.scalar(sa.select(marks.c.upto).where(marks.c.id == MARK))
    if upto is None:
        return None
    newest = session.scalar(sa.select(sa.func.max(events.c.id))) or 0
    return upto if newest - upto <= USABLE_LAG else None


def settled_event_id(engine: sa.Engine) -> int | None:
    """The newest event id below which every event is committed or never will be; None when
    inserts did not let go of the table in time (try again later)."""
    with engine.connect() as conn:
        try:
            with conn.begin():
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
                # SHARE conflicts with the ROW EXCLUSIVE lock every insert holds until it commits,
                # so once granted no transaction holds an event id it has not committed. Ids are
                # handed out after that lock is taken: later events get higher ids.
                conn.execute(sa.text("LOCK TABLE events IN SHARE MODE"))
                return conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)))
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                log.info("event rollup: inserts held events for over %d ms; later", LOCK_TIMEOUT_MS)
                return None
            raise


def roll_up(engine: sa.Engine, *, upto: int | None = None, max_chunks: int | None = None,
            now: dt.datetime | None = None) -> dict:
    """Sum the events after the mark into event_rollups, chunk by chunk, and move the mark.

    Up to the settled ceiling, or `upto` if lower (tests roll up part of what is stored).
    Returns {"upto": the mark after, "events": ids covered by this call}; {"upto": None} on
    SQLite and when the ceiling could not be settled. Safe to run from several processes: the
    mark row is locked for each chunk.
    """
    if engine.dialect.name != "postgresql":
        return {"upto": None, "events": 0}
    ceiling = settled_event_id(engine)
    if ceiling is None:
        return {"upto": None, "events": 0}
    if upto is not None:
        ceiling = min(ceiling, upto)
    covered, chunks, mark = 0, 0, None
    while max_chunks is None or chunks < max_chunks:
        with engine.begin() as conn:
            mark, end = _roll_chunk(conn, ceiling, now or utcnow())
        if end is None:
            break
        covered += end - mark
        mark, chunks = end, chunks + 1
    return {"upto": mark, "events": covered}


def roll_up_if_due(engine: sa.Engine, now: dt.datetime | None = None, max_chunks: int = 2) -> dict | None:
    """`roll_up` when the last one is INTERVAL old or DUE_AFTER events behind (the scheduler's
    duty); else None."""
    if engine.dialect.name != "postgresql":
        return None
    now = now or utcnow()
    with engine.connect() as conn:
        mark = conn.execute(sa.select(marks.c.upto, marks.c.rolled_at).where(marks.c.id == MARK)).first()
        newest = conn.scalar(sa.select(sa.func.max(events.c.id))) or 0
    if mark is not None and now - mark.rolled_at < INTERVAL and newest - mark.upto < DUE_AFTER:
        return None
    return roll_up(engine, max_chunks=max_chunks, now=now)


def _roll_chunk(conn: sa.Connection, ceiling: int, now: dt.datetime) -> tuple[int, int | None]:
    """One transaction: events in (mark, min(mark + CHUNK, ceiling)] into the rollups.

    Returns (mark before, mark after), or (mark, None) when it already reaches the ceiling.
    """
    conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))  # one hash aggregate over the chunk
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ERASE_LOCK)))  # see hold_off_rollups
    conn.execute(postgresql.insert(marks).values(id=MARK, upto=0, rolled_at=now)
                 .on_conflict_do_nothing(index_elements=["id"]))
    start = conn.scalar(sa.select(marks.c.upto).where(marks.c.id == MARK).with_for_update())
    if start >= ceiling:
        conn.execute(sa.update(marks).where(marks.c.id == MARK).values(rolled_at=now))
        return start, None
    end = min(ceiling, start + CHUNK)
    in_chunk = sa.and_(events.c.id > start, events.c.id <= end)
    summed = (sa.select(events.c.app_id, events.c.user_id, events.c.name, sa.func.min(events.c.time),
                        sa.func.max(events.c.time), sa.func.count())
              .where(in_chunk)
              .group_by(events.c.user_id, events.c.name, events.c.app_id)
              .order_by(events.c.user_id, events.c.name))
    stmt = postgresql.insert(rollups).from_select(
        ["app_id", "user_id", "name", "first_at", "last_at", "count"], summed)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["user_id", "name"],
        set_={"first_at": sa.func.least(rollups.c.first_at, stmt.excluded.first_at),
              "last_at": sa.func.greatest(rollups.c.last_at, stmt.excluded.last_at),
              "count": rollups.c.count + stmt.excluded.count}))
    conn.execute(sa.update(marks).where(marks.c.id == MARK).values(upto=end, rolled_at=now))
    return start, end
