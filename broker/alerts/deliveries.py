"""Send the notifications rules wrote, retrying until delivered: a failed page is retried with backoff and
stays visible (``hallfleet alerts``) with its last error, never dropped.

Several consumers may run this loop on one database: a sender claims a row with a conditional UPDATE
(``claimed_until``) before sending, so a page goes out once. Due rows for one recipient are sent as one
message: a burst of incidents is one page, not twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.alerts.notifiers import DeliveryError, Message, Notifier, build_notifier
from broker.alerts.routing import AlertsConfig
from broker.rules.incidents import timeline
from broker.store.schema import incidents, notifications
from runtime.clock import Clock

log = logging.getLogger(__name__)

CLAIM_S = 120.0
BATCH = 200
PAGING_STEPS = ("opened", "warning", "breach", "dispatch")


class Deliverer:
    def __init__(
        self,
        engine: AsyncEngine,
        cfg: AlertsConfig,
        clock: Clock,
        publish: Callable[[str, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.clock = clock
        self.notifiers: dict[str, Notifier] = {
            name: build_notifier(name, ch, publish=publish) for name, ch in cfg.channels.items()
        }
        self.sent = 0
        self.failures = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Until stop(): a pass in progress finishes first, so a page that went out is recorded as sent
        (a cancelled pass would send it again after a restart)."""
        while not self._stop.is_set():
            try:
                await self.send_due()
            except SQLAlchemyError as exc:
                log.error("sending notifications: store unavailable (%s)", exc.__class__.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.cfg.send_every_s)

    def stop(self) -> None:
        self._stop.set()

    async def aclose(self) -> None:
        for n in self.notifiers.values():
            with contextlib.suppress(Exception):
                await n.aclose()

    async def send_due(self) -> int:
        """One pass: claim what is due, send it grouped per recipient, record the outcome. Returns rows sent."""
        now = self.clock.now()
        rows = await self._claim(now)
        by_recipient: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            by_recipient[row.recipient].append(row)
        sent = 0
        for recipient, group in by_recipient.items():
            sent += await self._send_group(recipient, group)
        return sent

    async def _claim(self, now: datetime) -> list[Any]:
        n = notifications.c
        claimable = sa.or_(n.claimed_until.is_(None), n.claimed_until < now)
        async with self.engine.begin() as conn:
            candidates = await conn.execute(
                sa.select(n.id).where(n.state == "pending", n.due_at <= now, claimable).order_by(n.id).limit(BATCH)
            )
            ids = [r.id for r in candidates]
            if not ids:
                return []
            claimed = await conn.execute(
                notifications.update()
                .where(n.id.in_(ids), n.state == "pending", claimable)
                .values(claimed_until=now + timedelta(seconds=CLAIM_S))
                .returning(*notifications.c)
            )
            return list(claimed.all())

    async def _send_group(self, recipient: str, rows: list[Any]) -> int:
        r = self.cfg.recipients.get(recipient)
        notifier = self.notifiers.get(rows[0].channel)
        if r is None or notifier is None:
            await self._failed(rows, f"recipient {recipient!r} or its channel is no longer configured", final=True)
            return 0
        try:
            await notifier.send(group_message(rows), r.address)
        except DeliveryError as exc:
            await self._failed(rows, f"{exc.channel}: {exc.detail}", final=not exc.retryable)
            return 0
        except Exception as exc:  # a notifier bug must not stop the others
            log.exception("notifier %s failed unexpectedly", rows[0].channel)
            await self._failed(rows, f"internal error: {exc!r}", final=False)
            return 0
        await self._sent(rows)
        return len(rows)

    async def _sent(self, rows: list[Any]) -> None:
        now = self.clock.now()
        n, c = notifications.c, incidents.c
        async with self.engine.begin() as conn:
            await conn.execute(
                notifications.update()
                .where(n.id.in_([r.id for r in rows]))
                .values(state="sent", sent_at=now, attempts=n.attempts + 1, claimed_until=None, last_error="")
            )
            for row in rows:
                if not row.ref.startswith("incident:"):
                    continue
                incident_id = row.ref.removeprefix("incident:")
                if row.step in PAGING_STEPS:
                    await conn.execute(
                        incidents.update().where(c.id == incident_id, c.notified_at.is_(None)).values(notified_at=now)
                    )
                await timeline(conn, incident_id, now, "notify", f"已送达 {row.recipient} ({row.channel}, {row.step})")
        self.sent += len(rows)
        log.info("sent %d notification(s) to %s via %s", len(rows), rows[0].recipient, rows[0].channel)

    async def _failed(self, rows: list[Any], error: str, *, final: bool) -> None:
        """Back off and retry; a permanent error (or one that outlived give_up_h) is marked failed, which
        the CLI and the dashboard list, and `hallfleet alerts retry` requeues."""
        now = self.clock.now()
        retry = self.cfg.retry
        self.failures += 1
        n = notifications.c
        async with self.engine.begin() as conn:
            for row in rows:
                attempts = row.attempts + 1
                delay = min(retry.max_s, retry.initial_s * 2 ** min(attempts - 1, 20))
                gave_up = final or now - row.created_at > timedelta(hours=retry.give_up_h)
                await conn.execute(
                    notifications.update()
                    .where(n.id == row.id)
                    .values(
                        state="failed" if gave_up else "pending",
                        attempts=attempts,
                        last_error=error[:1000],
                        due_at=now + timedelta(seconds=delay),
                        claimed_until=None,
                    )
                )
        level = logging.ERROR if final else logging.WARNING
        log.log(level, "delivery to %s failed (%s): %s", rows[0].recipient, "gave up" if final else "will retry", error)


def group_message(rows: list[Any]) -> Message:
    first = rows[0]
    if len(rows) == 1:
        return Message(first.subject, first.body, first.severity, first.site, first.link, json.loads(first.data))
    worst = min(rows, key=lambda r: ("critical", "major", "minor", "info").index(r.severity)).severity
    subject = f"{len(rows)} 条告警: " + "; ".join(r.subject for r in rows[:3])
    body = "\n\n".join(f"{r.subject}\n{r.body}" for r in rows)
    data = {"grouped": [json.loads(r.data) | {"ref": r.ref, "step": r.step} for r in rows]}
    return Message(subject[:300], body, worst, first.site, None, data)
