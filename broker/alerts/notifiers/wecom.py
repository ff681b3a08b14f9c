"""企业微信群机器人 (WeCom group robot): POST to the robot's webhook address.

The robot answers HTTP 200 whatever happened; the outcome is ``errcode`` in the JSON body. Markdown is
limited to 4096 bytes, and it cannot @ a member by mobile number: WeCom honours
``mentioned_mobile_list`` only in text messages, so a channel with ``mentioned_mobiles`` sends text
(limited to 2048 bytes) instead.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from broker.alerts.notifiers.base import (
    DeliveryError,
    HttpChannel,
    Message,
    check_http_url,
    check_mobiles,
    fit_utf8,
    one_line,
    redact_url,
    robot_answer,
)
from config.base import Section

MARKDOWN_MAX_BYTES = 4096
TEXT_MAX_BYTES = 2048
# -1 system busy, 45009 the robot's frequency limit (20 messages a minute), 45033 concurrent calls.
RETRYABLE = {-1: "WeCom is busy", 45009: "the robot's rate limit (20 a minute)", 45033: "too many concurrent calls"}
HINTS = {
    93000: "the key in url is invalid or the robot was removed: copy the robot's webhook address again",
    40008: "WeCom rejected the message type",
    44004: "the message is empty",
}
MOBILE_RE = re.compile(r"^(\+?[0-9]{5,20}|@all)$")


class WecomConfig(Section):
    type: Literal["wecom"] = Field(default="wecom", description="企业微信群机器人 (WeCom group robot)")
    url: str = Field(description="Robot webhook address, https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...")
    mentioned_mobiles: list[str] = Field(
        default_factory=list,
        description="Mobile numbers to @ ('@all' for everyone); when set, alerts go out as text, not markdown, "
        "because WeCom can @ by mobile only in text messages",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Whole request must finish within this")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_http_url(value)
        if not httpx.URL(value).params.get("key"):
            raise ValueError("the robot address needs its key: ...webhook/send?key=<key>")
        return value

    @field_validator("mentioned_mobiles")
    @classmethod
    def _mobiles(cls, value: list[str]) -> list[str]:
        return check_mobiles(value, MOBILE_RE, "digits only, or '@all'")


class WecomNotifier:
    def __init__(self, name: str, cfg: WecomConfig) -> None:
        self.name = name
        self.cfg = cfg
        self._http = HttpChannel(name, cfg.timeout_s)

    def body(self, msg: Message) -> dict[str, Any]:
        """The robot request for ``msg`` (markdown, or text when members are to be @-ed)."""
        subject = one_line(msg.subject)
        if self.cfg.mentioned_mobiles:
            tail = f"\n\n确认: {msg.link}" if msg.link else ""
            content = fit_utf8(f"{subject}\n", msg.text, tail, TEXT_MAX_BYTES)
            return {
                "msgtype": "text",
                "text": {"content": content, "mentioned_mobile_list": list(self.cfg.mentioned_mobiles)},
            }
        tail = f"\n\n确认: [{msg.link}]({msg.link})" if msg.link else ""
        content = fit_utf8(f"**{subject}**\n", msg.text, tail, MARKDOWN_MAX_BYTES)
        return {"msgtype": "markdown", "markdown": {"content": content}}

    async def send(self, msg: Message, address: str | None = None) -> None:
        """Post to the robot's group; ``address`` is ignored (the robot's group is the recipient)."""
        resp = await self._http.post_json(self.cfg.url, self.body(msg))
        where = redact_url(self.cfg.url)
        code, text = robot_answer(self.name, resp, where)
        if code == 0:
            return
        if code in RETRYABLE:
            raise DeliveryError(self.name, f"{where}: errcode {code} ({RETRYABLE[code]}): {text}")
        hint = HINTS.get(code, "see WeCom's global error codes for errcode")
        raise DeliveryError(self.name, f"{where} refused the message: errcode {code} {text}; {hint}", retryable=False)

    async def aclose(self) -> None:
        await self._http.aclose()
