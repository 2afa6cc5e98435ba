"""Power hook pages: the list, create, edit a default, see which campaigns override a hook, delete."""

from __future__ import annotations

import json

from flask import flash, redirect, render_template, request, url_for

from campaigns import hooks
from tidings.errors import InvalidError, TidingsError
from tidings.ui import bp
from tidings.ui.auth import current_app_id
from tidings.ui.forms import ConfirmForm, HookEditForm, HookForm
from tidings.web import db_session


def parse_value(hook_type: str, text: str | None):
    """A typed value from the text box: numbers, true/false and JSON as written; strings as is."""
    text = text or ""
    if hook_type == "string":
        return text
    if hook_type == "boolean":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise InvalidError('write true or false', {"field": "default"})
        return lowered == "true"
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidError(f"not a {hook_type}: write it as JSON" if hook_type == "json" else "not a number",
                           {"field": "default"}) from None
    return value


def value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@bp.route("/hooks", methods=["GET", "POST"])
def hooks_page():
    s = db_session()
    app_id = current_app_id()
    form = HookForm()
    if form.validate_on_submit():
        try:
            hook = hooks.create_hook(s, app_id, form.key.data.strip(), form.type.data,
                                     parse_value(form.type.data, form.default.data), form.description.data or "")
        except TidingsError as exc:
            s.rollback()
            getattr(form, exc.details.get("field", "key"), form.key).errors.append(exc.message)
        else:
            s.commit()
            flash(f'Hook "{hook.key}" created.')
            return redirect(url_for("ui.hooks_page"))
    rows = [(h, hooks.overriding_campaigns(s, app_id, h.key)) for h in hooks.list_hooks(s, app_id)]
    return render_template("hooks/list.html", rows=rows, form=form, value_text=value_text), \
        422 if form.errors else 200


@bp.route("/hooks/<key>", methods=["GET", "POST"])
def hook(key: str):
    s = db_session()
    app_id = current_app_id()
    found = hooks.get_hook(s, app_id, key)
    form = HookEditForm(data={"default": value_text(found.default), "description": found.description}
                        if request.method == "GET" else None)
    if form.validate_on_submit():
        try:
            hooks.update_hook(s, app_id, key, {"default": parse_value(found.type, form.default.data),
                                               "description": form.description.data or ""})
        except TidingsError as exc:
            s.rollback()
            getattr(form, exc.details.get("field", "default"), form.default).errors.append(exc.message)
        else:
            s.commit()
            flash(f'Hook "{key}" saved.')
            return redirect(url_for("ui.hook", key=key))
    found = hooks.get_hook(s, app_id, key)
    return render_template("hooks/edit.html", hook=found, form=form, confirm=ConfirmForm(),
                           campaigns=hooks.overriding_campaigns(s, app_id, key)), 422 if form.errors else 200


@bp.post("/hooks/<key>/delete")
def delete_hook(key: str):
    s = db_session()
    hooks.delete_hook(s, current_app_id(), key)
    s.commit()
    flash(f'Hook "{key}" deleted.')
    return redirect(url_for("ui.hooks_page"))
