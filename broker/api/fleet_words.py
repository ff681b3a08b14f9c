"""Words of the fleet overview and the device page, and every enum a page shows in words: device kinds, presence,
consumable states, incident kinds and their fault codes, event types, command names and units.

The rule: a page never prints a raw enum value. Each enum has a Chinese and an English table here; a value the
tables do not know (a new printer's IPP reason, say) is shown as the category's word for "other" with the raw
code after it, so the zh page still reads as Chinese and the technician still sees what the device said.
tests/test_i18n_pages.py renders every page with every value these tables know.
"""

from __future__ import annotations

from broker.rules.incidents import KIND_EN, KIND_ZH, OUTAGE, kind_label

FLEET_ZH: dict[str, str] = {
    "overview": "总览",
    "halls": "大厅",
    "devices_online": "在线设备",
    "open_incidents": "未关闭故障",
    "sla_soonest": "最近超时",
    "none": "无",
    "consumables_at_risk": "补货前将耗尽",
    "problems": "待处理问题（按紧急程度）",
    "no_problems": "当前没有待处理问题",
    "urgency": "期限",
    "problem": "问题",
    "filters": "筛选",
    "all": "全部",
    "device_kind": "设备类型",
    "label": "标签",
    "label_hint": "名称=值，如 zone=24h",
    "search": "搜索",
    "search_hint": "设备编号",
    "apply": "筛选",
    "clear_filters": "清除",
    "page": "第 {page} / {pages} 页，共 {total} 条",
    "prev": "上一页",
    "next": "下一页",
    "device_list": "设备列表",
    "runs_out": "预计 {at} 耗尽",
    "is_empty": "已用完",
    "is_low": "余量不足",
    "before_window": "下次补货时段 {at} 之前",
    "breached_count": "{n} 项已超时",
    "left": "剩余 {left}",
    "live_state": "实时状态",
    "agent_version": "代理版本",
    "session": "会话",
    "hours24": "24小时设备",
    "yes": "是",
    "no": "否",
    "labels": "标签",
    "health_history": "运行状况（24小时）",
    "no_health": "暂无运行数据",
    "recent_events": "最近事件",
    "event_type": "事件",
    "at": "时间",
    "detail": "详情",
    "no_events": "暂无事件",
    "device_incidents": "故障记录",
    "device_commands": "命令及审计记录",
    "audit_trail": "审计",
    "no_commands": "暂无命令",
    "actions": "可执行操作",
    "send": "发送",
    "reason_required": "原因（必填，记入审计）",
    "no_actions": "您的角色不能向设备发送命令",
    "source": "来源",
    "from_device": "设备上报",
    "estimate": "估算",
    "estimate_receipts": "估算：约剩 {left} 张小票（纸将尽后约可打印 {after} 张，已打印 {used} 张）",
    "estimate_forecast": "估算：按近期用量推算",
    "reported_state": "打印机上报",
    "cpu_temp_c": "CPU 温度",
    "load1": "系统负载",
    "mem_used_pct": "内存占用",
    "disk_used_pct": "磁盘占用",
    "outbox_depth": "待发事件",
    "unit_pct": "%",
    "unit_c": "°C",
    "unit_count": "条",
    "unit_sheets": "张",
    "not_found": "没有这台设备",
    "provisional": "进行中",
    "on_duty": "在岗",
    "not_arrived": "未到岗",
    "awaiting_out": "待签退",
}

