"""Counting the statements a piece of the store sends: a bound on statements holds on any machine, a time does not."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from broker.store.db import Store


class Statements:
    """Counts what the engine sends to the database (an executemany is one)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        sa.event.listen(store.engine.sync_engine, "before_cursor_execute", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1
