"""Hash chains: each audit row and each attendance correction gets one link, appended in the transaction
that writes the record, whose hash is SHA-256 over the previous link's hash and the record's canonical
content.

Rule: a link is appended only while holding the chain head of its month (``record_chain_heads``, locked
FOR UPDATE on PostgreSQL; SQLite serialises writers already), so two writers never take the same seq or the
same prev_hash, and a rolled-back record takes its link with it.

Chains are per month (the month of the record's own time in China Standard Time, where the regulations'
months are counted): a month verifies without the years before it, and its head is what that month's
reports print. Each month's first link starts from a genesis hash naming the chain and the month.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.sources import Source
from broker.store.schema import record_chain, record_chain_heads
from runtime.clock import HALL_ZONE


@dataclass(frozen=True, slots=True)
class Head:
    chain: str
    month: str
    seq: int
    hash: str


def month_of(at: datetime) -> str:
    return at.astimezone(HALL_ZONE).strftime("%Y-%m")


def genesis(chain: str, month: str) -> str:
    return hashlib.sha256(f"hallfleet/{chain}/{month}".encode()).hexdigest()


def _plain(value: Any) -> Any:
    # Times as UTC ISO text: both backends hand back aware UTC datetimes (UtcDateTime), so a row hashes the
    # same when written and when read back for verification.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool | int | str) or value is None:
        return value
    raise TypeError(f"cannot hash a {type(value).__name__} in a chained record")


def ref_of(source: Source, row: Mapping[Any, Any]) -> str:
    return json.dumps([_plain(row[k]) for k in source.key], ensure_ascii=False, separators=(",", ":"))


def content(source: Source, row: Mapping[Any, Any]) -> bytes:
    body = {"source": source.name, "row": {c: _plain(row[c]) for c in source.columns}}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def link(prev_hash: str, source: Source, row: Mapping[Any, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content(source, row)).hexdigest()


async def append(conn: AsyncConnection, source: Source, rows: Iterable[Mapping[Any, Any]]) -> None:
    """Chain ``rows`` (as stored: pass what INSERT ... RETURNING gave back) in this transaction, in order. Rows
    of one month take the head once and their links go in one statement (a storm's commands are many)."""
    for month, group in groupby(rows, key=lambda row: month_of(row[source.time])):
        head = await _lock_head(conn, source.chain, month)
        seq, h, links = head.seq, head.hash, []
        for row in group:
            prev, seq, h = h, seq + 1, link(h, source, row)
            links.append(
                {"chain": source.chain, "month": month, "seq": seq, "source": source.name,
                 "ref": ref_of(source, row), "prev_hash": prev, "hash": h}
            )  # fmt: skip
        await conn.execute(record_chain.insert(), links)
        hc = record_chain_heads.c
        await conn.execute(
            record_chain_heads.update().where(hc.chain == source.chain, hc.month == month).values(seq=seq, hash=h)
        )


async def _lock_head(conn: AsyncConnection, chain: str, month: str) -> Head:
    # Imported here: broker.store.db imports the audit writer, which imports this module.
    from broker.store.db import _insert_ignore

    start = {"chain": chain, "month": month, "seq": 0, "hash": genesis(chain, month)}
    await conn.execute(_insert_ignore(conn, record_chain_heads), start)
    hc = record_chain_heads.c
    q = sa.select(hc.seq, hc.hash).where(hc.chain == chain, hc.month == month).with_for_update()
    row = (await conn.execute(q)).one()
    return Head(chain, month, row.seq, row.hash)


async def head(conn: AsyncConnection, chain: str, month: str) -> Head:
    """The month's head as stored (genesis, seq 0, for a month with no record)."""
    hc = record_chain_heads.c
    row = (await conn.execute(sa.select(hc.seq, hc.hash).where(hc.chain == chain, hc.month == month))).first()
    return Head(chain, month, row.seq, row.hash) if row else Head(chain, month, 0, genesis(chain, month))


def backfill(conn: sa.Connection, sources: Iterable[Source]) -> None:
    """Chain the records that existed before the chains (the migration): per chain, in the order of their
    time, then source, then key; idempotent only on an empty chain, which is where the migration runs it."""
    pending: dict[str, list[tuple[datetime, str, str, Source, Mapping[Any, Any]]]] = {}
    for s in sources:
        q = sa.select(*s.cols(tuple(dict.fromkeys(s.columns + s.key + (s.time,))))).where(s.present())
        for record in conn.execute(q).mappings():
            pending.setdefault(s.chain, []).append((record[s.time], s.name, ref_of(s, record), s, record))
    for chain, items in pending.items():
        items.sort(key=lambda i: (i[0], i[1], i[2]))
        heads: dict[str, Head] = {}
        links = []
        for at, _, ref, s, row in items:
            month = month_of(at)
            prev = heads.get(month, Head(chain, month, 0, genesis(chain, month)))
            h = link(prev.hash, s, row)
            links.append({"chain": chain, "month": month, "seq": prev.seq + 1, "source": s.name, "ref": ref,
                          "prev_hash": prev.hash, "hash": h})  # fmt: skip
            heads[month] = Head(chain, month, prev.seq + 1, h)
        conn.execute(record_chain.insert(), links)
        conn.execute(record_chain_heads.insert(), [{"chain": chain, "month": m, "seq": hd.seq, "hash": hd.hash}
                                                   for m, hd in heads.items()])  # fmt: skip