FLEET_EN: dict[str, str] = {
    "overview": "Overview",
    "halls": "Halls",
    "devices_online": "Devices online",
    "open_incidents": "Open incidents",
    "sla_soonest": "Next SLA breach",
    "none": "none",
    "consumables_at_risk": "Out before restock",
    "problems": "Problems, most urgent first",
    "no_problems": "No problems right now",
    "urgency": "Deadline",
    "problem": "Problem",
    "filters": "Filters",
    "all": "all",
    "device_kind": "Device kind",
    "label": "Label",
    "label_hint": "name=value, e.g. zone=24h",
    "search": "Search",
    "search_hint": "device id",
    "apply": "Filter",
    "clear_filters": "Clear",
    "page": "Page {page} of {pages}, {total} in all",
    "prev": "Previous",
    "next": "Next",
    "device_list": "Devices",
    "runs_out": "runs out {at}",
    "is_empty": "empty",
    "is_low": "low",
    "before_window": "before the next restock window at {at}",
    "breached_count": "{n} breached",
    "left": "{left} left",
    "live_state": "Live state",
    "agent_version": "Agent version",
    "session": "Session",
    "hours24": "24-hour device",
    "yes": "yes",
    "no": "no",
    "labels": "Labels",
    "health_history": "Health (24 h)",
    "no_health": "No health reports yet",
    "recent_events": "Recent events",
    "event_type": "Event",
    "at": "Time",
    "detail": "Detail",
    "no_events": "No events yet",
    "device_incidents": "Incidents",
    "device_commands": "Commands and their audit trail",
    "audit_trail": "Audit",
    "no_commands": "No commands yet",
    "actions": "Actions",
    "send": "Send",
    "reason_required": "Reason (required, audited)",
    "no_actions": "Your role cannot send commands to devices",
    "source": "Source",
    "from_device": "reported by the device",
    "estimate": "estimate",
    "estimate_receipts": "estimate: about {left} receipts left ({after} after near-end, {used} printed since)",
    "estimate_forecast": "estimate from recent usage",
    "reported_state": "as the printer reports it",
    "cpu_temp_c": "CPU temperature",
    "load1": "Load",
    "mem_used_pct": "Memory used",
    "disk_used_pct": "Disk used",
    "outbox_depth": "Events waiting",
    "unit_pct": "%",
    "unit_c": "°C",
    "unit_count": "",
    "unit_sheets": "sheets",
    "not_found": "No such device",
    "provisional": "in progress",
    "on_duty": "on duty",
    "not_arrived": "not arrived yet",
    "awaiting_out": "awaiting sign-out",
}

