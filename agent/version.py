"""This agent's own version, as installed (the centre compares it; the update command moves it)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def agent_version() -> str:
    """Read once per process: the code running is the version installed when it started (an update restarts the
    agent, agent/updater.py), and the lookup parses the package's metadata with the email parser, ~0.5 ms of CPU
    that every Agent paid at its construction (issue 20: a fleet simulator builds thousands)."""
    try:
        return version("hallfleet")
    except PackageNotFoundError:
        return "0+unknown"
