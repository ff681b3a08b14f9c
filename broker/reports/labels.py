"""Words of the SLA report in Chinese (the halls' language) and English. Unknown codes show as they are."""

from __future__ import annotations

from dataclasses import dataclass

from broker.reports.model import SlaReport


@dataclass(frozen=True, slots=True)
class Labels:
    text: dict[str, str]
    kinds: dict[str, str]
    recovery: dict[str, str]
    severity: dict[str, str]
    classes: dict[str, str]
    consumables: dict[str, str]
    counters: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.text[key]

    def kind(self, kind: str) -> str:
        family, _, detail = kind.partition(".")
        if detail and family == "consumable":
            return self.text["kind_consumable"].format(self.consumable(detail))
        if detail and family == "fault":
            return self.text["kind_fault"].format(detail)
        return self.kinds.get(kind, kind)

    def consumable(self, name: str) -> str:
        base, sep, rest = name.partition(":")  # "toner:black", "a4_paper:tray-1"
        return self.consumables.get(base, base) + (f"({rest})" if sep else "")

    def counter(self, name: str) -> str:
        return self.counters.get(name, name)

    def device(self, device: str) -> str:
        return self.text["whole_hall"] if device == "*" else device

    def yes_no(self, value: bool) -> str:
        return self.text["yes"] if value else self.text["no"]

    def counted(self, counted: bool, in_hall_outage: bool, hall: bool) -> str:
        """Whether an incident counts in the month's figures, and if not why (the reader adds them up)."""
        if hall:
            return self.text["counted_hall"]
        if counted:
            return self.text["counted_hall_device"] if in_hall_outage else self.text["yes"]
        return self.text["counted_no"]

    def title(self, report: SlaReport, what: str) -> str:
        return self.text["title"].format(name=report.site_name, month=report.month, what=self.text[what])


_ZH = Labels(
    text={
        "title": "{name} {month} {what}",
        "sheet_devices": "设备可用率",
        "sheet_incidents": "事件明细",
        "sheet_summary": "汇总",
        "device": "设备",
        "class": "设备类型",
        "hours24": "24小时",
        "counted": "计时时长(分钟)",
        "down": "停机时长(分钟)",
        "availability": "可用率(%)",
        "incidents": "事件数",
        "breaches": "超时数",
        "mttr": "平均恢复用时(分钟)",
        "max_ttr": "最长恢复用时(分钟)",
        "self_healed": "自愈",
        "remote": "远程处置",
        "on_site": "现场处置",
        "dispatches": "现场派单",
        "dispatches_late": "派单超时",
        "refills": "耗材补充:{}",
        "usage": "使用量:{}",
        "id": "事件编号",
        "kind": "类型",
        "severity": "级别",
        "detected_at": "发现时间",
        "staff_reported_at": "现场报告时间",
        "cleared_at": "恢复时间",
        "closed_at": "关闭时间",
        "ttr": "恢复用时(分钟)",
        "breached": "超时",
        "breach_reason": "超时原因",
        "recovery": "处置方式",
        "kind_fault": "故障({})",
        "kind_consumable": "耗材({})",
        "whole_hall": "全大厅",
        "yes": "是",
        "no": "否",
        "item": "项目",
        "value": "数值",
        "site": "站点",
        "site_id": "站点编号",
        "month": "月份",
        "devices": "设备数",
        "availability_weighted": "可用率(%,按计时时长加权)",
        "compliance": "SLA达标率(%)",
        "generated_at": "生成时间",
        "total": "合计",
        "counted_in_sla": "计入统计",
        "counted_hall": "否 (按各设备计)",
        "counted_hall_device": "是 (属大厅整体故障)",
        "counted_no": "否 (次要事件或上月发生)",
    },
    kinds={
        "offline": "离线",
        "kiosk_down": "停止服务",
        "kiosk_degraded": "部分功能不可用",
        "reported": "现场报障",
        "hall_outage": "大厅整体故障",
    },
    recovery={"self_healed": "自愈", "remote": "远程处置", "on_site": "现场处置"},
    severity={"critical": "严重", "major": "重要", "minor": "一般", "info": "提示"},
    classes={"kiosk": "自助终端", "attendance": "考勤机", "rating": "评价器", "queue": "排队叫号机", "unknown": "未知"},
    consumables={"thermal_paper": "热敏纸", "a4_paper": "A4纸", "toner": "墨粉", "ink": "墨水", "drum": "硒鼓"},
    counters={"tickets": "票据", "prints": "打印", "copies": "复印", "queries": "查询", "scans": "扫描"},
)

_EN = Labels(
    text={
        "title": "{name} {month} {what}",
        "sheet_devices": "Availability",
        "sheet_incidents": "Incidents",
        "sheet_summary": "Summary",
        "device": "Device",
        "class": "Class",
        "hours24": "24 h",
        "counted": "Counted (min)",
        "down": "Down (min)",
        "availability": "Availability (%)",
        "incidents": "Incidents",
        "breaches": "Breaches",
        "mttr": "Mean time to restore (min)",
        "max_ttr": "Longest time to restore (min)",
        "self_healed": "Self-healed",
        "remote": "Remote",
        "on_site": "On site",
        "dispatches": "Dispatches",
        "dispatches_late": "Late dispatches",
        "refills": "Refills: {}",
        "usage": "Usage: {}",
        "id": "Incident",
        "kind": "Kind",
        "severity": "Severity",
        "detected_at": "Detected",
        "staff_reported_at": "Reported by staff",
        "cleared_at": "Cleared",
        "closed_at": "Closed",
        "ttr": "Time to restore (min)",
        "breached": "Breached",
        "breach_reason": "Breach reason",
        "recovery": "Recovery",
        "kind_fault": "fault ({})",
        "kind_consumable": "consumable ({})",
        "whole_hall": "whole hall",
        "yes": "yes",
        "no": "no",
        "item": "Item",
        "value": "Value",
        "site": "Site",
        "site_id": "Site id",
        "month": "Month",
        "devices": "Devices",
        "availability_weighted": "Availability (%, weighted by counted time)",
        "compliance": "SLA compliance (%)",
        "generated_at": "Generated",
        "total": "Total",
        "counted_in_sla": "Counted",
        "counted_hall": "no (counted per device)",
        "counted_hall_device": "yes (in the hall-wide outage)",
        "counted_no": "no (minor, or detected in an earlier month)",
    },
    kinds={
        "offline": "offline",
        "kiosk_down": "out of service",
        "kiosk_degraded": "partly out of service",
        "reported": "reported by site staff",
        "hall_outage": "hall-wide outage",
    },
    recovery={"self_healed": "self-healed", "remote": "remote", "on_site": "on site"},
    severity={},
    classes={},
    consumables={"thermal_paper": "thermal paper", "a4_paper": "A4 paper"},
    counters={},
)


def labels(lang: str) -> Labels:
    if lang.lower().startswith("zh"):
        return _ZH
    if lang.lower().startswith("en"):
        return _EN
    raise ValueError(f"report language {lang!r} is not supported; use zh-CN or en")
