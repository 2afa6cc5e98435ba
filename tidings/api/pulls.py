"""What mobile apps pull with their client key: in-app messages, hook values; and interactions."""

from __future__ import annotations

from flask import jsonify
from marshmallow import RAISE, Schema, fields, validate

from campaigns import pulls
from tidings.api import bp, openapi
from tidings.api.auth import caller, client_allowed
from tidings.limits import client_limit
from tidings.web import db_session, load


@bp.get("/users/<string:external_id>/inapp")
@client_allowed
@client_limit
def pull_inapp(external_id: str):
    session = db_session()
    c = caller()
    messages = pulls.inapp_messages(session, c.app_id, c.config_version, external_id)
    session.commit()
    return jsonify({"messages": messages})


@bp.get("/users/<string:external_id>/hooks")
@client_allowed
@client_limit
def pull_hooks(external_id: str):
    session = db_session()
    c = caller()
    values = pulls.hook_values(session, c.app_id, c.config_version, external_id)
    session.commit()
    return jsonify(values)


class InteractionSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.Str(required=True, validate=validate.OneOf(pulls.INTERACTIONS))


@bp.post("/deliveries/<int:delivery_id>/interactions")
@client_allowed
@client_limit
def post_interaction(delivery_id: int):
    data = load(InteractionSchema())
    session = db_session()
    pulls.record_interaction(session, caller().app_id, delivery_id, data["type"])
    session.commit()
    return "", 204


for _path, _method, _summary, _schema in [
    ("/users/{external_id}/inapp", "get", "In-app messages running campaigns hold for this user now", None),
    ("/users/{external_id}/hooks", "get", "Every power hook's value for this user, and the arms that set them", None),
    ("/deliveries/{delivery_id}/interactions", "post", "Record an impression, click, dismiss or open", InteractionSchema),
]:
    openapi.register(_path, _method, _summary, _schema, client=True)
