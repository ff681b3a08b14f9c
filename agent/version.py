"""This agent's own version, as installed (the centre compares it; the update command moves it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def agent_version() -> str:
    try:
        return version("hallfleet")
    except PackageNotFoundError:
        return "0+unknown"
