"""The event rollup job (segments.rollups) on the real PostgreSQL: exact sums, nothing summed
twice or missed while events keep arriving, erasure, and an insert still in flight."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from scheduler import runner
from segments import rollups
from segments.people import erase_user, ingest_events
from tests.factories import make_app
from tidings import db

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
SUMS = sa.text("""
    SELECT app_id, user_id, name, min(time), max(time), count(*) FROM events
    WHERE id <= :upto GROUP BY app_id, user_id, name""")


def _ingest(app_id: int, batch: list[dict]) -> None:
    with db.session_scope() as session:
        ingest_events(session, app_id, batch, T0)


def _batch(i: int, people: int = 7) -> list[dict]:
    return [{"user": f"u{(i * 3 + k) % people}", "name": ("open", "buy", "share")[(i + k) % 3],
             "time": T0 - dt.timedelta(minutes=(i * 11 + k * 7) % 500)} for k in range(5)]


def _rolled(engine) -> set:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(
            rollups.rollups.c.app_id, rollups.rollups.c.user_id, rollups.rollups.c.name,
            rollups.rollups.c.first_at, rollups.rollups.c.last_at, rollups.rollups.c.count))}


def _summed(engine, upto: int) -> set:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(SUMS, {"upto": upto})}


def _mark(engine) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(rollups.marks.c.upto))


@pytest.fixture
def app(session):
    app, _, _ = make_app(session)
    session.commit()
    return app


def test_rollups_are_the_sums_of_the_events_up_to_the_mark(clean_db, app):
    for i in range(6):
        _ingest(app.id, _batch(i))
    with clean_db.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM events ORDER BY id")).scalars().all()

    part = rollups.roll_up(clean_db, upto=ids[12])
    assert part == {"upto": ids[12], "events": ids[12]}
    assert _rolled(clean_db) == _summed(clean_db, ids[12])

    rest = rollups.roll_up(clean_db)
    assert rest == {"upto": ids[-1], "events": ids[-1] - ids[12]}
    assert _rolled(clean_db) == _summed(clean_db, ids[-1])

    again = rollups.roll_up(clean_db)  # nothing new: nothing summed twice
    assert again == {"upto": ids[-1], "events": 0}
    assert _rolled(clean_db) == _summed(clean_db, ids[-1])

    _ingest(app.id, _batch(7))  # later events add to the rows already there
    rollups.roll_up(clean_db)
    assert _rolled(clean_db) == _summed(clean_db, ids[-1] + 1000)


def test_chunks_each_move_the_mark(clean_db, app, monkeypatch):
    monkeypatch.setattr(rollups, "CHUNK", 4)
    for i in range(4):
        _ingest(app.id, _batch(i))
    first = rollups.roll_up(clean_db, max_chunks=2)
    assert _mark(clean_db) == first["upto"] and first["events"] <= 8
    assert _rolled(clean_db) == _summed(clean_db, first["upto"])
    rollups.roll_up(clean_db)
    assert _rolled(clean_db) == _summed(clean_db, 10**9)


def test_erasing_a_person_erases_their_rollups(clean_db, app):
    _ingest(app.id, _batch(0) + _batch(1))
    rollups.roll_up(clean_db)
    with clean_db.connect() as conn:
        u0 = conn.scalar(sa.text("SELECT id FROM users WHERE external_id = 'u0'"))
    assert any(r[1] == u0 for r in _rolled(clean_db))
    with db.session_scope() as session:
        erase_user(session, app.id, "u0")
    assert not any(r[1] == u0 for r in _rolled(clean_db))
    assert _rolled(clean_db) == _summed(clean_db, 10**9)
    rollups.roll_up(clean_db)
    assert _rolled(clean_db) == _summed(clean_db, 10**9)


def test_rollups_and_erasures_take_turns(clean_db, app):
    """A rollup waits for an erasure under way (and the other way round), so the two never
    deadlock over a person's rollup rows."""
    _ingest(app.id, _batch(0) + _batch(1))
    rollups.roll_up(clean_db)
    _ingest(app.id, _batch(2))
    done = threading.Event()
    erasing = db.SessionFactory()
    try:
        erase_user(erasing, app.id, "u0")  # not committed yet
        worker = threading.Thread(target=lambda: (rollups.roll_up(clean_db), done.set()))
        worker.start()
        assert not done.wait(0.5)  # the rollup waits for the erasure
        erasing.commit()
    finally:
        erasing.close()
    worker.join(10)
    assert done.is_set()
    assert _rolled(clean_db) == _summed(clean_db, 10**9)

    with clean_db.connect() as conn, conn.begin():  # a rollup chunk under way holds this lock
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(rollups.ERASE_LOCK)))
        erased = threading.Event()

        def erase():
            with db.session_scope() as session:
                erase_user(session, app.id, "u1")
            erased.set()

        eraser = threading.Thread(target=erase)
        eraser.start()
        assert not erased.wait(0.5)  # the erasure waits for the rollup
    eraser.join(10)
    assert erased.is_set()


