"""Words of the store banner and the store-unreachable page (broker/api/store_health.py), Chinese first.
Every consumer state the banner can name has its word, so the zh page never prints one raw."""

from __future__ import annotations

# (key, 中文, English). Banner texts take {instance}, {since}, {error}, {state} (str.format).
_WORDS: tuple[tuple[str, str, str], ...] = (
    (
        "store_unreachable",
        "数据库无法访问: 看板读不到数据。设备上报的数据保留在设备和消息服务器上, 数据库恢复后自动入库。",
        "The store (database) is unreachable: the dashboard cannot read it. Devices and the MQTT broker keep what"
        " devices report; it is stored once the database is back.",
    ),
    (
        "store_waiting",
        "数据入库服务 {instance} 自 {since} 起无法写入数据库, 正在自动重试 (最近错误: {error})。",
        "Consumer {instance} cannot write to the store since {since} and keeps retrying (last error: {error}).",
    ),
    (
        "store_silent",
        "数据入库服务 {instance} 自 {since} 起未报告状态 (最后状态: {state}), 而有设备在线: 其数据可能未入库。",
        "Consumer {instance} has not reported since {since} (last state: {state}) while devices are online:"
        " their data may not be stored.",
    ),
    (
        "store_no_consumer",
        "没有数据入库服务报告过状态, 而有设备在线: 其数据可能未入库。",
        "No consumer has reported while devices are online: their data may not be stored.",
    ),
    ("consumer_running", "运行中", "running"),
    ("consumer_waiting", "等待数据库", "waiting for the store"),
    ("consumer_stopped", "已停止", "stopped"),
    ("store_down_title", "数据库无法访问", "Store unreachable"),
    (
        "store_down_hint",
        "请检查数据库服务 (PostgreSQL, 或 SQLite 数据文件) 是否正常, 恢复后刷新本页。",
        "Check the database (PostgreSQL, or the SQLite file); reload this page once it is back.",
    ),
)
STORE_ZH: dict[str, str] = {k: zh for k, zh, _ in _WORDS}
STORE_EN: dict[str, str] = {k: en for k, _, en in _WORDS}
