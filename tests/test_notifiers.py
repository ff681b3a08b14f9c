"""Notifier transports against real servers: a local HTTP server standing in for the webhook and the
WeCom/DingTalk robots (it speaks their answers), a real aiosmtpd SMTP server, and the private Mosquitto.
Nothing is mocked below the socket."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import TypeAdapter, ValidationError

from broker.alerts.notifiers import (
    BUILDERS,
    ChannelConfig,
    DeliveryError,
    DingtalkConfig,
    Message,
    MqttChannelConfig,
    SmtpConfig,
    WebhookConfig,
    WecomConfig,
    build_notifier,
)
from broker.alerts.notifiers.base import TRUNCATED, truncate_utf8
from broker.alerts.notifiers.dingtalk import DingtalkNotifier
from broker.alerts.notifiers.mqtt import MqttNotifier
from broker.alerts.notifiers.smtp import SmtpNotifier
from broker.alerts.notifiers.webhook import WebhookNotifier
from broker.alerts.notifiers.wecom import WecomNotifier
from broker.mosquitto.local import LocalMosquitto
from runtime.transport import AsyncMqtt, LinkOptions
from tests.support.apps import free_port
from tests.support.http_receiver import HttpServer, Reply
from tests.support.procs import wait_for

MSG = Message(
    subject="【严重】青浦 kiosk-24h-1 离线 12 分钟",
    text="青浦大厅 24 小时自助机 kiosk-24h-1 已离线 12 分钟。\n最后心跳: 09:41",
    severity="critical",
    site="qingpu",
    link="https://hall.example.gov.cn/ack/7f3a",
    data={"incident_id": 42, "kind": "device.offline", "since": "2025-03-03T09:41:00+08:00"},
)
EXPECTED_JSON = {
    "subject": MSG.subject,
    "text": MSG.text,
    "severity": "critical",
    "site": "qingpu",
    "link": MSG.link,
    "data": MSG.data,
}
WECOM_KEY = "wecom-key-0d9f-secret"
DING_TOKEN = "ding-token-77ab-secret"

# --------------------------------------------------------------------------------------------------
# A programmable HTTP server
# --------------------------------------------------------------------------------------------------


async def failure(notifier: Any, msg: Message = MSG, address: str | None = None) -> DeliveryError:
    try:
        await notifier.send(msg, address)
    except DeliveryError as exc:
        return exc
    finally:
        await notifier.aclose()
    raise AssertionError("send() succeeded; a DeliveryError was expected")


# --------------------------------------------------------------------------------------------------
# Webhook
# --------------------------------------------------------------------------------------------------


async def test_webhook_posts_the_alert_as_utf8_json_with_headers_and_token(
    http: HttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a webhook with a header and a bearer token in $CREDENTIALS_DIRECTORY WHEN an alert is sent
    THEN one POST carries the JSON form, Chinese intact as UTF-8, and both headers."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "hook-token").write_text("tok-123\n")
    cfg = WebhookConfig(url=http.url("/alerts"), headers={"X-Source": "hallfleet"}, token_file=Path("hook-token"))
    n = build_notifier("ops-hook", cfg)
    try:
        await n.send(MSG)
    finally:
        await n.aclose()
    assert len(http.requests) == 1
    req = http.last
    assert req.path == "/alerts"
    assert req.json() == EXPECTED_JSON
    assert "青浦".encode() in req.body
    assert req.headers["Content-Type"].startswith("application/json")
    assert req.headers["X-Source"] == "hallfleet"
    assert req.headers["Authorization"] == "Bearer tok-123"


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_webhook_server_errors_and_throttling_are_retryable(http: HttpServer, status: int) -> None:
    http.default = Reply(status, b"busy")
    exc = await failure(WebhookNotifier("ops-hook", WebhookConfig(url=http.url())))
    assert exc.retryable
    assert exc.channel == "ops-hook"
    assert f"HTTP {status}" in str(exc)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_webhook_client_errors_are_config_errors_not_retried(http: HttpServer, status: int) -> None:
    http.default = Reply(status, b'{"error":"bad field"}')
    exc = await failure(WebhookNotifier("ops-hook", WebhookConfig(url=http.url())))
    assert not exc.retryable
    assert f"HTTP {status}" in str(exc)
    assert "configuration" in str(exc)
    assert "bad field" in str(exc)  # the server's reason is shown


async def test_webhook_redirect_is_not_followed_and_says_so(http: HttpServer) -> None:
    http.default = Reply(301, b"")
    exc = await failure(WebhookNotifier("ops-hook", WebhookConfig(url=http.url())))
    assert not exc.retryable
    assert "redirect" in str(exc)
    assert len(http.requests) == 1


async def test_webhook_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    exc = await failure(WebhookNotifier("ops-hook", WebhookConfig(url=url)))
    assert exc.retryable
    assert "cannot reach" in str(exc)


async def test_webhook_timeout_is_retryable_and_bounded(http: HttpServer) -> None:
    http.default = Reply(200, b"{}", delay_s=5)
    n = WebhookNotifier("ops-hook", WebhookConfig(url=http.url(), timeout_s=0.3))
    t0 = time.monotonic()
    exc = await failure(n)
    assert time.monotonic() - t0 < 2
    assert exc.retryable
    assert "within 0.3 s" in str(exc)


async def test_webhook_slow_drip_answer_is_bounded_by_the_total_timeout(http: HttpServer) -> None:
    """Each byte arrives well within httpx's per-read timeout; the whole answer does not within timeout_s."""
    http.default = Reply(200, b" " * 100, drip_s=0.1)
    n = WebhookNotifier("ops-hook", WebhookConfig(url=http.url(), timeout_s=0.5))
    t0 = time.monotonic()
    exc = await failure(n)
    assert time.monotonic() - t0 < 2
    assert exc.retryable
    assert "within 0.5 s" in str(exc)