# -- enums -------------------------------------------------------------------------------------------------
ROLES = {
    "kiosk": ("24小时自助终端", "24-hour kiosk"),
    "attendance": ("考勤终端", "attendance terminal"),
    "rating": ("好差评评价器", "rating pad"),
    "sim": ("模拟设备", "simulated device"),
    "door": ("门禁控制器", "door controller"),
    "locker": ("自助寄取柜", "locker bank"),
    "patrol": ("巡查扫码器", "patrol handheld"),
    "queue": ("排队叫号系统", "queue system"),
    "none": ("通用设备（仅心跳）", "generic device (heartbeats only)"),  # role "none": the fleet's plain agents
    "": ("未登记", "unregistered"),
}
KIOSK_FUNCTIONS = {  # agent/roles/kiosk.py's functions, lost in a kiosk.state
    "ticket": ("取号", "tickets"),
    "print": ("打印", "printing"),
    "query": ("查询", "queries"),
}
PRESENCE_REASONS = {  # broker/store/db.py's presence transitions, as an offline incident's summary names them
    "birth": ("上线", "came online"),
    "will (connection lost)": ("连接中断", "connection lost"),
    "clean shutdown": ("正常关机", "clean shutdown"),
    "heartbeat resumed": ("心跳恢复", "heartbeat resumed"),
    "heartbeat overdue": ("心跳超时", "heartbeat overdue"),
}
CONSUMABLE_STATES = {
    "ok": ("正常", "ok"),
    "low": ("将尽", "near end"),
    "empty": ("已用完", "empty"),
    "almost-full": ("将满", "almost full"),
    "full": ("已满", "full"),
    "jam": ("卡纸", "jammed"),
    "unknown": ("未知", "unknown"),
}
COMPONENTS = {
    "app": ("应用", "application"),
    "receipt_printer": ("小票打印机", "receipt printer"),
    "a4_printer": ("A4打印机", "A4 printer"),
}
FAULT_CODES = {
    # the agent's application watch
    "unhealthy": ("健康检查失败", "fails its health probes"),
    "restart_failed": ("多次重启无效", "restarts did not help"),
    # ESC/POS (drivers/escpos/status.py)
    "unreachable": ("无法连接", "unreachable"),
    "offline": ("脱机", "offline"),
    "cover_open": ("盖板打开", "cover open"),
    "paper_end": ("缺纸", "out of paper"),
    "unrecoverable_error": ("不可恢复错误", "unrecoverable error"),
    "autocutter_error": ("切刀故障", "cutter error"),
    "recoverable_error": ("可恢复错误", "recoverable error"),
    "auto_recoverable_error": ("自动恢复错误", "auto-recoverable error"),
    "error": ("故障", "error"),
    "stopped": ("已停止", "stopped"),
    # IPP printer-state-reasons (RFC 8011 5.4.12, PWG 5100.9)
    "media-empty": ("缺纸", "out of paper"),
    "media-jam": ("卡纸", "paper jam"),
    "media-needed": ("需装纸", "paper needed"),
    "media-low": ("纸张不足", "paper low"),
    "toner-empty": ("墨粉耗尽", "toner empty"),
    "toner-low": ("墨粉不足", "toner low"),
    "marker-supply-empty": ("耗材耗尽", "supply empty"),
    "marker-supply-low": ("耗材不足", "supply low"),
    "marker-waste-full": ("废粉盒已满", "waste box full"),
    "marker-waste-almost-full": ("废粉盒将满", "waste box almost full"),
    "door-open": ("机门打开", "door open"),
    "cover-open": ("盖板打开", "cover open"),
    "interlock-open": ("联锁打开", "interlock open"),
    "input-tray-missing": ("纸盒缺失", "input tray missing"),
    "output-tray-missing": ("出纸盘缺失", "output tray missing"),
    "output-area-full": ("出纸盘已满", "output tray full"),
    "output-area-almost-full": ("出纸盘将满", "output tray almost full"),
    "shutdown": ("已关机", "shut down"),
    "paused": ("已暂停", "paused"),
    "moving-to-paused": ("即将暂停", "pausing"),
    "spool-area-full": ("打印队列已满", "spool full"),
    "fuser-over-temp": ("定影器过热", "fuser too hot"),
    "fuser-under-temp": ("定影器温度不足", "fuser too cold"),
    "developer-empty": ("显影剂耗尽", "developer empty"),
    "developer-low": ("显影剂不足", "developer low"),
    "opc-life-over": ("感光鼓寿命已到", "drum end of life"),
    "opc-near-eol": ("感光鼓即将到期", "drum near end of life"),
    "marker-failure": ("成像故障", "marker failure"),
    "media-path-failure": ("走纸故障", "paper path failure"),
}
EVENT_TYPES = {
    "device.health": ("运行状况", "health"),
    "device.fault": ("设备故障", "device fault"),
    "attendance.punch": ("打卡", "punch"),
    "attendance.punch_rejected": ("打卡被拒", "punch refused"),
    "attendance.gallery": ("人脸库同步", "face gallery held"),
    "rating.submitted": ("评价", "rating"),
    "rating.pad_state": ("评价器状态", "pad state"),
    "kiosk.state": ("终端服务状态", "kiosk state"),
    "kiosk.fault": ("终端故障", "kiosk fault"),
    "kiosk.consumable": ("耗材读数", "consumable reading"),
    "kiosk.usage": ("使用量", "usage counters"),
    "command.ack": ("命令回执", "command answer"),
    "config.applied": ("配置已生效", "config applied"),
    "config.rejected": ("配置被拒", "config refused"),
    "app.restart": ("应用重启", "application restart"),
    "device.updated": ("软件更新", "software update"),
    "door.alarm": ("门禁告警", "door alarm"),
    "door.state": ("门状态", "door state"),
    "locker.parcel": ("存取件", "deposit or collection"),
    "locker.alarm": ("寄取柜告警", "locker alarm"),
    "locker.bank": ("寄取柜状态", "locker bank state"),
    "duty.netcheck": ("网络日常检查", "daily network check"),
    "patrol.scan": ("巡查扫码", "patrol scan"),
}
COMMANDS = {
    "restart_app": ("重启应用", "restart application"),
    "restart_agent": ("重启代理", "restart agent"),
    "reboot": ("重启设备", "reboot"),
    "diagnose": ("诊断", "diagnose"),
    "sync_config": ("同步配置", "sync config"),
    "collect_logs": ("收集日志", "collect logs"),
    "printer_test_slip": ("打印测试页", "print a test slip"),
    "printer_recover": ("打印机恢复", "recover the printer"),
    "update": ("软件更新", "update"),
    "door_unlock": ("远程开门", "unlock a door"),
    "locker_open": ("远程开格口", "open a compartment"),
    "network_check": ("网络检查", "network check"),
}
AUDIT_ACTIONS = {
    "command.issue": ("发起", "issued"),
    "command.delivered": ("已送达", "delivered"),
    "command.running": ("执行中", "running"),
    "command.succeeded": ("成功", "succeeded"),
    "command.failed": ("失败", "failed"),
    "command.rejected": ("已拒绝", "rejected"),
    "command.expired": ("已过期", "expired"),
}
OTHER = ("其他", "other")
ENUMS: dict[str, dict[str, tuple[str, str]]] = {
    "role": ROLES,
    "consumable_state": CONSUMABLE_STATES,
    "component": COMPONENTS,
    "fault_code": FAULT_CODES,
    "event_type": EVENT_TYPES,
    "command": COMMANDS,
    "audit_action": AUDIT_ACTIONS,
    "kiosk_function": KIOSK_FUNCTIONS,
    "presence_reason": PRESENCE_REASONS,
}
AFFECTED = ("受影响", "affected")


