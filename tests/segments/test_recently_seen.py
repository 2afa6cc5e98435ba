"""The people list's "seen most recently first", found from the newest events, is the plain sort."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import people
from segments.models import User
from tests.factories import make_app
from tidings import db

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
NAMES = ["open", "buy", "view"]

# One person's events: (name, minutes before NOW); a few minutes apart so that ties happen.
histories = st.lists(st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 12)), max_size=6),
                     min_size=0, max_size=9)


def _plain(session, app_id: int, limit: int) -> list[int]:
    seen = session.scalars(sa.select(User.id).where(User.app_id == app_id, User.last_seen_at.is_not(None))
                           .order_by(User.last_seen_at.desc(), User.id.desc()).limit(limit)).all()
    never = session.scalars(sa.select(User.id).where(User.app_id == app_id, User.last_seen_at.is_(None))
                            .order_by(User.id.desc()).limit(max(0, limit - len(seen)))).all()
    return [*seen, *never]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=histories, per_name=st.integers(1, 4), limit=st.integers(1, 6))
def test_recently_seen_is_the_plain_sort(clean_db, monkeypatch, histories, per_name, limit):
    monkeypatch.setattr(people, "RECENT_EVENTS_PER_NAME", per_name)
    with db.SessionFactory() as s:
        app, _, _ = make_app(s, "recent")
        other, _, _ = make_app(s, "other")
        # Another app's people are newer than everyone here: they must never show up.
        people.ingest_events(s, other.id, [{"user": "o", "name": "open", "time": NOW}], now=NOW)
        for i, history in enumerate(histories):
            if not history:
                people.ensure_users(s, app.id, [f"u{i}"], NOW)
            batch = [{"user": f"u{i}", "name": n, "time": NOW - dt.timedelta(minutes=m)} for n, m in history]
            if batch:
                people.ingest_events(s, app.id, batch, now=NOW)
        s.commit()
        found = [u.id for u in people.recently_seen(s, app.id, limit)]
        assert found == _plain(s, app.id, limit)
        s.execute(sa.delete(User.__table__).where(User.app_id.in_([app.id, other.id])))
        s.commit()


@pytest.mark.parametrize("per_name, complete", [(200, True), (2, False)])
def test_the_newest_events_answer_alone_when_they_can(session, monkeypatch, per_name, complete):
    """Enough people among the newest events: no sort of all people (the fallback) is needed."""
    monkeypatch.setattr(people, "RECENT_EVENTS_PER_NAME", per_name)
    app, _, _ = make_app(session)
    # u0 holds the two newest events of the only name; everyone else one older event each.
    batch = [{"user": "u0", "name": "open", "time": NOW - dt.timedelta(seconds=s)} for s in (0, 1)]
    batch += [{"user": f"u{i}", "name": "open", "time": NOW - dt.timedelta(minutes=i)} for i in range(1, 6)]
    people.ingest_events(session, app.id, batch, now=NOW)
    from_events = people._recently_seen_from_events(session, app.id, 3)
    if complete:
        assert [u.external_id for u in from_events] == ["u0", "u1", "u2"]
    else:
        assert from_events is None  # two events read name only u0: not enough to be sure
    assert [u.external_id for u in people.recently_seen(session, app.id, 3)] == ["u0", "u1", "u2"]