async def test_webhook_missing_token_file_is_not_retryable(tmp_path: Path) -> None:
    cfg = WebhookConfig(url="http://127.0.0.1:9/hook", token_file=tmp_path / "nope")
    exc = await failure(WebhookNotifier("ops-hook", cfg))
    assert not exc.retryable
    assert str(tmp_path / "nope") in str(exc)


async def test_notifier_can_send_again_after_aclose(http: HttpServer) -> None:
    n = WebhookNotifier("ops-hook", WebhookConfig(url=http.url()))
    await n.send(MSG)
    await n.aclose()
    await n.send(MSG)
    await n.aclose()
    assert len(http.requests) == 2


# --------------------------------------------------------------------------------------------------
# WeCom
# --------------------------------------------------------------------------------------------------


def wecom(http: HttpServer, **kw: Any) -> WecomNotifier:
    url = http.url("/cgi-bin/webhook/send", f"key={WECOM_KEY}")
    return WecomNotifier("hall-group", WecomConfig(url=url, **kw))


async def test_wecom_sends_markdown_with_bold_subject_text_and_link(http: HttpServer) -> None:
    n = wecom(http)
    try:
        await n.send(MSG)
    finally:
        await n.aclose()
    req = http.last
    assert req.path == "/cgi-bin/webhook/send"
    assert req.query["key"] == [WECOM_KEY]
    body = req.json()
    assert body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert content.startswith(f"**{MSG.subject}**\n")
    assert MSG.text in content
    assert content.endswith(f"确认: [{MSG.link}]({MSG.link})")


async def test_wecom_mentions_by_mobile_switch_to_text(http: HttpServer) -> None:
    """WeCom honours mentioned_mobile_list only in text messages."""
    n = wecom(http, mentioned_mobiles=["13800138000", "@all"])
    try:
        await n.send(MSG)
    finally:
        await n.aclose()
    body = http.last.json()
    assert body["msgtype"] == "text"
    assert body["text"]["mentioned_mobile_list"] == ["13800138000", "@all"]
    assert body["text"]["content"].startswith(MSG.subject)
    assert body["text"]["content"].endswith(f"确认: {MSG.link}")