def enum_label(category: str, value: str, lang: str) -> str:
    """The word for ``value`` of ``category``; an unknown value as "其他 (value)" / "other (value)"."""
    i = 1 if lang == "en" else 0
    known = ENUMS[category].get(value)
    return known[i] if known is not None else f"{OTHER[i]} ({value})"


def incident_kind_label(kind: str, lang: str) -> str:
    """outage, offline ... as broker.rules.incidents names them; ``fault.{component}.{code}`` and
    ``consumable.{name}`` in words (kind_label would leave the component and the code raw)."""
    table = KIND_EN if lang == "en" else KIND_ZH
    if kind == OUTAGE:
        return "outage" if lang == "en" else "停机"
    if kind in table:
        return table[kind]
    head, _, rest = kind.partition(".")
    if head == "fault":
        component, _, code = rest.partition(".")
        return f"{enum_label('component', component, lang)} {enum_label('fault_code', code, lang)}"
    if head == "consumable":
        return kind_label(kind, lang)
    if head in table:  # door_forced.main, locker_overdue.A.3: the kind, then which door or compartment
        return f"{table[head]} {rest}"
    return f"{OTHER[1 if lang == 'en' else 0]} ({kind})"


def incident_summary(summary: str, lang: str, t: dict[str, str]) -> str:
    """An incident's summary as the rules wrote it (broker/rules/incidents.py), in words: ``kiosk.state=down
    ticket,print`` names the functions lost, ``offline: will (connection lost)`` the presence and its reason,
    ``thermal_paper=low`` the state. A fault's bare code is already in the kind's words, so it is left out; a
    fault's own text, written by the device, is shown as the device wrote it."""
    if summary.startswith("kiosk.state="):
        lost = [f for f in summary.partition(" ")[2].split(",") if f]
        sep = ", " if lang == "en" else "、"
        return (
            f"{AFFECTED[1 if lang == 'en' else 0]}: {sep.join(enum_label('kiosk_function', f, lang) for f in lost)}"
            if lost
            else ""
        )
    if summary in FAULT_CODES:
        return ""
    if summary in PRESENCE_REASONS:
        return enum_label("presence_reason", summary, lang)
    state, sep_, reason = summary.partition(": ")
    if sep_ and state in ("online", "offline", "stale", "shutdown", "unknown"):
        said = enum_label("presence_reason", reason, lang) if reason in PRESENCE_REASONS else reason
        return f"{t.get(state, state)}: {said}"
    _, eq, value = summary.partition("=")
    if eq and value in CONSUMABLE_STATES:
        return enum_label("consumable_state", value, lang)
    return summary


def _enum_words(i: int) -> dict[str, str]:
    """Every enum value as a word of its own, ``{category}.{value}``, for code that has the page's words but
    not its language (the live stream's row builders)."""
    return {f"{cat}.{value}": names[i] for cat, table in ENUMS.items() for value, names in table.items()}


FLEET_ZH |= _enum_words(0)
FLEET_EN |= _enum_words(1)
