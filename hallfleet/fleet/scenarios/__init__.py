"""Scenario files shipped with hallfleet fleet (a package so the wheel carries its *.toml)."""
