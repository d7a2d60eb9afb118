"""Maintenance tools of the course: run, check and catalogue the notebooks. Run them from the repo root."""
