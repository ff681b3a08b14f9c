"""``hallfleet cmd|cfg|audit``: the centre's operator commands (the same functions the API will call)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from broker.audit.cli import add_verify
from broker.commands import (
    CommandError,
    centre_link,
    command_row,
    current_user,
    fmt_time,
    issue_command,
    parse_args,
    recent_audit,
    set_desired_config,
)
from broker.config import ConsumerConfig
from broker.store.db import Store
from protocol.commands import FINAL_STATES, CommandState
from runtime.settings import load_settings
from runtime.transport import AsyncMqtt, MqttError

STATE_ZH = {
    "queued": "排队中",
    "delivered": "已送达",
    "running": "执行中",
    "succeeded": "成功",
    "failed": "失败",
    "rejected": "已拒绝",
    "expired": "已过期",
}


def add_parsers(sub: Any) -> None:
    cmd = sub.add_parser("cmd", help="send a command to a device and follow it")
    cmd_sub = cmd.add_subparsers(dest="cmd_action", required=True)
    send = cmd_sub.add_parser("send", help="issue a command: hallfleet cmd send SITE/DEVICE NAME [key=value ...]")
    send.add_argument("device", help="SITE/DEVICE")
    send.add_argument("name", help="restart_app, restart_agent, reboot, diagnose, sync_config, collect_logs ...")
    send.add_argument("args", nargs="*", help="key=value arguments (JSON values allowed)")
    send.add_argument("--reason", default="", help="why (required by reboot; goes into the audit log)")
    send.add_argument("--issuer", default=None, help="who (default: the logged-in user)")
    send.add_argument("--ttl", type=int, default=600, help="seconds the device has to take it")
    send.add_argument("--wait", type=float, default=30, help="seconds to follow its state (0: do not wait)")
    _centre_config(send)
    send.set_defaults(func=lambda a: _run(_send(a)))

    show = cmd_sub.add_parser("show", help="one command's state and result")
    show.add_argument("id")
    _centre_config(show)
    show.set_defaults(func=lambda a: _run(_show(a)))

    cfg = sub.add_parser("cfg", help="desired configuration of a device")
    cfg_sub = cfg.add_subparsers(dest="cfg_action", required=True)
    cfg_set = cfg_sub.add_parser("set", help="publish the next version of a device's config (JSON file)")
    cfg_set.add_argument("device", help="SITE/DEVICE")
    cfg_set.add_argument("file", type=Path, help='JSON object, e.g. {"heartbeat_s": 15}')
    cfg_set.add_argument("--issuer", default=None)
    _centre_config(cfg_set)
    cfg_set.set_defaults(func=lambda a: _run(_cfg_set(a)))

    audit = sub.add_parser("audit", help="the audit log (who, what, why, when, result)")
    audit.add_argument("--device", default=None, help="only this SITE/DEVICE")
    audit.add_argument("--limit", type=int, default=50)
    _centre_config(audit)
    audit.set_defaults(func=lambda a: _run(_audit(a)))
    # `hallfleet audit` alone still lists the log; `audit verify` proves its chains.
    add_verify(audit.add_subparsers(dest="audit_action", required=False))


def _centre_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except (CommandError, MqttError) as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1


async def _send(a: argparse.Namespace) -> int:
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    client = AsyncMqtt(centre_link(cfg.mqtt, "cli"))
    try:
        await client.connect()
        cmd = await issue_command(
            store,
            client,
            a.device,
            a.name,
            parse_args(a.args),
            issuer=a.issuer or current_user(),
            reason=a.reason,
            ttl_s=a.ttl,
        )
        print(f"command {cmd.id} {cmd.name} -> {a.device}: queued 排队中 (expires {fmt_time(cmd.expires_at)})")
        return await _follow(store, cmd.id, a.wait)
    finally:
        await client.disconnect()
        await store.close()


async def _follow(store: Store, command_id: str, wait_s: float) -> int:
    last = "queued"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        row = await command_row(store, command_id)
        if row is not None and row.state != last:
            last = row.state
            print(f"  {fmt_time(row.updated_at)}  {last} {STATE_ZH.get(last, '')}  {row.refusal}".rstrip())
            if CommandState(last) in FINAL_STATES:
                if row.result:
                    print(json.dumps(json.loads(row.result), ensure_ascii=False, indent=2))
                return 0 if last == CommandState.SUCCEEDED else 3
        await asyncio.sleep(0.2)
    if wait_s:
        print(f"  still {last} after {wait_s:.0f} s; follow it with: hallfleet cmd show {command_id}")
    return 0


async def _show(a: argparse.Namespace) -> int:
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    try:
        row = await command_row(store, a.id)
        if row is None:
            print(f"hallfleet: no command {a.id}", file=sys.stderr)
            return 1
        for k in ("id", "key", "name", "args", "issuer", "reason", "state", "refusal", "result"):
            print(f"{k:10} {getattr(row, k)}")
        for k in ("issued_at", "expires_at", "updated_at"):
            print(f"{k:10} {fmt_time(getattr(row, k))}")
        return 0
    finally:
        await store.close()


async def _cfg_set(a: argparse.Namespace) -> int:
    try:
        config = json.loads(a.file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"cannot read {a.file}: {exc}") from None
    if not isinstance(config, dict):
        raise CommandError(f"{a.file} must hold a JSON object")
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    client = AsyncMqtt(centre_link(cfg.mqtt, "cli"))
    try:
        await client.connect()
        desired = await set_desired_config(store, client, a.device, config, issuer=a.issuer or current_user())
        print(f"config version {desired.version} published for {a.device}")
        return 0
    finally:
        await client.disconnect()
        await store.close()


async def _audit(a: argparse.Namespace) -> int:
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    try:
        for r in await recent_audit(store, a.device, a.limit):
            print(f"{fmt_time(r.at)}  {r.actor:20} {r.action:20} {r.target:28} {r.reason}  {r.detail}")
        return 0
    finally:
        await store.close()
