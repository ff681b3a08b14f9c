"""Who hears of what: default routes, site scopes, quiet hours, config errors, acknowledgement links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker.alerts.messages import render
from broker.alerts.routing import AlertsConfig, RecipientConfig, Router, after_quiet_hours, sign_ack, verify_ack
from broker.rules.notices import Notice
from runtime.clock import HALL_ZONE

CHANNELS = {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}


def notice(step: str = "opened", severity: str = "critical", kind: str = "kiosk_down", site: str = "qp") -> Notice:
    return Notice(
        ref="incident:0190-abc",
        step=step,
        site=site,
        device="kiosk-24h-1",
        device_class="kiosk",
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        summary_zh="停止服务: kiosk.state=down",
        summary_en="out of service",
        facts={"at": datetime(2026, 11, 24, 10, 0, tzinfo=HALL_ZONE).isoformat()},
    )


def router(**extra: Any) -> Router:
    recipients = {
        "zhang": {"role": "technician", "channel": "hook"},
        "li": {"role": "site_staff", "channel": "hook", "sites": ["qp"]},
        "zhao": {"role": "site_staff", "channel": "hook", "sites": ["wz"]},
        "wang": {"role": "it_section", "channel": "hook"},
    }
    return Router(AlertsConfig.model_validate({"channels": CHANNELS, "recipients": recipients, **extra}))


@pytest.mark.parametrize(
    ("step", "severity", "kind", "expected"),
    [
        ("opened", "critical", "kiosk_down", ["li", "zhang"]),  # site staff of that site only
        ("warning", "critical", "kiosk_down", ["zhang"]),
        ("breach", "critical", "kiosk_down", ["wang", "zhang"]),
        ("escalation1", "critical", "kiosk_down", ["wang"]),
        ("opened", "major", "kiosk_degraded", ["zhang"]),
        ("opened", "minor", "fault.receipt.paper_end", []),  # recorded, not paged
        ("restock", "minor", "restock", ["li"]),
        ("inspection_overdue", "major", "inspection", ["li", "wang"]),
    ],
)
def test_default_routes_follow_the_regulations_roles(step: str, severity: str, kind: str, expected: list[str]) -> None:
    assert [name for name, _ in router().recipients_for(notice(step, severity, kind))] == expected


def test_a_configured_route_replaces_the_defaults() -> None:
    r = router(routes=[{"kinds": ["kiosk_*"], "steps": ["warning"], "roles": ["it_section"]}])
    assert [n for n, _ in r.recipients_for(notice("warning"))] == ["wang"]
    assert r.recipients_for(notice("opened")) == []


@pytest.mark.parametrize(
    ("quiet", "local_now", "expected"),
    [
        ("22:00-07:00", (23, 30), (1, 7, 0)),  # wraps midnight: next morning
        ("22:00-07:00", (3, 0), (0, 7, 0)),
        ("22:00-07:00", (12, 0), None),  # outside: now
        ("12:00-13:30", (12, 15), (0, 13, 30)),
    ],
)
def test_quiet_hours_hold_a_message_until_they_end(
    quiet: str, local_now: tuple[int, int], expected: tuple[int, int, int] | None
) -> None:
    r = RecipientConfig(role="site_staff", channel="hook", quiet_hours=quiet)
    now = datetime(2026, 11, 24, *local_now, tzinfo=HALL_ZONE)
    due = after_quiet_hours(r, now)
    if expected is None:
        assert due == now
    else:
        days, h, m = expected
        assert due == datetime(2026, 11, 24 + days, h, m, tzinfo=HALL_ZONE)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"recipients\.li\.channel: no channel 'sms'"):
        AlertsConfig.model_validate(
            {"channels": CHANNELS, "recipients": {"li": {"role": "site_staff", "channel": "sms"}}}
        )
    mail = {"m": {"type": "smtp", "host": "mail", "sender": "a@b.cn"}}
    with pytest.raises(ValidationError, match=r"recipients\.li\.address"):
        AlertsConfig.model_validate({"channels": mail, "recipients": {"li": {"role": "site_staff", "channel": "m"}}})
    with pytest.raises(ValidationError, match="role"):
        AlertsConfig.model_validate({"channels": CHANNELS, "recipients": {"li": {"role": "boss", "channel": "hook"}}})
    with pytest.raises(ValidationError, match="ack_secret_file"):
        AlertsConfig.model_validate({"ack_base_url": "https://hallfleet/ack"})


def test_ack_links_are_signed_and_forgeries_rejected(tmp_path: Path) -> None:
    secret_file = tmp_path / "ack.key"
    key = b"s3cret-s3cret-s3cret-s3cret-s3cret"
    secret_file.write_text(key.decode() + "\n")
    r = router(ack_base_url="https://hallfleet.example/ack/", ack_secret_file=str(secret_file))
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    link = r.link("incident:0190-abc", now)
    assert link is not None and link.startswith("https://hallfleet.example/ack/0190-abc.")
    token = link.rsplit("/", 1)[1]
    found = verify_ack(key, token)
    assert found is not None and found.incident_id == "0190-abc"
    assert found.expires_at == now + timedelta(hours=72), "ack_link_ttl_h after the message was written"
    assert verify_ack(b"other", token) is None
    assert verify_ack(key, token.replace("0190-abc", "0190-abd")) is None
    assert verify_ack(key, "garbage") is None
    assert r.link("task:1", now) is None, "tasks are closed by doing them, not acknowledged"
    assert sign_ack(key, "x", now) != sign_ack(key, "y", now)


def test_messages_are_chinese_first_and_english_on_request() -> None:
    subject, body = render(notice(), "zh-CN", "青浦区政务服务中心", "https://h/ack/t")
    assert subject == "【严重】青浦区政务服务中心 kiosk-24h-1 停止服务 发生"
    assert (
        "站点: 青浦区政务服务中心 (qp)" in body
        and "时间: 2026-11-24 10:00" in body
        and "确认处理: https://h/ack/t" in body
    )
    subject, body = render(notice("warning"), "en", "Qingpu", None)
    assert subject == "【CRITICAL】Qingpu kiosk-24h-1 out of service SLA warning"
    assert "out of service" in body and "Acknowledge" not in body
