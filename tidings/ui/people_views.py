"""Placeholder: the people pages arrive in a later step."""

from __future__ import annotations

from flask import render_template_string

from tidings.ui import bp


@bp.get("/people")
def people():
    return render_template_string('{% extends "base.html" %}{% block main %}<h1>people</h1>{% endblock %}')
