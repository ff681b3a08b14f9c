"""Attendance by each hall's rules: raw punches (immutable events) -> staff-day verdicts -> reports."""
