"""Placeholder: the hooks pages arrive in a later step."""

from __future__ import annotations

from flask import render_template_string

from tidings.ui import bp


@bp.get("/hooks")
def hooks():
    return render_template_string('{% extends "base.html" %}{% block main %}<h1>hooks</h1>{% endblock %}')
