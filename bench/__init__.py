"""Benchmarks that print figures (see each script's docstring)."""
