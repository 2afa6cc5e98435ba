"""Placeholder: the campaigns pages arrive in a later step."""

from __future__ import annotations

from flask import render_template_string

from tidings.ui import bp


@bp.get("/campaigns")
def campaigns():
    return render_template_string('{% extends "base.html" %}{% block main %}<h1>campaigns</h1>{% endblock %}')


@bp.get("/campaigns/new")
def new_campaign():
    return campaigns()


@bp.get("/campaigns/<int:campaign_id>")
def campaign(campaign_id: int):
    return campaigns()
