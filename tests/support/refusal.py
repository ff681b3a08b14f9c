"""A real database that refuses chosen valid rows: the store errors a gap in the contract would bring.

The rule: the refusal is the database's own (a CHECK constraint on PostgreSQL, a trigger on SQLite, both an
integrity error), so the consumer meets it exactly as it would a real one. tests/test_store_errors.py uses it
end to end; bench/ingest.py drains a backlog through it to price the isolation (issue 16).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

POISON = "poison-16"
"""The marker: a row whose refused column mentions it is refused; nothing else is."""


async def refuse(engine: AsyncEngine, table: sa.Table, column: str) -> None:
    """Make the real database refuse any row whose ``column`` mentions POISON (an integrity error)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                sa.text(
                    f"ALTER TABLE {table.name} ADD CONSTRAINT refuse_{column} "
                    f"""CHECK ("{column}" NOT LIKE '%{POISON}%')"""
                )
            )
            return
        for when in ("INSERT", "UPDATE"):
            await conn.execute(
                sa.text(
                    f"CREATE TRIGGER refuse_{table.name}_{column}_{when.lower()} BEFORE {when} ON {table.name} "
                    f"""WHEN NEW."{column}" LIKE '%{POISON}%' BEGIN SELECT RAISE(ABORT, '{POISON} refused'); END"""
                )
            )
