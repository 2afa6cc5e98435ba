"""Who is signed in, what they may do, which app they are looking at; login, logout, CSRF, errors.

Roles rank viewer < marketer < admin. A page is open to every role by default; every unsafe
request (POST) needs a marketer unless its view says otherwise with `@role(...)`. The check
runs before the view, so a hidden form posted by hand is refused all the same (403).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (abort, current_app, flash, g, jsonify, redirect, render_template, request, session,
                   url_for)
from flask_wtf.csrf import CSRFError, CSRFProtect
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from tidings.accounts import check_password
from tidings.api.errors import validation_details
from tidings.errors import TidingsError
from tidings.limits import limiter
from tidings.models import Account, App, Role
from tidings.ui import bp
from tidings.ui.forms import LoginForm
from tidings.web import db_session

log = logging.getLogger(__name__)

csrf = CSRFProtect()
RANK = {Role.VIEWER: 0, Role.MARKETER: 1, Role.ADMIN: 2}
PUBLIC = {"ui.login", "ui.static"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
       "frame-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def init_app(app) -> None:
    # CSRF is checked by this blueprint's before_request only: /api and /webhooks authenticate
    # by key or signature and must not need a token.
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid for the session: long-open editors
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    settings = app.config["TIDINGS"]
    if settings.public_base_url.startswith("https://"):
        app.config.setdefault("SESSION_COOKIE_SECURE", True)
    csrf.init_app(app)


# -- roles -------------------------------------------------------------------------------------


def role(minimum: Role):
    """The least role a view needs, for every method it answers."""
    def mark(view):
        view.ui_role = minimum
        return view
    return mark


def can(minimum: Role | str) -> bool:
    account = g.get("account")
    return account is not None and RANK[Role(account.role)] >= RANK[Role(minimum)]


def wants_json() -> bool:
    return request.path.endswith(".json")


def current_app_id() -> int:
    """The app the marketer is looking at; pages that need one redirect when there is none."""
    if g.get("app") is None:
        abort(409, "there is no app yet: an admin creates one under Admin > Apps")
    return g.app.id


@bp.before_request
def load_login():
    if request.endpoint in PUBLIC:
        return None
    account_id = session.get("account_id")
    account = db_session().get(Account, account_id) if account_id else None
    if account is None or not account.active or session.get("auth") != _fingerprint(account):
        session.clear()
        if wants_json():
            return jsonify({"error": {"code": "unauthorized", "message": "sign in again"}}), 401
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    g.account = account
    view = current_app.view_functions.get(request.endpoint)
    needed = getattr(view, "ui_role", None)
    if request.method not in SAFE_METHODS:
        csrf.protect()
        needed = needed or Role.MARKETER
    if needed and not can(needed):
        abort(403, f"your role ({account.role}) may not do this; it needs {needed}")
    _load_apps()
    return None


def _fingerprint(account: Account) -> str:
    # Tied to the password hash: changing a password signs out every other session.
    return account.password_hash[-12:]


def _load_apps() -> None:
    rows = db_session().execute(sa.select(App.id, App.name).order_by(App.name, App.id)).all()
    g.apps = rows
    wanted = session.get("app_id")
    chosen = next((r for r in rows if r.id == wanted), rows[0] if rows else None)
    g.app = db_session().get(App, chosen.id) if chosen else None
    if chosen and chosen.id != wanted:
        session["app_id"] = chosen.id


@bp.app_template_global()
def ui_can(minimum: str) -> bool:
    return can(minimum)


@bp.app_template_filter("json_text")
def json_text(value) -> str:
    """JSON for reading (autoescaped like any text), unlike `tojson`, which is for <script>."""
    return json.dumps(value, ensure_ascii=False, default=str)


@bp.after_request
def security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "ui.static":
        # Pages may show a key or a secret once; never keep them in a cache or the back button.
        response.headers["Cache-Control"] = "no-store"
    return response


# -- errors: pages get a page, the UI's JSON endpoints get the API's error shape -------------


def _error(status: int, message: str, details: dict | None = None, code: str = "error"):
    if wants_json():
        return jsonify({"error": {"code": code, "message": message, "details": details or {}}}), status
    return render_template("error.html", status=status, message=message), status


@bp.errorhandler(TidingsError)
def tidings_error(exc: TidingsError):
    return _error(exc.status, exc.message, exc.details, exc.code)


@bp.errorhandler(ValidationError)
def validation_error(exc: ValidationError):
    message, details = validation_details(exc.messages)  # the API's wording and `details.field`
    return _error(422, message, details, "invalid")


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError):
    return _error(400, f"{exc.description} Reload the page and try again.", code="csrf")


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return _error(exc.code or 500, exc.description or exc.name, code=exc.name.lower().replace(" ", "_"))


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(500, "Something went wrong on our side; nothing was changed.", code="internal")


# -- login -------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target:
        return url_for("ui.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("ui.home")
    return target


def _login_limit_key() -> str:
    return f"ui-login:{request.remote_addr}"


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("30 per minute", key_func=_login_limit_key, methods=["POST"])
def login():
    form = LoginForm()
    if request.method == "POST":
        csrf.protect()
    if form.validate_on_submit():
        s = db_session()
        account = check_password(s, form.email.data, form.password.data)
        if account is None:
            form.password.errors.append("Wrong email or password.")
        else:
            s.commit()  # a rehashed password is kept
            session.clear()  # a fresh session: nothing carried over from before login
            session["account_id"] = account.id
            session["auth"] = _fingerprint(account)
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
    status = 401 if request.method == "POST" else 200
    return render_template("login.html", form=form), status


@bp.post("/logout")
@role(Role.VIEWER)
def logout():
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("ui.login"))


@bp.post("/switch-app")
@role(Role.VIEWER)
def switch_app():
    try:
        app_id = int(request.form.get("app_id", ""))
    except ValueError:
        abort(400, "choose an app")
    if db_session().get(App, app_id) is None:
        abort(404, f"no app {app_id}")
    session["app_id"] = app_id
    return redirect(_safe_next(request.form.get("next")))
