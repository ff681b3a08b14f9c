"""Benchmarks: run as modules (``python -m bench.ingest``); they print figures and assert nothing."""
