"""Campaign pages: list by status, the editor (JSON built in the browser, saved through the service),
live preview for one user, lifecycle actions, and the campaign page with progress and results."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for

from campaigns import hooks, reports, service
from campaigns.models import Campaign, CampaignRun, CampaignStatus, Delivery, DeliveryStatus
from campaigns.targeting import Arm, CompiledCampaign
from campaigns.templates import InvalidTemplateError, RenderError, validate_content
from segments import people
from segments import service as segment_service
from tidings.errors import InvalidError
from tidings.models import Role
from tidings.ui import actions, bp
from tidings.ui.auth import can, current_app_id, role
from tidings.ui.forms import ConfirmForm
from tidings.web import db_session, json_body

S = CampaignStatus
# Which buttons a status offers (the service still decides: a stale page gets a 409).
ACTIONS_BY_STATUS = {
    S.DRAFT: ["launch", "cancel"], S.SCHEDULED: ["pause", "cancel"], S.RUNNING: ["pause", "cancel"],
    S.PAUSED: ["resume", "cancel"], S.FINISHED: [], S.CANCELLED: [],
}
CONFIRM = {
    "launch": "Launch this campaign? Messages go out to real people.",
    "pause": "Pause sending? Nothing more goes out until you resume.",
    "resume": "Resume sending where it stopped?",
    "cancel": "Cancel the campaign for good? Queued messages will not be sent.",
}


def campaign_data(c: Campaign) -> dict:
    """The campaign as the editor and the API know it: CONTRACT.md's definition plus id and status."""
    return {"id": c.id, "status": c.status, "name": c.name, "channel": c.channel, **c.spec}


def editable(c: Campaign) -> bool:
    return c.status in service.EDITABLE or (c.status == S.RUNNING and c.channel in service.LIVE_EDITABLE_CHANNELS)


@bp.app_template_filter("schedule_text")
def schedule_text(spec: dict) -> str:
    s = spec.get("schedule") or {"type": "now"}
    local = " (each user's local time)" if spec.get("local_time") else ""
    if s["type"] == "once":
        return f"once at {s['at']}{local}"
    if s["type"] == "recurring":
        return f"recurring, cron {s['cron']}{local}"
    if s["type"] == "triggered":
        delay = s.get("delay_minutes") or 0
        return f'when "{s["event"]}" happens' + (f", after {delay} min" if delay else "")
    return "now"


# -- list --------------------------------------------------------------------------------------


@bp.get("/campaigns")
def campaigns():
    status = request.args.get("status") or None
    if status and status not in {st.value for st in S}:
        abort(404, f"no status {status}")
    s = db_session()
    app_id = current_app_id()
    rows = service.list_campaigns(s, app_id, status)
    counts = dict(s.execute(sa.select(Campaign.status, sa.func.count()).where(Campaign.app_id == app_id)
                            .group_by(Campaign.status)).all())
    return render_template("campaigns/list.html", rows=rows, status=status, counts=counts,
                           statuses=[st.value for st in S])


# -- editor ------------------------------------------------------------------------------------


def _editor(campaign: Campaign | None):
    s = db_session()
    app_id = current_app_id()
    if campaign is None:
        channel = request.args.get("channel", "sms")
        if channel not in ("sms", "push", "inapp", "config"):
            channel = "sms"
        data = {"id": None, "status": "draft", "name": "", "channel": channel, "audience": None,
                "targets": [{"segment": None, "control_percent": 10,
                             "variants": [{"name": "A", "weight": 50, "content": {}}]}],
                "schedule": {"type": "now"}, "local_time": False}
        quiet = service.SMS_QUIET_HOURS if channel == "sms" else None
    else:
        data = campaign_data(campaign)
        quiet = service.effective_quiet_hours(campaign)
    data["quiet_hours"] = quiet
    extras = {
        "hooks": [{"key": h.key, "type": h.type, "default": h.default} for h in hooks.list_hooks(s, app_id)],
        "segments": [seg.name for seg in segment_service.list_segments(s, app_id)],
        "sms_quiet_hours": service.SMS_QUIET_HOURS,
        "urls": {"save": url_for("ui.save_campaign"), "preview": url_for("ui.preview_campaign"),
                 "count": url_for("ui.preview_segment")},
    }
    return render_template("campaigns/edit.html", campaign=campaign, data=data, extras=extras)


@bp.get("/campaigns/new")
@role(Role.MARKETER)
def new_campaign():
    return _editor(None)


@bp.get("/campaigns/<int:campaign_id>/edit")
@role(Role.MARKETER)
def edit_campaign(campaign_id: int):
    campaign = service.get_campaign(db_session(), current_app_id(), campaign_id)
    if not editable(campaign):
        flash(f"A {campaign.status} {campaign.channel} campaign cannot be edited.")
        return redirect(url_for("ui.campaign", campaign_id=campaign_id))
    return _editor(campaign)


