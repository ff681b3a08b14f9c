"""What every notifier shares: the message, the one error type, the protocol, and the HTTP plumbing
of the three HTTP channels (webhook, WeCom, DingTalk).

A notifier has one required operation, ``send``; retries, fallbacks and escalation belong to the
caller, which decides from ``DeliveryError.retryable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from config.base import secret_path

# The mqtt channel's way out: publish (topic, payload) and return once the broker has it (QoS 1).
Publish = Callable[[str, bytes], Awaitable[None]]

TRUNCATED = "\n…(内容过长，已截断)"
BODY_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class Message:
    subject: str  # one line, zh-CN, e.g. "【严重】青浦 kiosk-24h-1 离线 12 分钟"
    text: str  # body, plain text / light markdown (lines), zh-CN first
    severity: str  # "critical" | "major" | "minor" | "info"
    site: str
    link: str | None = None  # acknowledgement link, appended as "确认: <link>" where the channel shows text
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able facts for machine channels


class DeliveryError(Exception):
    """A channel could not deliver. ``retryable`` is False when trying again cannot help (a config or
    address error): the message then says what to fix."""

    def __init__(self, channel: str, detail: str, retryable: bool = True) -> None:
        super().__init__(channel, detail, retryable)  # all three in args: it pickles and copies whole
        self.channel = channel
        self.detail = detail
        self.retryable = retryable

    def __str__(self) -> str:
        return f"alert channel {self.channel!r}: {self.detail}"


class Notifier(Protocol):
    name: str

    async def send(self, msg: Message, address: str | None = None) -> None:
        """Deliver ``msg``; ``address`` is the recipient where the channel has one (smtp). Raises
        DeliveryError."""
        ...

    async def aclose(self) -> None:
        """Release connections; the notifier may still be used afterwards (it reconnects)."""
        ...


# -- rendering ---------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())


def plain_text(msg: Message) -> str:
    """The body as people read it: text, then the acknowledgement link."""
    if msg.link:
        return f"{msg.text}\n\n确认: {msg.link}"
    return msg.text


def payload(msg: Message) -> dict[str, Any]:
    """The machine form (webhook and mqtt)."""
    return {
        "subject": msg.subject,
        "text": msg.text,
        "severity": msg.severity,
        "site": msg.site,
        "link": msg.link,
        "data": msg.data,
    }


def to_json(obj: Any) -> bytes:
    # default=str: a datetime someone left in ``data`` must not cost the alert.
    return json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")


def truncate_utf8(text: str, max_bytes: int, marker: str = TRUNCATED) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes (marker included) without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    mark = len(marker.encode("utf-8"))
    if max_bytes <= mark:
        return raw[:max_bytes].decode("utf-8", errors="ignore")
    # The cut may fall inside a character: "ignore" drops its leading bytes (the rest is valid UTF-8).
    return raw[: max_bytes - mark].decode("utf-8", errors="ignore") + marker


def fit_utf8(head: str, body: str, tail: str, max_bytes: int) -> str:
    """head + body + tail within ``max_bytes``, shortening the body: the subject and the acknowledgement
    link at the ends are what a technician acts on."""
    room = max_bytes - len((head + tail).encode("utf-8"))
    if room <= len(TRUNCATED.encode("utf-8")):
        return truncate_utf8(head + body + tail, max_bytes)
    return head + truncate_utf8(body, room) + tail


def check_http_url(value: str) -> str:
    """Config validator: an absolute http(s) URL with a host (robots too: tests and proxies use http)."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


# -- secrets -----------------------------------------------------------------------------------------


def read_secret(channel: str, path: Path, what: str) -> str:
    """Read at send time, so a rotated credential needs no restart. Never puts the secret in an error."""
    full = secret_path(path)
    try:
        value = full.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DeliveryError(
            channel, f"cannot read the {what} from {full}: {exc.strerror or exc}; check the file", retryable=False
        ) from None
    if not value:
        raise DeliveryError(channel, f"the {what} file {full} is empty", retryable=False)
    return value


# -- HTTP ---------------------------------------------------------------------------------------------


def redact_url(url: str | httpx.URL) -> str:
    """scheme://host[:port]/path without credentials or query: robot keys travel in the query string."""
    try:
        u = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return "<unparsable url>"
    port = f":{u.port}" if u.port else ""
    query = "?…" if u.query else ""
    return f"{u.scheme}://{u.host}{port}{u.path}{query}"


class _RedactHttpxLog(logging.Filter):
    """httpx logs every request URL at INFO ("HTTP Request: POST https://…?key=…"), and we log at INFO:
    without this the robot keys would end up in the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_log_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxLog) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactHttpxLog())


def _excerpt(resp: httpx.Response) -> str:
    text = one_line(resp.text)
    return text[:BODY_EXCERPT] + ("…" if len(text) > BODY_EXCERPT else "")


class HttpChannel:
    """One lazily created httpx client per notifier; POST JSON with errors mapped to DeliveryError."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self._timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            _install_log_redaction()
            self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def post_json(self, url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST ``body`` as UTF-8 JSON; returns a 2xx response or raises DeliveryError."""
        where = redact_url(url)
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        try:
            # httpx's timeout is per phase (connect, each read); this bounds the whole exchange.
            async with asyncio.timeout(self._timeout_s):
                resp = await self._http().post(url, content=to_json(body), headers=all_headers)
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryError(self.name, f"no answer from {where} within {self._timeout_s} s") from None
        except httpx.HTTPError as exc:
            # The exception text may quote the URL: say what kind of failure it was, not the text.
            raise DeliveryError(
                self.name, f"cannot reach {where} ({type(exc).__name__}): check the network and the url"
            ) from None
        self._check_status(resp, where)
        return resp

    def _check_status(self, resp: httpx.Response, where: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise DeliveryError(self.name, f"{where} answered HTTP {status} (try again later): {_excerpt(resp)}")
        if 300 <= status < 400:
            target = redact_url(resp.headers.get("location", "?"))
            raise DeliveryError(
                self.name,
                f"{where} redirects (HTTP {status}) to {target}: set url to the final address",
                retryable=False,
            )
        raise DeliveryError(
            self.name,
            f"{where} refused the request with HTTP {status}, a configuration error (check url and headers): "
            f"{_excerpt(resp)}",
            retryable=False,
        )


def robot_answer(channel: str, resp: httpx.Response, where: str) -> tuple[int, str]:
    """(errcode, errmsg) of a WeCom/DingTalk robot; both answer HTTP 200 and put the outcome here."""
    try:
        body = resp.json()
        code = int(body["errcode"])
        text = str(body.get("errmsg", ""))
    except (ValueError, KeyError, TypeError):
        raise DeliveryError(
            channel,
            f"{where} did not answer like a robot (no JSON errcode): check that url is the robot's webhook "
            f"address; the answer began {_excerpt(resp)!r}",
            retryable=False,
        ) from None
    return code, text


def check_mobiles(value: list[str], pattern: re.Pattern[str], hint: str) -> list[str]:
    """The robots @ members by mobile number: refuse anything else at config load, naming it."""
    bad = [m for m in value if not pattern.fullmatch(m)]
    if bad:
        raise ValueError(f"not mobile numbers: {', '.join(bad)} ({hint})")
    return value
