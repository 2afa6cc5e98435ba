"""Segment pages: the list with sizes, the query editor with a live count, the builder, delete."""

from __future__ import annotations

from flask import abort, flash, jsonify, redirect, render_template, request, url_for

from segments import service
from segments.query import QueryError
from segments.query.fields import FIELDS
from tidings.errors import TidingsError
from tidings.models import Role
from tidings.ui import bp
from tidings.ui.auth import current_app_id, role
from tidings.ui.forms import ConfirmForm, SegmentForm
from tidings.web import db_session, json_body

MAX_QUERY = 10_000


def segment_size(session, app_id: int, segment) -> int | None:
    try:
        return service.count_users(session, app_id, service.compile_query(session, app_id, segment.query))
    except QueryError:
        return None  # a segment broken by an edit elsewhere shows as "—", never as a 500


@bp.get("/segments")
def segments():
    # Sizes arrive from size.json after the page: counting a segment of a million people takes
    # longer than a page may (300 ms), and the list should not wait for the slowest segment.
    return render_template("segments/list.html", rows=service.list_segments(db_session(), current_app_id()))


@bp.get("/segments/<int:segment_id>/size.json")
def segment_size_json(segment_id: int):
    s = db_session()
    app_id = current_app_id()
    return jsonify({"id": segment_id, "count": segment_size(s, app_id, service.get_segment(s, app_id, segment_id))})


@bp.get("/segments/<int:segment_id>/churn.json")
def segment_churn_json(segment_id: int):
    s = db_session()
    app_id = current_app_id()
    segment = service.get_segment(s, app_id, segment_id)
    raw = request.args.get("inactive_days", "30")
    days = int(raw) if raw.isdigit() else 0
    if not 1 <= days <= 3650:
        abort(422, "inactive_days must be a whole number of days from 1 to 3650")
    return jsonify(service.churn(s, app_id, segment, days))


def _editor(form: SegmentForm, segment=None, error: TidingsError | None = None, status: int = 200):
    s = db_session()
    app_id = current_app_id()
    names = [seg.name for seg in service.list_segments(s, app_id) if segment is None or seg.id != segment.id]
    position = error.details.get("position") if error is not None else None
    return render_template("segments/edit.html", form=form, segment=segment, confirm=ConfirmForm(),
                           builder={"fields": {k: str(v) for k, v in FIELDS.items()}, "segments": names},
                           error=error, position=position), status


def _save(form: SegmentForm, segment=None):
    s = db_session()
    app_id = current_app_id()
    data = {"name": form.name.data, "query": form.query.data, "description": form.description.data or ""}
    try:
        if segment is None:
            segment = service.create_segment(s, app_id, **data)
        else:
            segment = service.update_segment(s, app_id, segment.id, **data)
    except TidingsError as exc:
        s.rollback()
        field = exc.details.get("field") if exc.details.get("field") in ("name", "query") else "query"
        if "position" not in exc.details:
            getattr(form, field).errors.append(exc.message)
        return _editor(form, None if segment is None else service.get_segment(s, app_id, segment.id),
                       error=exc if "position" in exc.details else None, status=exc.status)
    s.commit()
    flash(f'Segment "{segment.name}" saved.')
    return redirect(url_for("ui.edit_segment", segment_id=segment.id))


@bp.route("/segments/new", methods=["GET", "POST"])
def new_segment():
    form = SegmentForm()
    if request.method == "GET" and request.args.get("query"):
        form.query.data = request.args["query"][:MAX_QUERY]
    if form.validate_on_submit():
        return _save(form)
    return _editor(form, status=422 if form.errors else 200)


@bp.route("/segments/<int:segment_id>", methods=["GET", "POST"])
def edit_segment(segment_id: int):
    segment = service.get_segment(db_session(), current_app_id(), segment_id)
    form = SegmentForm(obj=segment if request.method == "GET" else None)
    if form.validate_on_submit():
        return _save(form, segment)
    return _editor(form, segment, status=422 if form.errors else 200)


@bp.post("/segments/<int:segment_id>/delete")
def delete_segment(segment_id: int):
    s = db_session()
    segment = service.get_segment(s, current_app_id(), segment_id)
    name = segment.name
    service.delete_segment(s, current_app_id(), segment_id)
    s.commit()
    flash(f'Segment "{name}" deleted.')
    return redirect(url_for("ui.segments"))


@bp.post("/segments/preview.json")
@role(Role.VIEWER)  # reads only: viewers get the live count too
def preview_segment():
    body = json_body()
    text = body.get("query") if isinstance(body, dict) else None
    if not isinstance(text, str) or len(text) > MAX_QUERY:
        abort(422, f"send {{\"query\": text}} of at most {MAX_QUERY} characters")
    return jsonify(service.preview(db_session(), current_app_id(), text))
