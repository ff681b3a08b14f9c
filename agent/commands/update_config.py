"""Where versions live side by side and how the updater is started: the agent config's ``[update]``.

Kept apart from the update command so that the agent's config (agent/config.py) does not import the command
that itself reads the config."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from config.base import Section


class UpdateConfig(Section):
    root: Path = Field(
        default=Path("/opt/hallfleet"),
        description="Holds versions/<v>/ (a venv each) and venv, the link to the current one",
    )
    state_dir: Path | None = Field(
        default=None, description="Request, result and health files (default: 'update' beside the outbox)"
    )
    launcher: list[str] = Field(
        default_factory=lambda: ["systemctl", "start", "--no-block", "hallfleet-update.service"],
        description="Starts the updater outside the agent's unit; empty: the agent starts it itself (tests)",
    )
    restart_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "restart", "hallfleet-agent.service"],
        min_length=1,
        description="What the updater runs to restart the agent",
    )
    shared_site_packages: Path | None = Field(
        default=None, description="A site-packages new venvs also see, so pip fetches only what they lack"
    )
    install_timeout_s: float = Field(default=900.0, gt=0, le=7200, description="Bound on creating the venv")
    keep_versions: int = Field(default=3, ge=2, le=20, description="Installed versions kept (current and previous)")