@pytest.mark.parametrize(("errcode", "retryable"), [(45009, True), (-1, True), (93000, False), (40008, False)])
async def test_wecom_errcode_on_http_200_is_a_failure(http: HttpServer, errcode: int, retryable: bool) -> None:
    http.default = Reply(200, {"errcode": errcode, "errmsg": "refused by robot"})
    exc = await failure(wecom(http))
    assert exc.retryable is retryable
    assert f"errcode {errcode}" in str(exc)
    assert WECOM_KEY not in str(exc)


async def test_wecom_answer_that_is_not_a_robot_answer_is_a_config_error(http: HttpServer) -> None:
    http.default = Reply(200, b"<html>portal login</html>")
    exc = await failure(wecom(http))
    assert not exc.retryable
    assert "robot" in str(exc)


async def test_wecom_long_chinese_text_is_cut_under_4096_bytes_keeping_subject_and_link(http: HttpServer) -> None:
    # An odd ASCII prefix puts the byte limit in the middle of a 3-byte character.
    long = replace(MSG, text="x" + "设备离线告警明细。" * 1000)
    n = wecom(http)
    try:
        await n.send(long)
    finally:
        await n.aclose()
    content = http.last.json()["markdown"]["content"]
    assert len(content.encode("utf-8")) <= 4096
    assert len(content.encode("utf-8")) > 4000  # cut, not emptied
    assert content.startswith(f"**{MSG.subject}**\nx设备离线")
    assert TRUNCATED in content
    assert content.endswith(f"({MSG.link})")


