"""User pages: look a person up by external id, and see their profile, devices, segments, events
and deliveries."""

from __future__ import annotations

import sqlalchemy as sa
from flask import redirect, render_template, request, url_for

from campaigns.models import Campaign, Delivery
from segments import people as people_service
from segments import service as segment_service
from segments.models import Event, Segment, User
from tidings.ui import bp
from tidings.ui.auth import current_app_id
from tidings.web import db_session

LISTED = 50


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@bp.get("/people")
def people():
    s = db_session()
    app_id = current_app_id()
    q = (request.args.get("q") or "").strip()[:255]
    if q:
        exact = s.scalar(sa.select(User.external_id).where(User.app_id == app_id, User.external_id == q))
        if exact is not None:
            return redirect(url_for("ui.person", external_id=exact))
        rows = s.scalars(sa.select(User).where(User.app_id == app_id, User.external_id.like(_like_prefix(q), escape="\\"))
                         .order_by(User.external_id).limit(LISTED)).all()
    else:
        rows = people_service.recently_seen(s, app_id, LISTED)
    return render_template("people/list.html", rows=rows, q=q, limit=LISTED)


@bp.get("/people/<path:external_id>")
def person(external_id: str):
    s = db_session()
    app_id = current_app_id()
    user = people_service.get_user(s, app_id, external_id)
    segment_ids = segment_service.segments_of_user(s, app_id, user)
    segments = s.scalars(sa.select(Segment).where(Segment.id.in_(segment_ids)).order_by(Segment.name)).all() \
        if segment_ids else []
    events = s.scalars(sa.select(Event).where(Event.user_id == user.id)
                       .order_by(Event.time.desc(), Event.id.desc()).limit(LISTED)).all()
    deliveries = s.execute(
        sa.select(Delivery, Campaign.name).join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.user_id == user.id).order_by(Delivery.id.desc()).limit(LISTED)).all()
    return render_template("people/show.html", user=user, segments=segments, events=events,
                           deliveries=deliveries, limit=LISTED)
