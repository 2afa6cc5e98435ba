"""Admin pages: apps (keys shown once), key rotation, per-app provider settings, marketer accounts."""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for

from tidings.accounts import create_account
from tidings.apps import create_app_record
from tidings.config import provider_config, push_configured, sms_configured
from tidings.errors import InvalidError, TidingsError
from tidings.models import Account, App, KeyKind, Role
from tidings.ui import bp
from tidings.ui.auth import role
from tidings.ui.forms import AccountEditForm, AccountForm, AppForm, ConfirmForm, ProviderForm
from tidings.web import db_session

PLAIN_FIELDS = ("twilio_account_sid", "twilio_from", "twilio_messaging_service_sid")
SECRET_FIELDS = ("twilio_auth_token", "fcm_credentials")


# -- apps --------------------------------------------------------------------------------------


@bp.route("/admin/apps", methods=["GET", "POST"])
@role(Role.ADMIN)
def apps():
    s = db_session()
    form = AppForm()
    if form.validate_on_submit():
        try:
            record, server_key, client_key = create_app_record(s, form.name.data)
        except TidingsError as exc:
            form.name.errors.append(exc.message)
        else:
            s.commit()
            session["app_id"] = record.id
            # Rendered, not redirected: the plain keys exist in this response only.
            return render_template("admin/keys_once.html", record=record,
                                   keys={"Server key": server_key, "Client key": client_key})
    rows = s.scalars(sa.select(App).order_by(App.name, App.id)).all()
    return render_template("admin/apps.html", rows=rows, form=form), 422 if form.errors else 200


def _app_or_404(app_id: int) -> App:
    record = db_session().get(App, app_id)
    if record is None:
        abort(404, f"no app {app_id}")
    return record


def secret_hint(key: str, value: str | None) -> str | None:
    """What the page may say about a saved secret: that it is set, and a harmless hint."""
    if not value:
        return None
    if key == "fcm_credentials":
        try:
            info = json.loads(value)
            return f'set (project {info.get("project_id", "?")}, {info.get("client_email", "service account")})'
        except ValueError:
            return "set (a file path)"
    return f"set (ends …{value[-4:]})" if len(value) >= 12 else "set"


def check_fcm_json(text: str) -> None:
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise InvalidError(f"not JSON: {exc}", {"field": "fcm_credentials"}) from None
    missing = [k for k in ("project_id", "client_email", "private_key") if not isinstance(info, dict) or not info.get(k)]
    if missing:
        raise InvalidError(f"a Firebase service-account JSON needs {', '.join(missing)}", {"field": "fcm_credentials"})


def save_provider_settings(record: App, form: ProviderForm) -> None:
    """Plain fields replace (blank clears); secrets replace only when given, or on "remove"."""
    new = dict(record.settings or {})
    for key in PLAIN_FIELDS:
        value = (getattr(form, key).data or "").strip()
        if value:
            new[key] = value
        else:
            new.pop(key, None)
    for key in SECRET_FIELDS:
        value = (getattr(form, key).data or "").strip()
        if getattr(form, f"clear_{key}").data:
            new.pop(key, None)
        elif value:
            if key == "fcm_credentials":
                check_fcm_json(value)
            new[key] = value
    record.settings = new  # a new dict: JSON columns do not track in-place changes


@bp.route("/admin/apps/<int:app_id>", methods=["GET", "POST"])
@role(Role.ADMIN)
def app_settings(app_id: int):
    s = db_session()
    record = _app_or_404(app_id)
    saved = record.settings or {}
    form = ProviderForm(data={k: saved.get(k, "") for k in PLAIN_FIELDS} if request.method == "GET" else None)
    status = 200
    if form.validate_on_submit():
        try:
            save_provider_settings(record, form)
        except InvalidError as exc:
            getattr(form, exc.details.get("field", "fcm_credentials")).errors.append(exc.message)
            s.rollback()
        else:
            s.commit()
            flash("Provider settings saved.")
            return redirect(url_for("ui.app_settings", app_id=app_id))
    if form.errors:
        status = 422
    config = provider_config(current_app.config["TIDINGS"], record.settings)
    return render_template(
        "admin/app_settings.html", record=record, form=form, confirm=ConfirmForm(),
        hints={k: secret_hint(k, saved.get(k)) for k in SECRET_FIELDS},
        sms_ready=sms_configured(config), push_ready=push_configured(config)), status


@bp.post("/admin/apps/<int:app_id>/rotate/<kind>")
@role(Role.ADMIN)
def rotate_key(app_id: int, kind: str):
    try:
        key_kind = KeyKind(kind)
    except ValueError:
        abort(404, f"no {kind} key")
    s = db_session()
    record = _app_or_404(app_id)
    key = record.rotate_key(key_kind)
    s.commit()
    return render_template("admin/keys_once.html", record=record, rotated=True,
                           keys={f"New {key_kind.value} key": key})


# -- accounts ----------------------------------------------------------------------------------


@bp.route("/admin/accounts", methods=["GET", "POST"])
@role(Role.ADMIN)
def accounts():
    s = db_session()
    form = AccountForm()
    if form.validate_on_submit():
        try:
            account = create_account(s, form.email.data, form.role.data, form.password.data)
        except TidingsError as exc:
            field = getattr(form, exc.details.get("field", "email"), form.email)
            field.errors.append(exc.message)
            s.rollback()
        else:
            s.commit()
            flash(f"Account {account.email} created ({account.role}).")
            return redirect(url_for("ui.accounts"))
    rows = s.scalars(sa.select(Account).order_by(Account.email)).all()
    edit_forms = {a.id: AccountEditForm(prefix=f"a{a.id}", data={"role": a.role, "active": a.active}) for a in rows}
    return render_template("admin/accounts.html", rows=rows, form=form, edit_forms=edit_forms), \
        422 if form.errors else 200


@bp.post("/admin/accounts/<int:account_id>")
@role(Role.ADMIN)
def edit_account(account_id: int):
    s = db_session()
    account = s.get(Account, account_id)
    if account is None:
        abort(404, f"no account {account_id}")
    form = AccountEditForm(prefix=f"a{account_id}")
    if not form.validate_on_submit():
        abort(422, "choose a role")
    if account.id == g.account.id and (form.role.data != Role.ADMIN or not form.active.data):
        abort(409, "you cannot demote or deactivate yourself; ask another admin")
    account.role, account.active = form.role.data, bool(form.active.data)
    s.commit()
    flash(f"{account.email}: {account.role}, {'active' if account.active else 'inactive'}.")
    return redirect(url_for("ui.accounts"))

