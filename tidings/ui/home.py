"""The home page: the current app at a glance (people, segments, campaigns by status)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, render_template

from campaigns.models import Campaign, CampaignStatus
from segments.models import Segment, User
from tidings.ui import bp
from tidings.web import db_session


@bp.get("/")
def home():
    if g.app is None:
        return render_template("home.html", app=None)
    s = db_session()
    app_id = g.app.id
    people = s.scalar(sa.select(sa.func.count()).select_from(User).where(User.app_id == app_id))
    segments = s.scalar(sa.select(sa.func.count()).select_from(Segment).where(Segment.app_id == app_id))
    by_status = dict(s.execute(sa.select(Campaign.status, sa.func.count())
                               .where(Campaign.app_id == app_id).group_by(Campaign.status)).all())
    recent = s.scalars(sa.select(Campaign).where(Campaign.app_id == app_id)
                       .order_by(Campaign.updated_at.desc()).limit(8)).all()
    return render_template("home.html", app=g.app, people=people, segments=segments, recent=recent,
                           by_status=[(st.value, by_status.get(st.value, 0)) for st in CampaignStatus])
