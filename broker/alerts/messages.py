"""Notice -> subject and body, zh-CN first (the halls' staff read Chinese), English on request."""

from __future__ import annotations

from datetime import datetime

from broker.api.fleet_words import enum_label, incident_kind_label
from broker.rules.notices import Notice
from runtime.clock import HALL_ZONE

SEVERITY = {
    "zh-CN": {"critical": "严重", "major": "重要", "minor": "一般", "info": "提示"},
    "en": {"critical": "CRITICAL", "major": "MAJOR", "minor": "minor", "info": "info"},
}
STEP = {
    "zh-CN": {
        "opened": "发生",
        "warning": "即将超时",
        "breach": "已超时",
        "dispatch": "派单上门",
        "dispatch_overdue": "上门超期",
        "resolved": "已恢复",
        "restock": "请补充耗材",
        "restock_overdue": "补充耗材超期",
        "clean_due": "今日清洁未记录",
        "inspection_due": "季度联合巡检待完成",
        "inspection_overdue": "季度联合巡检超期",
        "ab_uncovered": "AB岗均未到岗",
        "pad_paused": "评价器暂停服务超时",
        "queue_wait": "排队等候超时",
        "window_unattended": "窗口无人接待而有人等候",
        "negative": "收到差评",
        "proxy_suspect": "疑似代评",
        "reply_overdue": "差评回复超期",
        "rectify_overdue": "差评整改超期",
        # The daily duties (broker/duties/jobs.py) and the lockers (broker/access/lockers.py).
        "netcheck_failed": "网络日常检查未通过",
        "netcheck_missing": "网络日常检查未执行",
        "power_not_on": "自助服务区计算机未开机",
        "power_not_off": "下班后未关机",
        "power_unclean": "未正常关机 (断电或断网)",
        "patrol_missed": "巡查未完成",
        "locker_overdue": "待处理",
    },
    "en": {
        "opened": "opened",
        "warning": "SLA warning",
        "breach": "SLA breached",
        "dispatch": "on-site dispatch",
        "dispatch_overdue": "dispatch overdue",
        "resolved": "resolved",
        "restock": "restock needed",
        "restock_overdue": "restock overdue",
        "clean_due": "daily cleaning not recorded",
        "inspection_due": "quarterly joint inspection due",
        "inspection_overdue": "quarterly joint inspection overdue",
        "ab_uncovered": "A and B posts both absent",
        "pad_paused": "rating pad paused too long",
        "queue_wait": "queue wait past its limit",
        "window_unattended": "tickets waiting at an unattended window",
        "negative": "negative rating",
        "proxy_suspect": "suspected proxy rating",
        "reply_overdue": "negative rating reply overdue",
        "rectify_overdue": "negative rating rectification overdue",
        "netcheck_failed": "daily network check failed",
        "netcheck_missing": "daily network check did not run",
        "power_not_on": "self-service computer not switched on",
        "power_not_off": "left on after hours",
        "power_unclean": "went off without a clean shutdown",
        "patrol_missed": "patrol round missed",
        "locker_overdue": "to be handled",
    },
}
LABELS = {
    "zh-CN": {
        "site": "站点",
        "device": "设备",
        "time": "时间",
        "day": "日期",
        "link": "确认处理",
        "escalation": "升级通知",
    },
    "en": {
        "site": "Site",
        "device": "Device",
        "time": "Time",
        "day": "Day",
        "link": "Acknowledge",
        "escalation": "escalation",
    },
}
# Notice classes that are not device roles (broker/api/fleet_words.py words the roles): a duty notice names the
# device it concerns, but the notice is about the duty.
NOTICE_CLASSES = {"duty": ("日常值守", "daily duty")}


def step_label(step: str, lang: str) -> str:
    if step.startswith("escalation"):
        return f"{LABELS[lang]['escalation']} {step.removeprefix('escalation')}".strip()
    return STEP[lang].get(step, step)


def class_label(device_class: str, lang: str) -> str:
    """The device's kind in words (an unknown one as "其他 (code)", as the pages show it)."""
    known = NOTICE_CLASSES.get(device_class)
    if known is not None:
        return known[1 if lang == "en" else 0]
    return enum_label("role", device_class, lang)


def local(t: datetime | str | None) -> str:
    if t is None:
        return "-"
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.astimezone(HALL_ZONE).strftime("%Y-%m-%d %H:%M")


def render(n: Notice, lang: str, site_name: str, link: str | None) -> tuple[str, str]:
    lang = "en" if lang == "en" else "zh-CN"
    sev = SEVERITY[lang].get(n.severity, n.severity)
    device = "" if n.device == "*" else f" {n.device}"
    what = incident_kind_label(n.kind, lang) if n.ref.startswith("incident:") else ""
    subject = f"【{sev}】{site_name}{device} {what} {step_label(n.step, lang)}".replace("  ", " ")
    lab = LABELS[lang]
    lines = [
        n.summary_zh if lang == "zh-CN" else n.summary_en,
        f"{lab['site']}: {site_name} ({n.site})",
    ]
    if n.device != "*":
        lines.append(f"{lab['device']}: {n.device} ({class_label(n.device_class, lang)})")
    lines.append(_when(n, lab))
    if link:
        lines.append(f"{lab['link']}: {link}")
    return subject, "\n".join(lines)


def _when(n: Notice, lab: dict[str, str]) -> str:
    """A step's time; else when the incident began; a daily duty's notice is about a day, not a moment."""
    at = n.facts.get("at") or n.facts.get("detected_at")
    if at is None and "day" in n.facts:
        return f"{lab['day']}: {n.facts['day']}"
    return f"{lab['time']}: {local(at)}"