async def test_wecom_and_httpx_logs_never_show_the_robot_key(
    http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    http.default = Reply(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
    exc = await failure(wecom(http))
    assert any("HTTP Request" in r.getMessage() for r in caplog.records), "httpx stopped logging requests"
    assert WECOM_KEY not in caplog.text
    assert WECOM_KEY not in str(exc)
    assert "/cgi-bin/webhook/send" in caplog.text


# --------------------------------------------------------------------------------------------------
# DingTalk
# --------------------------------------------------------------------------------------------------


def dingtalk(http: HttpServer, **kw: Any) -> DingtalkNotifier:
    url = http.url("/robot/send", f"access_token={DING_TOKEN}")
    return DingtalkNotifier("hall-ding", DingtalkConfig(url=url, **kw))


async def test_dingtalk_signs_with_the_secret_from_credentials_directory(
    http: HttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "SEC0123456789abcdef+/="
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "ding-secret").write_text(secret + "\n")
    n = dingtalk(http, secret_file=Path("ding-secret"), at_mobiles=["13800138000"])
    try:
        await n.send(MSG)
    finally:
        await n.aclose()
    q = http.last.query
    assert q["access_token"] == [DING_TOKEN]
    (ts,) = q["timestamp"]
    assert abs(int(ts) - time.time() * 1000) < 10_000
    expected = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    assert q["sign"] == [expected]  # parse_qs undid the URL encoding: '+' and '/' survived it
    body = http.last.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == MSG.subject
    assert MSG.text in body["markdown"]["text"]
    assert f"确认: [{MSG.link}]({MSG.link})" in body["markdown"]["text"]
    assert body["markdown"]["text"].endswith("@13800138000")  # DingTalk notifies only if the text has it
    assert body["at"] == {"atMobiles": ["13800138000"], "isAtAll": False}


async def test_dingtalk_without_secret_sends_no_signature(http: HttpServer) -> None:
    n = dingtalk(http)
    try:
        await n.send(MSG)
    finally:
        await n.aclose()
    assert set(http.last.query) == {"access_token"}


@pytest.mark.parametrize(("errcode", "retryable"), [(130101, True), (-1, True), (310000, False), (300001, False)])
async def test_dingtalk_errcode_on_http_200_is_a_failure(http: HttpServer, errcode: int, retryable: bool) -> None:
    http.default = Reply(200, {"errcode": errcode, "errmsg": "refused"})
    exc = await failure(dingtalk(http))
    assert exc.retryable is retryable
    assert f"errcode {errcode}" in str(exc)
    assert DING_TOKEN not in str(exc)


async def test_dingtalk_unreadable_secret_is_not_retryable_and_names_the_file(http: HttpServer, tmp_path: Path) -> None:
    exc = await failure(dingtalk(http, secret_file=tmp_path / "missing-secret"))
    assert not exc.retryable
    assert "missing-secret" in str(exc)
    assert not http.requests


# --------------------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: keeps what it accepted; ``rcpt_reply`` refuses recipients."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"pa55")
    return AuthResult(success=ok, handled=False)  # handled=True would leave the reply to us


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=_authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield SmtpServer(mailbox, port)
    finally:
        controller.stop()


def smtp(port: int, **kw: Any) -> SmtpNotifier:
    cfg = SmtpConfig(host="127.0.0.1", port=port, security="none", sender="政务大厅运维 <alerts@hall.example>", **kw)
    return SmtpNotifier("mail", cfg)


async def test_smtp_delivers_mime_utf8_subject_and_body_to_the_address(smtp_server: SmtpServer) -> None:
    n = smtp(smtp_server.port)
    await n.send(MSG, "张工 <zhang@hall.example>")
    (env,) = smtp_server.mailbox.envelopes
    assert env.mail_from == "alerts@hall.example"
    assert env.rcpt_tos == ["zhang@hall.example"]
    raw_headers = env.content.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()  # RFC 2047 encoded words, not raw UTF-8
    mail = email.message_from_bytes(env.content, policy=email.policy.default)
    assert mail["Subject"] == MSG.subject
    assert mail["To"].addresses[0].display_name == "张工"
    assert mail["From"].addresses[0].display_name == "政务大厅运维"
    assert mail["X-Hallfleet-Severity"] == "critical"
    body = mail.get_content().replace("\r\n", "\n")
    assert MSG.text in body
    assert body.rstrip().endswith(f"确认: {MSG.link}")


async def test_smtp_logs_in_with_the_password_file(
    smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "smtp-password").write_text("pa55\n")
    await smtp(smtp_server.port, username="alerts", password_file=Path("smtp-password")).send(MSG, "a@hall.example")
    assert len(smtp_server.mailbox.envelopes) == 1


async def test_smtp_wrong_password_is_not_retryable(smtp_server: SmtpServer, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("wrong")
    exc = await failure(smtp(smtp_server.port, username="alerts", password_file=tmp_path / "pw"), address="a@x.cn")
    assert not exc.retryable
    assert "535" in str(exc)
    assert "password_file" in str(exc)
    assert "wrong" not in str(exc)


@pytest.mark.parametrize(("reply", "retryable"), [("550 5.1.1 no such user", False), ("450 4.2.1 busy", True)])
async def test_smtp_refused_recipient(smtp_server: SmtpServer, reply: str, retryable: bool) -> None:
    smtp_server.mailbox.rcpt_reply = reply
    exc = await failure(smtp(smtp_server.port), address="ghost@hall.example")
    assert exc.retryable is retryable
    assert "ghost@hall.example" in str(exc)
    assert reply.split()[0] in str(exc)
    assert not smtp_server.mailbox.envelopes


async def test_smtp_server_down_is_retryable() -> None:
    exc = await failure(smtp(free_port()), address="zhang@hall.example")
    assert exc.retryable
    assert "127.0.0.1" in str(exc)


@pytest.mark.parametrize("address", [None, "", "not-an-address", "a@b.cn\r\nBcc: evil@x.cn"])
async def test_smtp_without_a_usable_address_is_not_retryable(smtp_server: SmtpServer, address: str | None) -> None:
    exc = await failure(smtp(smtp_server.port), address=address)
    assert not exc.retryable
    assert "e-mail address" in str(exc)
    assert not smtp_server.mailbox.envelopes


async def test_smtp_starttls_is_required_not_silently_skipped(smtp_server: SmtpServer) -> None:
    """security='starttls' against a server without STARTTLS must fail, not send in clear text."""
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_server.port, sender="alerts@hall.example")
    assert cfg.security == "starttls"
    exc = await failure(SmtpNotifier("mail", cfg), address="zhang@hall.example")
    assert not exc.retryable
    assert "STARTTLS" in str(exc)
    assert "security" in str(exc)
    assert not smtp_server.mailbox.envelopes


# --------------------------------------------------------------------------------------------------
# MQTT
# --------------------------------------------------------------------------------------------------


@pytest.fixture
async def link(mosquitto: LocalMosquitto) -> AsyncIterator[AsyncMqtt]:
    client = AsyncMqtt(LinkOptions(mosquitto.host, mosquitto.port, "test-alerts-pub", clean_start=True))
    await client.connect()
    yield client
    await client.close()


async def test_mqtt_publishes_the_json_on_the_site_alert_topic(mosquitto: LocalMosquitto, link: AsyncMqtt) -> None:
    sub = AsyncMqtt(LinkOptions(mosquitto.host, mosquitto.port, "test-alerts-sub", clean_start=True))
    got: list[tuple[str, bytes, bool]] = []
    sub.on_message = lambda m: got.append((m.topic, bytes(m.payload), bool(m.retain)))
    await sub.connect()
    try:
        await sub.subscribe([("hall/v1/+/alerts", 1)])
        n = build_notifier("screens", MqttChannelConfig(), publish=lambda t, p: link.publish_confirmed(t, p))
        await n.send(MSG)
        await wait_for(lambda: bool(got), 5, "the alert on the broker")
    finally:
        await sub.disconnect()
    ((topic, raw, retained),) = got
    assert topic == "hall/v1/qingpu/alerts"
    assert json.loads(raw.decode("utf-8")) == EXPECTED_JSON
    assert not retained


async def test_mqtt_without_a_connection_is_retryable() -> None:
    exc = await failure(MqttNotifier("screens", MqttChannelConfig(), publish=None))
    assert exc.retryable
    assert "hall/v1/qingpu/alerts" in str(exc)


async def test_mqtt_broker_gone_is_retryable(mosquitto: LocalMosquitto, link: AsyncMqtt) -> None:
    mosquitto.stop()
    await asyncio.wait_for(link.wait_closed(), 10)
    n = MqttNotifier("screens", MqttChannelConfig(timeout_s=2), publish=lambda t, p: link.publish_confirmed(t, p))
    exc = await failure(n)
    assert exc.retryable
    assert "MQTT" in str(exc) or "publish" in str(exc)


async def test_mqtt_site_that_would_escape_its_topic_is_refused() -> None:
    sent: list[str] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append(topic)

    bad = replace(MSG, site="qingpu/#")
    exc = await failure(MqttNotifier("screens", MqttChannelConfig(), publish), bad)
    assert not exc.retryable
    assert "site" in str(exc)
    assert not sent


# --------------------------------------------------------------------------------------------------
# Config and registry
# --------------------------------------------------------------------------------------------------

CHANNELS: TypeAdapter[dict[str, ChannelConfig]] = TypeAdapter(dict[str, ChannelConfig])


def errors(table: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        CHANNELS.validate_python(table)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_config_table_builds_every_channel_type() -> None:
    table = CHANNELS.validate_python(
        {
            "hook": {"type": "webhook", "url": "https://tickets.example/alerts"},
            "mail": {"type": "smtp", "host": "mail.example", "sender": "alerts@example.gov.cn"},
            "wx": {"type": "wecom", "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"},
            "dd": {"type": "dingtalk", "url": f"https://oapi.dingtalk.com/robot/send?access_token={DING_TOKEN}"},
            "screens": {"type": "mqtt"},
        }
    )
    built = {name: build_notifier(name, cfg) for name, cfg in table.items()}
    kinds = {name: type(n) for name, n in built.items()}
    assert kinds == {
        "hook": WebhookNotifier,
        "mail": SmtpNotifier,
        "wx": WecomNotifier,
        "dd": DingtalkNotifier,
        "screens": MqttNotifier,
    }
    assert all(n.name == name for name, n in built.items())


def test_every_channel_type_in_the_union_has_a_builder() -> None:
    members = get_args(get_args(ChannelConfig)[0])
    assert set(members) == set(BUILDERS)


def test_unknown_channel_type_names_the_type_field() -> None:
    ((loc, msg),) = errors({"fax": {"type": "fax", "number": "021-1234"}})
    assert loc[0] == "fax"
    assert "type" in msg
    assert "webhook" in msg  # lists what would be accepted


def test_unknown_field_is_named() -> None:
    ((loc, _),) = errors({"hook": {"type": "webhook", "url": "https://x.example/a", "verify": False}})
    assert loc == ("hook", "webhook", "verify")


def test_wildcard_in_mqtt_topic_is_refused_naming_the_field() -> None:
    for topic in ("hall/v1/+/alerts", "hall/v1/{site}/#", "hall/v1/{device}/alerts", "$SYS/x"):
        ((loc, msg),) = errors({"screens": {"type": "mqtt", "topic": topic}})
        assert loc == ("screens", "mqtt", "topic"), topic
        assert msg


def test_robot_url_without_key_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        CHANNELS.validate_python({"wx": {"type": "wecom", "url": f"https://qyapi.weixin.qq.com/?x={WECOM_KEY}"}})
    (err,) = info.value.errors()
    assert err["loc"] == ("wx", "wecom", "url")
    assert "key" in err["msg"]
    assert WECOM_KEY not in err["msg"]


@pytest.mark.parametrize(
    ("channel", "field_name"),
    [
        ({"type": "webhook", "url": "ftp://x.example/a"}, "url"),
        ({"type": "webhook", "url": "https://x.example/a", "timeout_s": 0}, "timeout_s"),
        ({"type": "smtp", "host": "m", "sender": "nobody"}, "sender"),
        ({"type": "smtp", "host": "m", "sender": "a@b.cn", "security": "ssl"}, "security"),
        ({"type": "wecom", "url": "https://q.example/send?key=k", "mentioned_mobiles": ["zhang"]}, "mentioned_mobiles"),
        ({"type": "dingtalk", "url": "https://d.example/send?access_token=t&sign=x"}, "url"),
        ({"type": "dingtalk", "url": "https://d.example/send?access_token=t", "at_mobiles": ["1 3"]}, "at_mobiles"),
    ],
)
def test_bad_values_name_their_field(channel: dict[str, Any], field_name: str) -> None:
    ((loc, _),) = errors({"c": channel})
    assert loc == ("c", channel["type"], field_name)


@pytest.mark.parametrize("login", [{"password_file": "pw"}, {"username": "alerts"}])
def test_smtp_username_and_password_file_go_together(login: dict[str, str]) -> None:
    ((_, msg),) = errors({"m": {"type": "smtp", "host": "m", "sender": "a@b.cn", **login}})
    assert "username and password_file" in msg


def test_truncate_utf8_never_splits_a_character() -> None:
    text = "告警" * 10  # 60 bytes
    for limit in range(0, 70):
        cut = truncate_utf8(text, limit)
        assert len(cut.encode("utf-8")) <= max(limit, 0)
        if limit >= 60:
            assert cut == text
        elif limit > len(TRUNCATED.encode()):
            assert cut.endswith(TRUNCATED)