def _template_field(session, app_id: int, spec: dict) -> str | None:
    """Where a template problem is: the first variant whose content does not compile."""
    for ti, target in enumerate(spec.get("targets") or []):
        for vi, variant in enumerate(target.get("variants") or []):
            content = variant.get("content")
            if isinstance(content, dict):
                problems = validate_content(content, channel=spec.get("channel"))
                if problems:
                    path = problems[0].path.replace("[", ".").replace("]", "")
                    return f"targets.{ti}.variants.{vi}.content.{path}"
    return None


def _body() -> tuple[int | None, dict]:
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("campaign", {}), dict):
        raise InvalidError('send {"id": optional, "campaign": {...}}')
    campaign_id = body.get("id")
    if campaign_id is not None and (not isinstance(campaign_id, int) or isinstance(campaign_id, bool)):
        raise InvalidError("id must be a campaign id", {"field": "id"})
    return campaign_id, body.get("campaign")


@bp.post("/campaigns/save.json")
def save_campaign():
    s = db_session()
    app_id = current_app_id()
    campaign_id, data = _body()
    if data is None:
        raise InvalidError("send the campaign", {"field": "campaign"})
    try:
        if campaign_id is None:
            campaign = service.create_campaign(s, app_id, data)
        else:
            campaign = service.update_campaign(s, app_id, campaign_id, data)
    except InvalidTemplateError as exc:
        s.rollback()
        field = _template_field(s, app_id, data)
        raise InvalidError(exc.message, {**exc.details, **({"field": field} if field else {})},
                           code=exc.code) from None
    s.commit()
    flash(f'Campaign "{campaign.name}" saved.')
    return jsonify({"id": campaign.id, "status": campaign.status,
                    "url": url_for("ui.campaign", campaign_id=campaign.id)})


@bp.post("/campaigns/preview.json")
@role(Role.VIEWER)  # reads only
def preview_campaign():
    """What one user would get: the saved campaign, or the editor's unsaved definition."""
    s = db_session()
    app_id = current_app_id()
    campaign_id, data = _body()
    body = json_body()
    external_id = body.get("user")
    if not isinstance(external_id, str) or not external_id.strip():
        raise InvalidError("choose a user to preview for", {"field": "user"})
    user = people.get_user(s, app_id, external_id.strip())
    if data is None:
        if campaign_id is None:
            raise InvalidError("send the campaign or its id", {"field": "campaign"})
        campaign = service.get_campaign(s, app_id, campaign_id)
    else:
        if not can(Role.MARKETER):
            abort(403, "only marketers preview unsaved campaigns")
        if isinstance(data.get("name"), str) and not data["name"].strip():
            data = {**data, "name": "Untitled"}  # a preview needs no name yet
        try:
            spec = service.validate_spec(s, app_id, data)
        except InvalidTemplateError as exc:
            field = _template_field(s, app_id, data)
            raise InvalidError(exc.message, {**exc.details, **({"field": field} if field else {})}) from None
        # A transient campaign, never added to the session: the service previews it like a saved one.
        campaign = Campaign(id=campaign_id or 0, app_id=app_id, name=spec.pop("name"),
                            channel=spec.pop("channel"), spec=spec, status=S.DRAFT)
    result = service.preview(s, campaign, user)
    forced = body.get("variant")
    if forced:
        result = _forced_variant(s, campaign, user, forced)
    result["channel"] = campaign.channel
    return jsonify(result)


def _forced_variant(session, campaign: Campaign, user, forced: str) -> dict:
    """One chosen variant rendered for this user (to read every variant's copy), "target:name"."""
    target_text, _, name = forced.partition(":")
    targets = campaign.spec["targets"]
    if not target_text.isdigit() or int(target_text) >= len(targets):
        raise InvalidError("no such target", {"field": "variant"})
    ti = int(target_text)
    names = [v["name"] for v in targets[ti]["variants"]]
    if name not in names:
        raise InvalidError(f'no variant "{name}" in target {ti + 1}', {"field": "variant"})
    compiled = CompiledCampaign(session, campaign)
    arm = Arm(ti, False, name, names.index(name))
    try:
        content = service.render_for(compiled, arm, user)
    except RenderError as exc:
        return {"target": ti, "variant": name, "control": False, "content": None, "error": exc.message,
                "forced": True}
    return {"target": ti, "variant": name, "control": False, "content": content, "forced": True}


# -- lifecycle ---------------------------------------------------------------------------------