def test_events_arriving_during_rollups_are_summed_once(clean_db, app, monkeypatch):
    """Ingest threads keep storing while the job rolls up again and again: in the end every
    event is in the rollups exactly once."""
    monkeypatch.setattr(rollups, "CHUNK", 37)
    stop = threading.Event()
    errors = []

    def ingest(worker: int):
        i = worker
        try:
            while not stop.is_set():
                _ingest(app.id, _batch(i, people=23))
                i += 2
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    try:
        marks = []
        for _ in range(25):
            result = rollups.roll_up(clean_db)
            if result["upto"] is not None:
                marks.append(result["upto"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert marks == sorted(marks) and len(set(marks)) > 3
    final = rollups.roll_up(clean_db)["upto"]
    with clean_db.connect() as conn:
        assert final == conn.scalar(sa.text("SELECT max(id) FROM events"))
    assert _rolled(clean_db) == _summed(clean_db, final)


def test_an_insert_in_flight_holds_the_mark_back(clean_db, app, monkeypatch):
    """An event id handed out to a transaction that has not committed yet may commit after a
    later one: the job must not move the mark past it. It waits, then gives up for now."""
    monkeypatch.setattr(rollups, "LOCK_TIMEOUT_MS", 200)
    _ingest(app.id, _batch(0))
    rollups.roll_up(clean_db)
    before = _mark(clean_db)

    slow = db.SessionFactory()
    try:
        ingest_events(slow, app.id, [{"user": "slow", "name": "open"}], T0)  # not committed
        _ingest(app.id, [{"user": "fast", "name": "open"}])  # a later id, committed
        assert rollups.roll_up(clean_db) == {"upto": None, "events": 0}
        assert _mark(clean_db) == before
        slow.commit()
    finally:
        slow.close()
    rollups.roll_up(clean_db)
    assert _rolled(clean_db) == _summed(clean_db, 10**9)


def test_the_compiler_leans_on_a_mark_only_while_it_is_close(clean_db, app, session, monkeypatch):
    assert rollups.usable_mark(session) is None  # never rolled up: events alone
    _ingest(app.id, _batch(0) + _batch(1))
    rollups.roll_up(clean_db)
    session.rollback()
    mark = rollups.usable_mark(session)
    assert mark == _mark(clean_db)
    monkeypatch.setattr(rollups, "USABLE_LAG", 3)
    _ingest(app.id, _batch(2))  # 5 events after the mark
    session.rollback()
    assert rollups.usable_mark(session) is None


def test_the_scheduler_rolls_up_once_a_minute_or_when_far_behind(clean_db, app, monkeypatch):
    _ingest(app.id, _batch(0))
    assert runner.tick(T0)["events_rolled_up"] > 0  # never rolled up: due
    _ingest(app.id, _batch(1))
    assert runner.tick(T0 + dt.timedelta(seconds=30))["events_rolled_up"] == 0
    assert runner.tick(T0 + dt.timedelta(seconds=61))["events_rolled_up"] > 0
    monkeypatch.setattr(rollups, "DUE_AFTER", 5)
    _ingest(app.id, _batch(2))
    assert runner.tick(T0 + dt.timedelta(seconds=62))["events_rolled_up"] > 0
    assert _rolled(clean_db) == _summed(clean_db, 10**9)


def test_segment_sizes_read_the_rollups(clean_db, app, session):
    """The service passes the mark: people whose only events are summed, and people with
    events on both sides of the mark, are counted alike."""
    from segments.service import compile_query, count_users

    _ingest(app.id, [{"user": "old", "name": "open", "time": T0 - dt.timedelta(days=40)},
                     {"user": "both", "name": "open", "time": T0 - dt.timedelta(days=40)}])
    rollups.roll_up(clean_db)
    _ingest(app.id, [{"user": "both", "name": "open", "time": T0 - dt.timedelta(days=1)},
                     {"user": "new", "name": "open", "time": T0 - dt.timedelta(days=50)}])
    session.rollback()
    assert rollups.usable_mark(session) is not None
    lapsed = compile_query(session, app.id, 'did "open" and not did "open" in last 30d')
    assert count_users(session, app.id, lapsed, T0) == 2  # old, new
    ever = compile_query(session, app.id, 'did "open"')
    assert count_users(session, app.id, ever, T0) == 3


def test_sqlite_has_no_rollups(tmp_path):
    from tests.segments.test_query_sql import sqlite_engine

    engine = sqlite_engine(tmp_path / "r.db")
    try:
        assert rollups.roll_up(engine) == {"upto": None, "events": 0}
        assert rollups.roll_up_if_due(engine) is None
        with sa.orm.Session(engine) as session:
            assert rollups.usable_mark(session) is None
    finally:
        engine.dispose()
