"""Users, events and CSV imports (CONTRACT.md "Users and events")."""

from __future__ import annotations

from flask import jsonify, request

from scheduler import triggers
from scheduler.queues import QueueName, enqueue
from segments import fastpath, imports, people
from segments.models import UserImport
from segments.schemas import EventsBatchSchema, UserFieldsSchema, UsersBatchSchema
from segments.service import segments_of_user
from tidings.api import bp
from tidings.api.auth import caller, client_allowed
from tidings.errors import ForbiddenError, InvalidError, NotFoundError
from tidings.models import KeyKind
from tidings.web import db_session, json_body, load

SERVER_ONLY_FIELDS = ("phone", "sms_opt_in")


def iso(value):
    return value.isoformat() if value is not None else None


def device_json(device) -> dict:
    return {
        "id": device.device_id, "platform": device.platform, "device_type": device.device_type,
        "os_version": device.os_version, "app_version": device.app_version,
        "push_token": device.push_token, "push_token_valid": device.push_token_valid,
        "updated_at": iso(device.updated_at),
    }


def user_json(user, segment_ids=None) -> dict:
    body = {
        "id": user.external_id, "external_id": user.external_id, "attributes": user.attributes or {},
        **{f: getattr(user, f) for f in people.PROFILE_FIELDS},
        "created_at": iso(user.created_at), "updated_at": iso(user.updated_at),
        "last_seen_at": iso(user.last_seen_at),
        "devices": [device_json(d) for d in user.devices],
    }
    if segment_ids is not None:
        body["segments"] = segment_ids
    return body


def _known_shape(external_id: str) -> None:
    """A user id no user can have (NUL, which PostgreSQL text cannot hold) is a 404, not a database error."""
    if "\x00" in external_id:
        raise NotFoundError(f"no user {external_id!r}", {"user": external_id})


@bp.put("/users/<string:external_id>")
@client_allowed
def put_user(external_id: str):
    if len(external_id) > 255:
        raise InvalidError("the user id is longer than 255 characters", {"field": "external_id"})
    if "\x00" in external_id:  # PostgreSQL text cannot hold it
        raise InvalidError("the user id contains a NUL character", {"field": "external_id"})
    body = json_body()
    if caller().kind is KeyKind.CLIENT and isinstance(body, dict):
        named = [f for f in SERVER_ONLY_FIELDS if f in body]
        if named:
            raise ForbiddenError(
                f"a client key may not set {' or '.join(named)}: SMS numbers and consent come from your server",
                {"fields": named},
            )
    data = fastpath.user_fields(body)
    if data is None:
        data = load(UserFieldsSchema(), body)
    session = db_session()
    app_id = caller().app_id
    (_, created), = people.upsert_users(session, app_id, [(external_id, data)]).values()
    session.commit()
    user = people.get_user(session, app_id, external_id)
    return jsonify(user_json(user)), 201 if created else 200


@bp.post("/users/batch")
def batch_users():
    body = json_body()
    users = fastpath.users_batch(body)
    if users is None:
        users = load(UsersBatchSchema(), body)["users"]
    session = db_session()
    items = [(u.pop("external_id"), u) for u in users]
    result = people.upsert_users(session, caller().app_id, items)
    session.commit()
    created = sum(1 for _, was_created in result.values() if was_created)
    return jsonify({"accepted": len(items), "created": created, "updated": len(result) - created})


@bp.get("/users/<string:external_id>")
def get_user(external_id: str):
    _known_shape(external_id)
    session = db_session()
    user = people.get_user(session, caller().app_id, external_id)
    return jsonify(user_json(user, segments_of_user(session, caller().app_id, user)))


@bp.delete("/users/<string:external_id>")
def delete_user(external_id: str):
    _known_shape(external_id)
    session = db_session()
    people.erase_user(session, caller().app_id, external_id)
    session.commit()
    return "", 204


@bp.post("/events")
@client_allowed
def post_events():
    body = json_body()
    batch = fastpath.events_batch(body, request.get_data(cache=True))
    if batch is None:
        batch = load(EventsBatchSchema(), body)["events"]
    session = db_session()
    app_id = caller().app_id
    campaigns = triggers.watching(session, app_id, {e["name"] for e in batch})
    # Only the events some running campaign is triggered by come back from the database.
    stored = people.ingest_events(session, app_id, batch, returning={c.trigger_event for c in campaigns})
    triggers.on_events(session, app_id, campaigns, stored)
    session.commit()
    return jsonify({"accepted": len(batch)}), 202


def import_json(imp: UserImport) -> dict:
    return {
        "id": imp.id, "status": imp.status, "filename": imp.filename,
        "total_rows": imp.total_rows, "processed_rows": imp.processed_rows,
        "imported_rows": imp.imported_rows, "error_count": imp.error_count,
        "errors": imp.errors or [], "message": imp.message, "created_at": iso(imp.created_at),
        "started_at": iso(imp.started_at), "finished_at": iso(imp.finished_at),
    }


@bp.post("/imports/users")
def import_users():
    upload = request.files.get("file")
    if upload is None:
        raise InvalidError('send the CSV as multipart/form-data in a field named "file"', {"field": "file"})
    content = upload.read()
    imports.check_header(imports.decode(content))
    session = db_session()
    imp = UserImport(app_id=caller().app_id, filename=(upload.filename or "")[:255], content=content,
                     errors=[])
    session.add(imp)
    session.commit()  # commit before enqueueing, or the worker races the row
    enqueue(QueueName.IMPORTS, imports.JOB, imp.id, job_timeout=3600, on_failure=imports.FAILED)
    return jsonify(import_json(imp)), 202


@bp.get("/imports/<int:import_id>")
def get_import(import_id: int):
    imp = db_session().get(UserImport, import_id)
    if imp is None or imp.app_id != caller().app_id:
        raise NotFoundError(f"no import {import_id}")
    return jsonify(import_json(imp))
