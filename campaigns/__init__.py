"""Campaigns: targets, variants, assignment, templates, lifecycle, hooks and reports."""
