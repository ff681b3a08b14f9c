"""What the built-in commands and the update command reach of the agent (``Agent`` is one; a test may pass
another). Declared here, below the agent, so that the commands never import the agent that runs them."""

from __future__ import annotations

from typing import Any, Protocol

from agent.config import AgentConfig
from agent.desired import ConfigApplier, DeviceSettings
from agent.device import DeviceContext
from agent.selfheal import AppWatch


class LinkState(Protocol):
    @property
    def session(self) -> int:
        """The MQTT session counter of the current (or last) connection."""
        ...

    def is_up(self) -> bool: ...

    async def wait_session(self, after: int) -> int:
        """Wait until connected in a session newer than ``after``; returns it."""
        ...


class AgentHost(Protocol):
    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def ctx(self) -> DeviceContext: ...

    @property
    def app_watch(self) -> AppWatch | None: ...

    @property
    def config(self) -> ConfigApplier: ...

    @property
    def settings(self) -> DeviceSettings: ...

    @property
    def link(self) -> LinkState: ...

    def request_restart(self) -> None: ...

    async def diagnose(self) -> dict[str, Any]: ...
