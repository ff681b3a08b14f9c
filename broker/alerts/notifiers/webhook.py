"""Generic webhook: POST the alert as JSON to a URL of the operator's choosing (a ticket system, a
paging gateway). 2xx is delivered; 408/429/5xx and network failures are worth another try; any
other answer is a configuration error."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from broker.alerts.notifiers.base import HttpChannel, Message, check_http_url, payload, read_secret
from config.base import Section


class WebhookConfig(Section):
    type: Literal["webhook"] = Field(default="webhook", description="Generic JSON webhook")
    url: str = Field(description="http(s) URL that receives a JSON POST per alert")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with each POST")
    token_file: Path | None = Field(
        default=None,
        description="File holding a bearer token, sent as 'Authorization: Bearer <token>'; relative paths are "
        "looked up in $CREDENTIALS_DIRECTORY",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Whole request must finish within this")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if "\n" in key or "\r" in key or "\n" in val or "\r" in val:
                raise ValueError(f"header {key!r} contains a line break")
        return value


class WebhookNotifier:
    def __init__(self, name: str, cfg: WebhookConfig) -> None:
        self.name = name
        self.cfg = cfg
        self._http = HttpChannel(name, cfg.timeout_s)

    async def send(self, msg: Message, address: str | None = None) -> None:
        """POST the message's JSON form; ``address`` is ignored (the URL is the recipient)."""
        headers = dict(self.cfg.headers)
        if self.cfg.token_file is not None:
            headers["Authorization"] = f"Bearer {read_secret(self.name, self.cfg.token_file, 'token')}"
        await self._http.post_json(self.cfg.url, payload(msg), headers)

    async def aclose(self) -> None:
        await self._http.aclose()
