"""The one-round-trip PostgreSQL loader of a pulling person reads exactly what the ORM path reads.

Random people (fields, devices, events: the segment agreement test's pools), random deliveries
of a few campaigns with random statuses and dismissals, and random segment queries deciding which
events are needed: for every person (and someone unknown) both loaders give equal Persons.
"""

from __future__ import annotations

import datetime as dt
import random
import types

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign, CampaignRun, Delivery, DeliveryStatus, Interaction
from campaigns.pulls import _load_person_orm, _load_person_pg
from segments.query import parse, to_text
from segments.query.ast import Or
from segments.query.memory import event_windows
from tests.segments.query_strategies import NOW, insert_people, queries, random_person
from tests.segments.test_query_agreement import _make_app


@pytest.fixture
def people(clean_db):
    rnd = random.Random(20261123)
    with clean_db.begin() as conn:
        app_id = _make_app(conn, "pulls")
        ids = insert_people(conn, app_id, [random_person(rnd) for _ in range(40)])
        decoy = _make_app(conn, "decoy")
        insert_people(conn, decoy, [random_person(rnd) for _ in range(5)])
        campaigns = []
        for n in range(3):
            cid = conn.execute(sa.insert(Campaign.__table__).values(
                app_id=app_id, name=f"c{n}", channel="inapp", status="running", spec={}, version=1,
                created_at=NOW, updated_at=NOW).returning(Campaign.__table__.c.id)).scalar_one()
            rid = conn.execute(sa.insert(CampaignRun.__table__).values(
                app_id=app_id, campaign_id=cid, scheduled_for=NOW, status="sending", cursor_user_id=0,
                audience_count=0, updated_at=NOW).returning(CampaignRun.__table__.c.id)).scalar_one()
            campaigns.append((cid, rid))
        for uid in ids:
            for cid, rid in campaigns:
                for key in rnd.sample([f"run:{rid}", "event:1", "event:2"], rnd.randint(0, 2)):
                    status = rnd.choice(list(DeliveryStatus))
                    sent = None if rnd.random() < 0.3 else NOW - dt.timedelta(minutes=rnd.randint(0, 10_000),
                                                                                microseconds=rnd.randint(0, 999_999))
                    did = conn.execute(sa.insert(Delivery.__table__).values(
                        app_id=app_id, campaign_id=cid, run_id=rid, user_id=uid, dedupe_key=key,
                        target_index=rnd.choice([None, 0, 1]), variant=rnd.choice([None, "A", "B"]),
                        control=status == DeliveryStatus.CONTROL, status=status, attempts=0,
                        content=rnd.choice([None, {"title": "Hi é", "n": 1.5, "list": [1, "x", None]}]),
                        sent_at=sent, send_after=NOW - dt.timedelta(seconds=rnd.randint(-3600, 3600)),
                        created_at=NOW, updated_at=NOW).returning(Delivery.__table__.c.id)).scalar_one()
                    for kind in rnd.sample(["impression", "click", "dismiss"], rnd.randint(0, 2)):
                        conn.execute(sa.insert(Interaction.__table__).values(
                            app_id=app_id, delivery_id=did, type=kind, created_at=NOW))
    return types.SimpleNamespace(app_id=app_id, campaigns=[c for c, _ in campaigns], size=len(ids))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query_list=st.lists(queries, min_size=1, max_size=3), campaigns=st.integers(0, 3),
       skew=st.integers(-3, 3))
def test_postgres_loader_reads_what_the_orm_path_reads(clean_db, people, query_list, campaigns, skew):
    query = Or(tuple(parse(to_text(q)) for q in query_list))
    snap = types.SimpleNamespace(app_id=people.app_id, query=query, windows=sorted(event_windows(query).items()))
    ids = people.campaigns[:campaigns]
    now = NOW + dt.timedelta(days=skew)
    with sa.orm.Session(clean_db) as session:
        for i in [*range(people.size), "unknown"]:
            external_id = f"p{i}"
            for full in (True, False):
                fast = _load_person_pg(session, snap, external_id, ids, now, full)
                slow = _load_person_orm(session, snap, external_id, ids, now, full)
                assert fast == slow, (external_id, full)
        assert _load_person_pg(session, snap, "p0", ids, now) is not None
