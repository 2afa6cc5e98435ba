"""The UI's HTML forms (flask-wtf: each carries its CSRF token). Services still do the real checks."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from tidings.models import Role

ROLE_CHOICES = [r.value for r in Role]  # plain values: tuples are deprecated in wtforms 3.3


class LoginForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=320)],
                        render_kw={"autocomplete": "username", "inputmode": "email"})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)],
                             render_kw={"autocomplete": "current-password"})


class AppForm(FlaskForm):
    name = StringField("App name", validators=[DataRequired(), Length(max=200)])


class ProviderForm(FlaskForm):
    """Per-app provider settings. Secrets are write-only: blank keeps the saved value."""

    twilio_account_sid = StringField("Twilio account SID", validators=[Optional(), Length(max=64)])
    twilio_auth_token = PasswordField("Twilio auth token", validators=[Optional(), Length(max=200)],
                                      render_kw={"autocomplete": "new-password"})
    clear_twilio_auth_token = BooleanField("Remove the saved auth token")
    twilio_from = StringField("Twilio sender (From number)", validators=[Optional(), Length(max=32)])
    twilio_messaging_service_sid = StringField("Twilio messaging service SID",
                                               validators=[Optional(), Length(max=64)])
    fcm_credentials = TextAreaField("Firebase service-account JSON", validators=[Optional(), Length(max=20_000)],
                                    render_kw={"rows": 4, "spellcheck": "false", "autocomplete": "off"})
    clear_fcm_credentials = BooleanField("Remove the saved service account")


class AccountForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=320)])
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.MARKETER.value)
    password = PasswordField("Password (at least 8 characters)", validators=[DataRequired(), Length(max=1000)],
                             render_kw={"autocomplete": "new-password"})


class AccountEditForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)
    active = BooleanField("Active (may sign in)")


class SegmentForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    query = TextAreaField("Query", validators=[DataRequired(), Length(max=10_000)],
                          render_kw={"rows": 4, "spellcheck": "false", "autocomplete": "off",
                                     "autocapitalize": "off"})
    description = StringField("Description", validators=[Optional(), Length(max=2000)])


class HookForm(FlaskForm):
    key = StringField("Key", validators=[DataRequired(), Length(max=100)])
    type = SelectField("Type", choices=["string", "number", "boolean", "json"])
    default = TextAreaField("Default value", validators=[Optional(), Length(max=20_000)],
                            render_kw={"rows": 2, "spellcheck": "false"})
    description = StringField("Description", validators=[Optional(), Length(max=2000)])


class HookEditForm(FlaskForm):
    default = TextAreaField("Default value", validators=[Optional(), Length(max=20_000)],
                            render_kw={"rows": 2, "spellcheck": "false"})
    description = StringField("Description", validators=[Optional(), Length(max=2000)])


class ConfirmForm(FlaskForm):
    """An action button: only the CSRF token."""
