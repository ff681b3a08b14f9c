"""The device's durable state beside its outbox: the applied config and a role's own data (kv), the
commands it has taken (so a command id runs at most once, across restarts too), its counters and the
MQTT session counter.

Rule: it lives in the outbox's file and connection (agent/sqlite.py), because a role's counter is
committed in the same transaction as the event that advances it (Outbox.append(counter=...)): a restart
neither repeats nor skips work. Times come from the injected clock, as everything else on the device.
"""

from __future__ import annotations

from agent.sqlite import Database
from runtime.clock import Clock, SystemClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands_seen (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
"""
COMMANDS_KEPT_S = 30 * 86_400


def counter_key(name: str) -> str:
    """The meta key of a role's counter (written by Outbox.append, read here)."""
    return f"counter:{name}"


class StateStore:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def prepare(self) -> None:
        """Create the tables (the database is open)."""
        async with self.db.transaction() as db:
            await db.executescript(SCHEMA)

    # -- kv ----------------------------------------------------------------------------------------
    async def kv_get(self, key: str) -> str | None:
        async with self.db.lock:
            row = await (await self.db.execute("SELECT value FROM kv WHERE key = ?", (key,))).fetchone()
        return None if row is None else str(row[0])

    async def kv_set(self, key: str, value: str) -> None:
        async with self.db.transaction() as db:
            await db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- commands taken ----------------------------------------------------------------------------
    async def command_state(self, command_id: str) -> str | None:
        async with self.db.lock:
            cur = await self.db.execute("SELECT state FROM commands_seen WHERE id = ?", (command_id,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_command_state(self, command_id: str, name: str, state: str) -> None:
        now = self.clock.now().timestamp()
        async with self.db.transaction() as db:
            await db.execute(
                "INSERT INTO commands_seen (id, name, state, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, at = excluded.at",
                (command_id, name, state, now),
            )
            await db.execute("DELETE FROM commands_seen WHERE at < ?", (now - COMMANDS_KEPT_S,))

    async def commands_in(self, state: str) -> list[tuple[str, str]]:
        async with self.db.lock:
            cur = await self.db.execute("SELECT id, name FROM commands_seen WHERE state = ?", (state,))
            return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    # -- counters ----------------------------------------------------------------------------------
    async def counter(self, name: str) -> int:
        async with self.db.lock:
            return await self.db.meta(counter_key(name))

    async def next_session(self) -> int:
        """A new MQTT session counter (Sparkplug's bdSeq), persisted before the CONNECT that uses it."""
        async with self.db.transaction() as db:
            value = await db.meta("session") + 1
            await db.set_meta("session", value)
        return value
