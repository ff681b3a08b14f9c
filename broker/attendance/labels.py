"""Words of the attendance reports in Chinese (the halls' language) and English. Unknown codes show as they are.

The verdicts use the halls' own terms: 晚签到/未签到/早签退/未签退 (QP 000:30), 旷工 (WZ 002:10),
非正常考勤 (QP 000:40).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.attendance.model import Verdict


@dataclass(frozen=True, slots=True)
class Labels:
    text: dict[str, str]
    verdicts: dict[Verdict, str]

    def __getitem__(self, key: str) -> str:
        return self.text.get(key, key)

    def verdict(self, verdict: Verdict) -> str:
        return self.verdicts.get(verdict, verdict.value)

    def yes_no(self, value: bool) -> str:
        return self.text["yes"] if value else self.text["no"]

    def title(self, site_name: str, period: str, what: str) -> str:
        return " ".join(part for part in (site_name, period, self[what]) if part)


VERDICT_ZH: dict[Verdict, str] = {
    Verdict.ON_TIME: "正常",
    Verdict.LATE: "迟到",
    Verdict.EARLY: "早退",
    Verdict.LATE_AND_EARLY: "迟到且早退",
    Verdict.MISSING_IN: "未签到",
    Verdict.MISSING_OUT: "未签退",
    Verdict.ABSENT: "旷工",
    Verdict.LEAVE: "请假",
    Verdict.MEETING: "会议/培训",
    Verdict.COMPENSATORY: "调休",
    Verdict.EXEMPT_DUTY: "值班(不计考勤)",
    Verdict.FORCE_MAJEURE: "不可抗力",
    Verdict.DEVICE_FAULT: "考勤设备故障",
    Verdict.REST_DAY: "休息日",
    Verdict.ON_DUTY: "在岗",  # provisional: the day is not over
    Verdict.NOT_ARRIVED: "未到岗",
    Verdict.AWAITING_OUT: "待签退",
}

_ZH = Labels(
    text={
        "daily": "考勤异常日报",
        "weekly": "周考勤汇总",
        "monthly": "月度考勤通报",
        "summary": "汇总",
        "item": "项目",
        "value": "数值",
        "staff_count": "人数",
        "units": "单位汇总",
        "details": "考勤异常明细",
        "faults": "考勤设备故障",
        "fault_days": "设备故障免责明细",
        "unit": "单位",
        "window": "窗口",
        "staff_id": "工号",
        "name": "姓名",
        "day": "日期",
        "verdict": "情况",
        "reason": "说明",
        "proof": "是否已提交证明",
        "device_fault": "设备故障",
        "untrusted": "终端时钟未校准",
        "locked": "已锁定",
        "expected_days": "应出勤(天)",
        "worked_days": "出勤天数",
        "late": "迟到次数",
        "early": "早退次数",
        "missing": "未签到/未签退",
        "absent_days": "旷工(天)",
        "rule_days": "其中迟到早退累计折算(天)",
        "leave_days": "请假(天)",
        "device_fault_days": "设备故障(人日)",
        "pending": "待补证明",
        "abnormal": "非正常考勤",
        "judged_note": "考勤期说明",
        "joined_note": "{day} 入职, 此前不考勤",
        "live_note": "{day} 系统上线, 此前不考勤",
        "left_note": "{day} 离职, 此后不考勤",
        "note_sep": "; ",
        "staff": "人数",
        "device": "考勤设备",
        "start": "故障开始",
        "end": "故障结束",
        "minutes": "时长(分钟)",
        "fault_reason": "故障原因",
        "excused": "免责人日",
        "excused_staff": "涉及人员",
        "fault_span": "故障时段",
        "subtotal": "小计",
        "total": "合计",
        "yes": "是",
        "no": "否",
        # proxy clocking (clocking_report.py)
        "clocking": "疑似代打卡核查",
        "punched_at": "打卡时间",
        "method": "方式",
        "method_face": "人脸",
        "method_fingerprint": "指纹",
        "method_qr": "二维码",
        "method_card": "卡",
        "clocking_pattern": "疑似情形",
        "clocking_chain": "同一终端连续为多人打卡",
        "clocking_too_fast": "两台终端打卡间隔过短",
        "clocking_after_refusal": "人脸活体未通过后改用其他方式打卡",
        "clocking_on_leave": "请假期间打卡",
        "clocking_review": "核查结论",
        "clocking_pending": "待核查",
        "clocking_proxy": "属实代打卡",
        "clocking_honest": "正常打卡",
    },
    verdicts=VERDICT_ZH,
)

_EN = Labels(
    text={
        "daily": "Daily attendance exceptions",
        "weekly": "Weekly attendance",
        "monthly": "Monthly attendance",
        "summary": "Summary",
        "item": "Item",
        "value": "Value",
        "staff_count": "Staff",
        "units": "By unit",
        "details": "Exceptions",
        "faults": "Attendance terminal faults",
        "fault_days": "Staff-days excused by faults",
        "unit": "Unit",
        "window": "Window",
        "staff_id": "Staff id",
        "name": "Name",
        "day": "Date",
        "verdict": "Verdict",
        "reason": "Reason",
        "proof": "Proof filed",
        "device_fault": "Terminal fault",
        "untrusted": "Terminal clock not synchronised",
        "locked": "Locked",
        "expected_days": "Working days",
        "worked_days": "Days worked",
        "late": "Late",
        "early": "Left early",
        "missing": "Missing punch",
        "absent_days": "Absent (days)",
        "rule_days": "of which from lates/early leaves (days)",
        "leave_days": "Leave (days)",
        "device_fault_days": "Terminal fault (staff-days)",
        "pending": "Proof pending",
        "abnormal": "Abnormal (locked)",
        "judged_note": "Judged period",
        "joined_note": "joined {day}, not judged before",
        "live_note": "system live {day}, not judged before",
        "left_note": "left {day}, not judged after",
        "note_sep": "; ",
        "staff": "Staff",
        "device": "Terminal",
        "start": "Fault from",
        "end": "Fault until",
        "minutes": "Duration (min)",
        "fault_reason": "Cause",
        "excused": "Staff-days excused",
        "excused_staff": "Staff",
        "fault_span": "Fault",
        "subtotal": "Subtotal",
        "total": "Total",
        "yes": "yes",
        "no": "no",
        # proxy clocking (clocking_report.py)
        "clocking": "Suspected proxy clocking",
        "punched_at": "Punched at",
        "method": "Method",
        "method_face": "face",
        "method_fingerprint": "fingerprint",
        "method_qr": "QR code",
        "method_card": "card",
        "clocking_pattern": "Pattern",
        "clocking_chain": "several colleagues in a row at one terminal",
        "clocking_too_fast": "two terminals too close in time",
        "clocking_after_refusal": "another method after the face was refused as not live",
        "clocking_on_leave": "punched while on leave",
        "clocking_review": "Review",
        "clocking_pending": "not reviewed",
        "clocking_proxy": "proxy clocking confirmed",
        "clocking_honest": "honest",
    },
    verdicts={
        Verdict.ON_TIME: "on time",
        Verdict.LATE: "late",
        Verdict.EARLY: "left early",
        Verdict.LATE_AND_EARLY: "late and left early",
        Verdict.MISSING_IN: "no sign-in",
        Verdict.MISSING_OUT: "no sign-out",
        Verdict.ABSENT: "absent",
        Verdict.LEAVE: "leave",
        Verdict.MEETING: "meeting / training",
        Verdict.COMPENSATORY: "compensatory day off",
        Verdict.EXEMPT_DUTY: "duty (not counted)",
        Verdict.FORCE_MAJEURE: "force majeure",
        Verdict.DEVICE_FAULT: "terminal fault",
        Verdict.REST_DAY: "rest day",
        Verdict.ON_DUTY: "at work (day not over)",
        Verdict.NOT_ARRIVED: "not arrived yet",
        Verdict.AWAITING_OUT: "sign-out pending",
    },
)


def labels(lang: str) -> Labels:
    if lang.lower().startswith("zh"):
        return _ZH
    if lang.lower().startswith("en"):
        return _EN
    raise ValueError(f"report language {lang!r} is not supported; use zh-CN or en")
