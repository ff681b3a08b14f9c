"""Commands, desired config and the audit log in the store: SQL on a live connection, so each change
and its audit row commit together."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.audit import chain
from broker.audit.sources import AUDIT_ROW
from broker.store.keys import DeviceKey
from broker.store.schema import audit_log, commands, device_configs, device_labels, devices
from protocol.commands import NEXT_STATES, Command, CommandAck, CommandState, ConfigReport, DesiredConfig

log = logging.getLogger(__name__)


async def audit(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    reason: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    await audit_many(conn, [audit_row(at=at, actor=actor, action=action, target=target, reason=reason, detail=detail)])


def audit_row(
    *, at: datetime, actor: str, action: str, target: str, reason: str = "", detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "at": at,
        "actor": actor[:64],
        "action": action[:64],
        "target": target[:140],
        "reason": reason[:500],
        "detail": json.dumps(detail or {}, ensure_ascii=False, default=str),
    }


async def audit_many(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Audit rows (``audit_row``) in one statement, chained in the order written."""
    # An executemany with RETURNING (SQLAlchemy batches it as multi-row VALUES, compiled once).
    insert = audit_log.insert().returning(*AUDIT_ROW.cols(AUDIT_ROW.columns))
    stored = (await conn.execute(insert, rows)).mappings().all()
    # Chained as stored (RETURNING), in this transaction: the rows and their links commit or roll back together.
    await chain.append(conn, AUDIT_ROW, sorted(stored, key=lambda r: r["id"]))


async def insert_command(conn: AsyncConnection, key: str, cmd: Command) -> None:
    await insert_commands(conn, [(key, cmd)])


async def insert_commands(conn: AsyncConnection, cmds: list[tuple[str, Command]]) -> None:
    """Queued commands (by device key text) and their audit rows, one statement each however many."""
    if not cmds:
        return
    await conn.execute(
        commands.insert(),
        [
            {
                "id": cmd.id,
                "key": key,
                "name": cmd.name,
                "args": json.dumps(cmd.args, ensure_ascii=False),
                "issuer": cmd.issuer,
                "reason": cmd.reason,
                "state": CommandState.QUEUED.value,
                "issued_at": cmd.issued_at,
                "expires_at": cmd.expires_at,
                "updated_at": cmd.issued_at,
            }
            for key, cmd in cmds
        ],
    )
    await audit_many(
        conn,
        [
            audit_row(
                at=cmd.issued_at,
                actor=cmd.issuer,
                action="command.issue",
                target=key,
                reason=cmd.reason,
                detail={"command_id": cmd.id, "name": cmd.name, "args": cmd.args, "expires_at": cmd.expires_at},
            )
            for key, cmd in cmds
        ],
    )


async def apply_ack(conn: AsyncConnection, key: str, ack: CommandAck, at: datetime) -> bool:
    """Move a command along its state machine. A device can only move its own commands; an ack that
    does not follow (duplicate, late, out of order) changes nothing and returns False."""
    c = commands.c
    row = (await conn.execute(sa.select(c.state, c.reason).where(c.id == ack.command_id, c.key == key))).first()
    if row is None:
        log.warning("ack from %s for unknown command %s", key, ack.command_id)
        return False
    current = CommandState(row.state)
    if ack.state not in NEXT_STATES.get(current, frozenset()):
        return False
    values: dict[str, Any] = {"state": ack.state.value, "updated_at": at}
    if ack.result is not None:
        values["result"] = json.dumps(ack.result, ensure_ascii=False)
    if ack.reason:
        values["refusal"] = ack.reason
    done = await conn.execute(
        commands.update().where(c.id == ack.command_id, c.state == current.value).values(**values)
    )
    if done.rowcount != 1:
        return False  # another consumer moved it first
    await audit(
        conn,
        at=at,
        actor=key,
        action=f"command.{ack.state.value}",
        target=key,
        reason=ack.reason or row.reason,
        detail={"command_id": ack.command_id, "name": ack.name, "result": ack.result},
    )
    return True


async def expire_commands(conn: AsyncConnection, now: datetime, grace_s: float = 0.0) -> list[tuple[str, str]]:
    """Queued commands whose time ran out (``grace_s`` ago: the broker's copy must be gone too) before the device
    took them: expired, audited."""
    c = commands.c
    rows = (
        await conn.execute(
            commands.update()
            .where(c.state == CommandState.QUEUED.value, c.expires_at < now - timedelta(seconds=grace_s))
            .values(state=CommandState.EXPIRED.value, updated_at=now, refusal="expired before the device took it")
            .returning(c.id, c.key, c.name)
        )
    ).all()
    for r in rows:
        await audit(
            conn,
            at=now,
            actor="centre",
            action="command.expired",
            target=r.key,
            reason="expired before the device took it",
            detail={"command_id": r.id, "name": r.name},
        )
    return [(r.id, r.key) for r in rows]


async def queued_commands(engine: AsyncEngine, now: datetime, older_than_s: float) -> list[tuple[DeviceKey, Command]]:
    c = commands.c
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                # The device row names the device; a device never heard of has no session to send to yet.
                sa.select(commands, devices.c.site, devices.c.device)
                .join(devices, devices.c.key == c.key)
                .where(
                    c.state == CommandState.QUEUED.value,
                    c.expires_at > now,
                    c.issued_at < now - timedelta(seconds=older_than_s),
                )
            )
        ).all()
    return [
        (
            DeviceKey(r.site, r.device),
            Command(
                id=r.id,
                name=r.name,
                args=json.loads(r.args),
                issuer=r.issuer,
                reason=r.reason,
                issued_at=r.issued_at,
                expires_at=r.expires_at,
            ),
        )
        for r in rows
    ]


async def insert_config(
    conn: AsyncConnection, key: str, config: dict[str, Any], issuer: str, at: datetime
) -> DesiredConfig:
    """The next version of a device's desired config."""
    c = device_configs.c
    latest = (await conn.execute(sa.select(sa.func.max(c.version)).where(c.key == key))).scalar()
    desired = DesiredConfig(version=int(latest or 0) + 1, issued_at=at, issuer=issuer, config=config)
    await conn.execute(
        device_configs.insert().values(
            key=key,
            version=desired.version,
            body=json.dumps(config, ensure_ascii=False),
            issuer=issuer,
            issued_at=at,
        )
    )
    await _replace_labels(conn, key, config.get("labels"))
    await audit(
        conn,
        at=at,
        actor=issuer,
        action="config.set",
        target=key,
        detail={"version": desired.version, "config": config},
    )
    return desired


async def _replace_labels(conn: AsyncConnection, key: str, labels: Any) -> None:
    """The newest desired config's labels become the device's (the overview filters on them)."""
    await conn.execute(device_labels.delete().where(device_labels.c.key == key))
    if isinstance(labels, dict) and labels:
        rows = [{"key": key, "name": str(n)[:64], "value": str(v)[:200]} for n, v in labels.items()]
        await conn.execute(device_labels.insert(), rows)


async def apply_config_report(
    conn: AsyncConnection, key: str, applied: bool, report: ConfigReport, at: datetime
) -> None:
    c = device_configs.c
    state = "applied" if applied else "rejected"
    result = await conn.execute(
        device_configs.update()
        .where(c.key == key, c.version == report.version, c.state == "desired")
        .values(state=state, reported_at=at, errors="; ".join(report.errors))
    )
    if result.rowcount == 1:
        await audit(
            conn,
            at=at,
            actor=key,
            action=f"config.{state}",
            target=key,
            reason="; ".join(report.errors)[:500],
            detail={"version": report.version},
        )
