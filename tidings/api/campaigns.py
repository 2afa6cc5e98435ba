"""Campaigns (CONTRACT.md "Campaigns") and power hooks."""

from __future__ import annotations

from flask import current_app, jsonify, request
from marshmallow import RAISE, Schema, fields, validate

from campaigns import hooks, service
from campaigns.models import Delivery
from scheduler import fanout
from segments import people
from tidings.api import bp, openapi
from tidings.api.auth import caller
from tidings.api.people import iso
from tidings.models import App
from tidings.web import db_session, inactive_days_arg, json_body, load


def campaign_json(c) -> dict:
    return {"id": c.id, "name": c.name, "channel": c.channel, "status": c.status, **c.spec,
            "version": c.version, "next_run_at": iso(c.next_run_at), "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at), "launched_at": iso(c.launched_at), "finished_at": iso(c.finished_at)}


@bp.post("/campaigns")
def create_campaign():
    session = db_session()
    campaign = service.create_campaign(session, caller().app_id, json_body())
    session.commit()
    return jsonify(campaign_json(campaign)), 201


@bp.get("/campaigns")
def list_campaigns():
    status = request.args.get("status")
    found = service.list_campaigns(db_session(), caller().app_id, status)
    return jsonify({"campaigns": [campaign_json(c) for c in found]})


@bp.get("/campaigns/<int:campaign_id>")
def get_campaign(campaign_id: int):
    return jsonify(campaign_json(service.get_campaign(db_session(), caller().app_id, campaign_id)))


@bp.put("/campaigns/<int:campaign_id>")
def update_campaign(campaign_id: int):
    session = db_session()
    campaign = service.update_campaign(session, caller().app_id, campaign_id, json_body())
    session.commit()
    return jsonify(campaign_json(campaign))


def _transition(campaign_id: int, action):
    session = db_session()
    campaign = service.get_campaign(session, caller().app_id, campaign_id, lock=True)
    result = action(session, campaign)
    session.commit()  # commit before enqueueing, or the worker races the rows
    return campaign, result


@bp.post("/campaigns/<int:campaign_id>/launch")
def launch_campaign(campaign_id: int):
    settings = current_app.config["TIDINGS"]
    campaign, run_ids = _transition(campaign_id, lambda s, c: service.launch(s, c, settings))
    fanout.enqueue_runs(run_ids)
    return jsonify(campaign_json(campaign))


@bp.post("/campaigns/<int:campaign_id>/pause")
def pause_campaign(campaign_id: int):
    campaign, _ = _transition(campaign_id, service.pause)
    return jsonify(campaign_json(campaign))


@bp.post("/campaigns/<int:campaign_id>/resume")
def resume_campaign(campaign_id: int):
    campaign, _ = _transition(campaign_id, service.resume)
    fanout.requeue_campaign(db_session(), campaign)
    return jsonify(campaign_json(campaign))


@bp.post("/campaigns/<int:campaign_id>/cancel")
def cancel_campaign(campaign_id: int):
    campaign, _ = _transition(campaign_id, service.cancel)
    return jsonify(campaign_json(campaign))


@bp.get("/campaigns/<int:campaign_id>/report")
def campaign_report(campaign_id: int):
    from flask import Response

    from campaigns import reports

    days = inactive_days_arg()
    session = db_session()
    campaign = service.get_campaign(session, caller().app_id, campaign_id)
    data = reports.report(session, campaign, inactive_days=days)
    if request.args.get("format") == "csv":
        return Response(reports.report_csv(data), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}-report.csv"'})
    return jsonify(data)


class PreviewUserSchema(Schema):
    class Meta:
        unknown = RAISE

    user = fields.Str(required=True, validate=validate.Length(1, 255))


@bp.post("/campaigns/<int:campaign_id>/preview")
def preview_campaign(campaign_id: int):
    data = load(PreviewUserSchema())
    session = db_session()
    campaign = service.get_campaign(session, caller().app_id, campaign_id)
    user = people.get_user(session, caller().app_id, data["user"])
    return jsonify(service.preview(session, campaign, user))


class TestSendSchema(Schema):
    class Meta:
        unknown = RAISE

    user = fields.Str(required=True, validate=validate.Length(1, 255))
    variant = fields.Str(validate=validate.Length(1, 50))


@bp.post("/campaigns/<int:campaign_id>/test")
def test_send(campaign_id: int):
    """Send one variant to one user now (synchronously), whatever the campaign's state."""
    from scheduler.send import send_batch

    data = load(TestSendSchema())
    session = db_session()
    campaign = service.get_campaign(session, caller().app_id, campaign_id)
    user = people.get_user(session, caller().app_id, data["user"])
    service.check_provider(campaign, current_app.config["TIDINGS"], session.get(App, campaign.app_id))
    delivery = service.create_test_delivery(session, campaign, user, data.get("variant"))
    [batch_id] = fanout.make_batches(session, campaign.app_id, campaign.id, [delivery.id], delivery.send_after)
    session.commit()
    send_batch(batch_id, force=True)
    session.expire_all()
    delivery = session.get(Delivery, delivery.id)
    return jsonify({"delivery_id": delivery.id, "status": delivery.status, "variant": delivery.variant,
                    "reason": delivery.reason, "error": delivery.error, "content": delivery.content})


# -- power hooks ---------------------------------------------------------------------------------


class HookSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.Str(required=True, validate=validate.Length(1, 100))
    type = fields.Str(required=True, validate=validate.OneOf(hooks.HOOK_TYPES))
    default = fields.Raw(required=True, allow_none=True)
    description = fields.Str(load_default="", validate=validate.Length(max=2000))


class HookUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.Str(validate=validate.OneOf(hooks.HOOK_TYPES))
    default = fields.Raw(allow_none=True)
    description = fields.Str(validate=validate.Length(max=2000))


def hook_json(h) -> dict:
    return {"id": h.id, "key": h.key, "type": h.type, "default": h.default, "description": h.description,
            "created_at": iso(h.created_at), "updated_at": iso(h.updated_at)}


@bp.post("/hooks")
def create_hook():
    data = load(HookSchema())
    session = db_session()
    hook = hooks.create_hook(session, caller().app_id, data["key"], data["type"], data["default"], data["description"])
    session.commit()
    return jsonify(hook_json(hook)), 201


@bp.get("/hooks")
def list_hooks():
    return jsonify({"hooks": [hook_json(h) for h in hooks.list_hooks(db_session(), caller().app_id)]})


@bp.put("/hooks/<string:key>")
def update_hook(key: str):
    data = load(HookUpdateSchema())
    session = db_session()
    hook = hooks.update_hook(session, caller().app_id, key, data)
    session.commit()
    return jsonify(hook_json(hook))


@bp.delete("/hooks/<string:key>")
def delete_hook(key: str):
    session = db_session()
    hooks.delete_hook(session, caller().app_id, key)
    session.commit()
    return "", 204


for _path, _method, _summary in [
    ("/campaigns", "post", "Create a campaign (draft)"),
    ("/campaigns", "get", "List campaigns (?status=)"),
    ("/campaigns/{campaign_id}", "get", "One campaign"),
    ("/campaigns/{campaign_id}", "put", "Change a draft, scheduled or paused campaign"),
    ("/campaigns/{campaign_id}/launch", "post", "draft -> scheduled or running"),
    ("/campaigns/{campaign_id}/pause", "post", "scheduled/running -> paused"),
    ("/campaigns/{campaign_id}/resume", "post", "paused -> what it was"),
    ("/campaigns/{campaign_id}/cancel", "post", "stop for good"),
    ("/campaigns/{campaign_id}/preview", "post", "What one user would get"),
    ("/campaigns/{campaign_id}/test", "post", "Send one variant to one user now (test send)"),
    ("/campaigns/{campaign_id}/report", "get", "Funnel, conversions, uplift, p-values, churn (?format=csv, ?inactive_days=30)"),
    ("/hooks", "post", "Create a power hook"),
    ("/hooks", "get", "List power hooks"),
    ("/hooks/{key}", "put", "Change a hook's default or description"),
    ("/hooks/{key}", "delete", "Delete a hook no campaign overrides"),
]:
    openapi.register(_path, _method, _summary)
