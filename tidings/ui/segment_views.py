"""Placeholder: the segments pages arrive in a later step."""

from __future__ import annotations

from flask import render_template_string

from tidings.ui import bp


@bp.get("/segments")
def segments():
    return render_template_string('{% extends "base.html" %}{% block main %}<h1>segments</h1>{% endblock %}')