@bp.post("/campaigns/<int:campaign_id>/<any(launch, pause, resume, cancel):action>")
def campaign_action(campaign_id: int, action: str):
    form = ConfirmForm()
    form.validate()  # the token was checked before the view; nothing else to read
    s = db_session()
    if action == "launch":
        campaign = actions.launch(s, current_app_id(), campaign_id, current_app.config["TIDINGS"])
    else:
        campaign = actions.ACTIONS[action](s, current_app_id(), campaign_id)
    flash({"launch": "Launched", "pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}[action]
          + f': "{campaign.name}" is {campaign.status}.')
    return redirect(url_for("ui.campaign", campaign_id=campaign_id))


# -- the campaign page -------------------------------------------------------------------------


def progress(session, campaign: Campaign) -> dict:
    """Counts by delivery status, the audience written so far, and the runs' states."""
    by_status = dict(session.execute(
        sa.select(Delivery.status, sa.func.count())
        .where(Delivery.campaign_id == campaign.id, ~Delivery.dedupe_key.startswith("test:"))
        .group_by(Delivery.status)).all())
    runs = session.execute(
        sa.select(CampaignRun.status, sa.func.count(), sa.func.sum(CampaignRun.audience_count))
        .where(CampaignRun.campaign_id == campaign.id, CampaignRun.scheduled_for != service.TEST_RUN_AT)
        .group_by(CampaignRun.status)).all()
    counts = {st.value: int(by_status.get(st.value, 0)) for st in DeliveryStatus}
    total = sum(counts.values())
    done = total - counts["pending"] - counts["sending"]
    return {"status": campaign.status, "counts": counts, "total": total, "done": done,
            "audience": int(sum(r[2] or 0 for r in runs)),
            "runs": {r[0]: r[1] for r in runs},
            "fanning_out": any(r[0] in ("pending", "fanning_out") for r in runs)}


SIGNIFICANT = 0.05


def p_text(p: float | None) -> str:
    if p is None:
        return "p not defined yet"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def target_label(segment: str | None, first: bool = False) -> str:
    """How a target reads in a sentence: its saved segment's name, its query, or "everyone (else)"."""
    if not segment:
        return "everyone" if first else "everyone else"
    text = segment.strip()
    if text.startswith('segment("') and text.endswith('")') and text.count('"') == 2:
        return text[len('segment("'):-2]
    return text


def verdicts(target: dict, first: bool = False) -> list[dict]:
    """Plain sentences about one target: each variant against control, and the best variant
    against each other one ("B beats A for Gold users, p = 0.003"); significant at p < 0.05."""
    who = target_label(target["segment"], first)
    out = []
    control = target["control"]
    ranked = sorted((v for v in target["variants"] if v["conversion_rate"] is not None),
                    key=lambda v: v["conversion_rate"], reverse=True)
    if len(ranked) >= 2:
        best = ranked[0]
        for other in ranked[1:]:
            p = reports.p_value(best["converted"], best["users"], other["converted"], other["users"])
            out.append(_sentence(best["name"], other["name"], best["conversion_rate"] - other["conversion_rate"], p, who))
    if control["users"]:
        for v in target["variants"]:
            if v["uplift"] is not None:
                out.append(_sentence(v["name"], "control", v["uplift"], v["p_value"], who))
    return out


def _sentence(a: str, b: str, diff: float, p: float | None, who: str) -> dict:
    points = f"{diff * 100:+.1f} points"
    if p is not None and p < SIGNIFICANT and diff > 0:
        return {"kind": "win", "text": f"{a} beats {b} for {who}, {p_text(p)} ({points})."}
    if p is not None and p < SIGNIFICANT and diff < 0:
        return {"kind": "lose", "text": f"{a} does worse than {b} for {who}, {p_text(p)} ({points})."}
    return {"kind": "none", "text": f"No clear difference yet between {a} and {b} for {who} ({p_text(p)}, {points})."}


def results_context(s, c: Campaign) -> dict:
    data = reports.report(s, c)
    for i, t in enumerate(data["targets"]):
        t["label"] = target_label(t["segment"], first=i == 0)
        t["verdicts"] = verdicts(t, first=i == 0)
    return {"c": c, "report": data, "progress": progress(s, c)}


@bp.get("/campaigns/<int:campaign_id>/results")
def campaign_results(campaign_id: int):
    """The results section alone, swapped into the campaign page while a send runs."""
    s = db_session()
    c = service.get_campaign(s, current_app_id(), campaign_id)
    return render_template("campaigns/_results.html", **results_context(s, c))


@bp.get("/campaigns/<int:campaign_id>")
def campaign(campaign_id: int):
    s = db_session()
    c = service.get_campaign(s, current_app_id(), campaign_id)
    return render_template(
        "campaigns/show.html", spec=c.spec, **results_context(s, c),
        actions=ACTIONS_BY_STATUS.get(c.status, []) if can(Role.MARKETER) else [], confirm=CONFIRM,
        can_edit=editable(c) and can(Role.MARKETER), quiet=service.effective_quiet_hours(c),
        urls={"progress": url_for("ui.campaign_progress", campaign_id=c.id),
              "results": url_for("ui.campaign_results", campaign_id=c.id),
              "preview": url_for("ui.preview_campaign")})


@bp.get("/campaigns/<int:campaign_id>/progress.json")
def campaign_progress(campaign_id: int):
    s = db_session()
    c = service.get_campaign(s, current_app_id(), campaign_id)
    return jsonify(progress(s, c))


@bp.get("/campaigns/<int:campaign_id>/report.csv")
def campaign_csv(campaign_id: int):
    s = db_session()
    c = service.get_campaign(s, current_app_id(), campaign_id)
    body = reports.report_csv(reports.report(s, c))
    return current_app.response_class(body, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="campaign-{campaign_id}-report.csv"'})

