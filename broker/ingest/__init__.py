"""Ingest stages that can be used on their own: what the store refuses is isolated here (isolation.py)."""
