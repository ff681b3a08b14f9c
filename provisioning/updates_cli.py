"""``hallfleet update rollout|status``: move a site's agents to a hallfleet version, canaries first.

    hallfleet update rollout --site qingpu --version 1.5.0 --store https://centre.hall.local/simple \\
        --canary kiosk-24h-1 --batch 5 --health-timeout 120 --config /etc/hallfleet/consumer.toml
    hallfleet update status --site qingpu

The rollout runs in the foreground and stops at the first device that is not updated (provisioning/updates.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from broker.commands import CommandError, centre_link, current_user, fmt_time
from broker.config import ConsumerConfig
from broker.store.db import Store
from provisioning.updates import (
    OUTCOME_EN,
    OUTCOME_ZH,
    DeviceResult,
    Plan,
    RolloutRefused,
    check_site,
    check_version,
    last_updates,
    make_stages,
    rollout,
    site_devices,
    summary,
)
from runtime.settings import load_settings
from runtime.transport import AsyncMqtt, MqttError

INSTALL_ALLOWANCE_S = 900  # the agent's default update.install_timeout_s


def add_parsers(sub: Any) -> None:
    up = sub.add_parser("update", help="update agents to a hallfleet version (canaries first) and see versions")
    up_sub = up.add_subparsers(dest="update_action", required=True)

    r = up_sub.add_parser("rollout", help="staged rollout: canaries, then batches; stops at the first failure")
    r.add_argument("--site", required=True)
    r.add_argument("--version", required=True, help="PEP 440 version, e.g. 1.5.0")
    r.add_argument(
        "--store",
        required=True,
        help="package store the devices install from: URL of a simple index or a directory of wheels on the devices",
    )
    group = r.add_mutually_exclusive_group()
    group.add_argument("--canary", default=None, help="canary devices, comma-separated")
    group.add_argument("--canary-count", type=int, default=1, help="else this many devices first (by name)")
    r.add_argument("--batch", type=int, default=5, help="devices updated together after the canaries")
    r.add_argument("--health-timeout", type=float, default=120, help="seconds a new version has to report healthy")
    r.add_argument("--devices", default=None, help="only these devices (comma-separated; default: all of the site)")
    r.add_argument("--allow-downgrade", action="store_true", help="allow a version older than a device runs")
    r.add_argument("--reason", default="", help="why (goes into the audit log)")
    r.add_argument("--issuer", default=None, help="who (default: the logged-in user)")
    r.add_argument("--ttl", type=int, default=600, help="seconds a device has to take its command")
    r.add_argument(
        "--wait",
        type=float,
        default=None,
        help="seconds to wait for each device (default: enough for an install, two restarts and two health checks)",
    )
    r.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    r.set_defaults(func=lambda a: _run(_rollout(a)))

    s = up_sub.add_parser("status", help="each device's reported version and last update")
    s.add_argument("--site", required=True)
    s.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    s.set_defaults(func=lambda a: _run(_status(a)))


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except (CommandError, MqttError, ValueError) as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


async def _rollout(a: argparse.Namespace) -> int:
    site, version = check_site(a.site), check_version(a.version)
    if a.health_timeout < 5:
        raise RolloutRefused("--health-timeout must be at least 5 s")
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    try:
        rows = {r.device: r for r in await site_devices(store, site)}
        chosen = _names(a.devices) or list(rows)
        if unknown := [d for d in chosen if d not in rows]:
            raise RolloutRefused(f"--devices {', '.join(unknown)}: the centre has never heard of them in {site}")
        canary = _names(a.canary)
        if canary and (unknown := [d for d in canary if d not in chosen]):
            raise RolloutRefused(f"--canary {', '.join(unknown)}: not among the devices of this rollout")
        # A device already on the version is not sent it again (it would refuse, and stop a resumed rollout).
        already = [d for d in chosen if rows[d].agent_version == version]
        todo = [d for d in chosen if d not in already]
        for d in todo:
            if rows[d].presence != "online":
                state = rows[d].presence
                print(f"注意：{d} 不在线（{state}），命令最多等待 {a.ttl} 秒", end=" / ")
                print(f"note: {d} is {state}; its command waits up to {a.ttl} s")
        plan = Plan(site, version, a.store, [], a.health_timeout, a.allow_downgrade)
        if todo:
            canary = [d for d in canary or [] if d in todo] or None
            stages = make_stages(todo, canary=canary, canary_count=a.canary_count, batch=a.batch)
            plan = Plan(site, version, a.store, stages, a.health_timeout, a.allow_downgrade)
        wait_s = a.wait if a.wait is not None else a.ttl + INSTALL_ALLOWANCE_S + 2 * a.health_timeout + 60
        results = [DeviceResult(d, -1, "already") for d in already]
        if not todo:
            print(summary(plan, results))
            return 0
        client = AsyncMqtt(centre_link(cfg.mqtt, "update"))
        await client.connect()
        try:
            results += await rollout(
                store,
                client,
                plan,
                issuer=a.issuer or current_user(),
                reason=a.reason or f"update to {version}",
                wait_s=wait_s,
                ttl_s=a.ttl,
                say=lambda line: print(line, flush=True),
            )
        finally:
            await client.disconnect()
    finally:
        await store.close()
    print(summary(plan, results))
    return 0 if all(r.ok for r in results) else 3


async def _status(a: argparse.Namespace) -> int:
    site = check_site(a.site)
    cfg = load_settings(ConsumerConfig, a.config)
    store = await Store.open(cfg.store.url)
    try:
        rows = await site_devices(store, site)
        updates = await last_updates(store, site)
    finally:
        await store.close()
    print(f"{'设备 device':24} {'版本 version':14} {'在线 presence':14} 最近更新 last update")
    for r in rows:
        u = updates.get(r.device)
        last = (
            f"{u['from_version']} -> {u['to_version']} {OUTCOME_ZH.get(u['outcome'], u['outcome'])} "
            f"{OUTCOME_EN.get(u['outcome'], u['outcome'])} {fmt_time(u['ts'])}"
            if u
            else "-"
        )
        print(f"{r.device:24} {r.agent_version or '?':14} {r.presence:14} {last}")
    return 0
