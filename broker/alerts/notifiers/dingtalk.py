"""钉钉群机器人 (DingTalk group robot): POST markdown to the robot's webhook address.

With 加签 (signing) on, each request carries ``timestamp`` (ms) and ``sign`` =
urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))); DingTalk refuses a timestamp
more than an hour off its clock. The robot answers HTTP 200 whatever happened; the outcome is
``errcode``. In markdown an @ only notifies when the text also contains "@<mobile>".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import urllib.parse
from pathlib import Path
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
    read_secret,
    redact_url,
    robot_answer,
)
from config.base import Section

# A conservative bound on the markdown text; alerts are far shorter.
TEXT_MAX_BYTES = 20_000
RETRYABLE = {-1: "DingTalk is busy", 130101: "sending too fast (20 messages a minute per robot)"}
HINTS = {
    310000: "the robot's security check failed (keyword, signature or IP allowlist): check the robot's security "
    "settings, secret_file and this machine's clock",
    300001: "the access_token in url is invalid: copy the robot's webhook address again",
}
MOBILE_RE = re.compile(r"^\+?[0-9]{5,20}$")


def signature(secret: str, timestamp_ms: int) -> str:
    """加签: base64 HMAC-SHA256 of "{timestamp}\\n{secret}" keyed with the secret (not yet URL-encoded)."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class DingtalkConfig(Section):
    type: Literal["dingtalk"] = Field(default="dingtalk", description="钉钉群机器人 (DingTalk group robot)")
    url: str = Field(description="Robot webhook address, https://oapi.dingtalk.com/robot/send?access_token=...")
    secret_file: Path | None = Field(
        default=None,
        description="File holding the robot's 加签 secret (SEC...); relative paths are looked up in "
        "$CREDENTIALS_DIRECTORY. Without it no signature is sent (the robot must then use a keyword or IP check)",
    )
    at_mobiles: list[str] = Field(default_factory=list, description="Mobile numbers of members to @")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Whole request must finish within this")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_http_url(value)
        params = httpx.URL(value).params
        if not params.get("access_token"):
            raise ValueError("the robot address needs its token: ...robot/send?access_token=<token>")
        if "timestamp" in params or "sign" in params:
            raise ValueError("leave timestamp and sign out of url: they are computed per message from secret_file")
        return value

    @field_validator("at_mobiles")
    @classmethod
    def _mobiles(cls, value: list[str]) -> list[str]:
        return check_mobiles(value, MOBILE_RE, "digits only")


class DingtalkNotifier:
    def __init__(self, name: str, cfg: DingtalkConfig) -> None:
        self.name = name
        self.cfg = cfg
        self._http = HttpChannel(name, cfg.timeout_s)

    def body(self, msg: Message) -> dict[str, Any]:
        subject = one_line(msg.subject)
        tail = f"\n\n确认: [{msg.link}]({msg.link})" if msg.link else ""
        if self.cfg.at_mobiles:
            tail += "\n\n" + " ".join(f"@{m}" for m in self.cfg.at_mobiles)
        text = fit_utf8(f"### {subject}\n\n", msg.text, tail, TEXT_MAX_BYTES)
        return {
            "msgtype": "markdown",
            "markdown": {"title": subject, "text": text},
            "at": {"atMobiles": list(self.cfg.at_mobiles), "isAtAll": False},
        }

    def signed_url(self) -> str:
        if self.cfg.secret_file is None:
            return self.cfg.url
        secret = read_secret(self.name, self.cfg.secret_file, "robot secret")
        ts = int(time.time() * 1000)
        sign = urllib.parse.quote_plus(signature(secret, ts))
        return f"{self.cfg.url}&timestamp={ts}&sign={sign}"

    async def send(self, msg: Message, address: str | None = None) -> None:
        """Post to the robot's group; ``address`` is ignored (the robot's group is the recipient)."""
        resp = await self._http.post_json(self.signed_url(), self.body(msg))
        where = redact_url(self.cfg.url)
        code, text = robot_answer(self.name, resp, where)
        if code == 0:
            return
        if code in RETRYABLE:
            raise DeliveryError(self.name, f"{where}: errcode {code} ({RETRYABLE[code]}): {text}")
        hint = HINTS.get(code, "see DingTalk's robot error codes for errcode")
        raise DeliveryError(self.name, f"{where} refused the message: errcode {code} {text}; {hint}", retryable=False)

    async def aclose(self) -> None:
        await self._http.aclose()
