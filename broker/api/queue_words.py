"""Words of the queue page (broker/api/queue_view.py), Chinese first, and every value it shows: each wait class
of QP 000:368, each pad state (broker/ratings/model.py PAD_STATE_ZH) and each alert state of the board
(broker/queueing/board.py) has its word here, so the zh page never prints one raw. Every key starts with ``q_``
so the merge into broker/api/i18n.py's WORDS cannot shadow another page's word. tests/test_i18n_pages.py
renders the page in both languages."""

from __future__ import annotations

# (key, 中文, English). Values are keyed ``q_{table}_{value}``, as the template looks them up.
_WORDS: tuple[tuple[str, str, str], ...] = (
    ("q_title", "排队叫号", "Queue"),
    ("q_rule", "等候时限 (QP 000:368 「10,30,60」): 一般事项 {general} 分钟, 复杂事项 {complex} 分钟,"
     " 特殊情形 {special} 分钟",
     "Waiting limits (QP 000:368 '10, 30, 60'): general {general} min, complex {complex} min, special {special} min"),
    ("q_as_of", "截至 {at}", "as of {at}"),
    ("q_disabled", "本大厅未启用排队叫号统计 (queueing.enabled = false)",
     "Queue statistics are off for this hall (queueing.enabled = false)"),
    ("q_waiting_now", "各事项当前等候", "Waiting now, per service"),
    ("q_service", "事项", "Service"),
    ("q_class", "类别", "Class"),
    ("q_limit", "时限(分钟)", "Limit (min)"),
    ("q_waiting", "等候中", "Waiting"),
    ("q_late", "已超时", "Past limit"),
    ("q_longest", "最长等候", "Longest wait"),
    ("q_longest_of", "{ticket} 已等 {minutes} 分钟", "{ticket}, {minutes} min"),
    ("q_issued", "今日取号", "Issued today"),
    ("q_served", "办结", "Served"),
    ("q_abandoned", "弃号", "Abandoned"),
    ("q_within", "限时内占比", "Within limit"),
    ("q_within_of", "{pct}% ({within}/{judged})", "{pct}% ({within}/{judged})"),
    ("q_no_services", "今日没有取号记录, 也未配置事项", "No tickets today and no services configured"),
    ("q_windows", "各窗口", "Windows"),
    ("q_calls", "叫号事项", "Calls"),
    ("q_serving", "正在办理", "Serving"),
    ("q_serving_since", "{ticket} (自 {at})", "{ticket} (since {at})"),
    ("q_pad", "评价器", "Rating pad"),
    ("q_pad_staff", "评价器上的人员", "Staff on the pad"),
    ("q_paused_since", "自 {at} 起", "since {at}"),
    ("q_ab_away", "A、B 岗均不在岗", "A and B posts both away"),
    ("q_ab_since", "自 {at}", "since {at}"),
    ("q_ab_present", "否", "no"),
    ("q_alert", "合并告警", "Combined alert"),
    ("q_alert_told", "已通知窗口管理", "window management told"),
    ("q_alert_pending", "暂停未满 {minutes} 分钟", "paused under {minutes} min"),
    ("q_alert_none", "-", "-"),
    ("q_no_windows", "今日没有窗口叫号, 也未配置窗口", "No window has called today and none is configured"),
    ("q_staff_hidden", "评价器人员、A/B 岗和合并告警仅对可查看考勤的角色显示",
     "The staff on the pad, the A/B posts and the combined alert are shown to roles that read attendance"),
    ("q_today", "今日合计", "Today"),
    ("q_judged", "已评判", "Judged"),
    ("q_report", "月度排队等候统计 (XLSX)", "Monthly queue report (XLSX)"),
    ("q_this_month", "本月 {month}", "This month, {month}"),
    ("q_last_month", "上月 {month}", "Last month, {month}"),
    ("q_class_general", "一般", "general"),
    ("q_class_complex", "复杂", "complex"),
    ("q_class_special", "特殊", "special"),
    ("q_pad_idle", "空闲", "idle"),
    ("q_pad_serving", "办理中", "serving"),
    ("q_pad_awaiting", "待评价", "awaiting a rating"),
    ("q_pad_paused", "暂停服务", "paused"),
    ("q_pad_please_wait", "请稍后", "please wait"),
    ("q_pad_offline", "离线", "offline"),
    ("q_pad_none", "未上报", "not reported"),
)  # fmt: skip
QUEUE_ZH: dict[str, str] = {k: zh for k, zh, _ in _WORDS}
QUEUE_EN: dict[str, str] = {k: en for k, _, en in _WORDS}
