"""Segments: named queries in the segment language, with size, preview and churn."""

from __future__ import annotations

from flask import jsonify
from marshmallow import RAISE, Schema, fields, validate

from segments import service
from tidings.api import bp
from tidings.api.auth import caller
from tidings.api.people import iso
from tidings.web import db_session, inactive_days_arg, load


class SegmentSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(1, 200))
    query = fields.Str(required=True, validate=validate.Length(1, 10_000))
    description = fields.Str(load_default="", validate=validate.Length(max=2_000))


class PreviewSchema(Schema):
    class Meta:
        unknown = RAISE

    query = fields.Str(required=True, validate=validate.Length(1, 10_000))


def segment_json(segment) -> dict:
    return {"id": segment.id, "name": segment.name, "query": segment.query,
            "description": segment.description, "created_at": iso(segment.created_at),
            "updated_at": iso(segment.updated_at)}


@bp.post("/segments")
def create_segment():
    data = load(SegmentSchema())
    session = db_session()
    segment = service.create_segment(session, caller().app_id, data["name"], data["query"], data["description"])
    session.commit()
    return jsonify(segment_json(segment)), 201


@bp.get("/segments")
def list_segments():
    return jsonify({"segments": [segment_json(s) for s in service.list_segments(db_session(), caller().app_id)]})


@bp.get("/segments/<int:segment_id>")
def get_segment(segment_id: int):
    return jsonify(segment_json(service.get_segment(db_session(), caller().app_id, segment_id)))


@bp.put("/segments/<int:segment_id>")
def update_segment(segment_id: int):
    data = load(SegmentSchema(partial=True))
    session = db_session()
    segment = service.update_segment(session, caller().app_id, segment_id, **data)
    session.commit()
    return jsonify(segment_json(segment))


@bp.delete("/segments/<int:segment_id>")
def delete_segment(segment_id: int):
    session = db_session()
    service.delete_segment(session, caller().app_id, segment_id)
    session.commit()
    return "", 204


@bp.get("/segments/<int:segment_id>/size")
def segment_size(segment_id: int):
    session = db_session()
    segment = service.get_segment(session, caller().app_id, segment_id)
    node = service.compile_query(session, caller().app_id, segment.query)
    return jsonify({"count": service.count_users(session, caller().app_id, node)})


@bp.post("/segments/preview")
def preview_segment():
    data = load(PreviewSchema())
    return jsonify(service.preview(db_session(), caller().app_id, data["query"]))


@bp.get("/segments/<int:segment_id>/churn")
def segment_churn(segment_id: int):
    days = inactive_days_arg()
    session = db_session()
    segment = service.get_segment(session, caller().app_id, segment_id)
    return jsonify(service.churn(session, caller().app_id, segment, days))
