"""The store on both backends: migrations match the schema, writes are idempotent, presence rules."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event as sa_event

from broker.store import events_insert
from broker.store.db import Batch, StatusUpdate, Store, Transition
from broker.store.keys import DeviceKey, EventRef
from broker.store.schema import devices, events, metadata, presence_history
from protocol.envelope import Presence, StatusMessage
from protocol.ids import uuid7

T0 = datetime(2026, 11, 23, 8, 25, tzinfo=UTC)
KEY = "qp/att-1"
DEV = DeviceKey("qp", "att-1")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    yield s
    await s.close()


async def transitions_of(store: Store, batch: Batch) -> list[Transition]:
    return list((await store.write(batch)).transitions)


def event_row(seq: int, event_id: str | None = None, at: datetime = T0) -> dict[str, Any]:
    return {
        "site": "qp",
        "device": "att-1",
        "id": event_id or uuid7(),
        "type": "attendance.punch",
        "seq": seq,
        "boot_id": "b",
        "ts": at.astimezone(),
        "clock_synced": True,
        "replayed": False,
        "received_at": at,
        "data": '{"staff_id": "S1", "method": "face"}',
    }


def status(state: Presence, session: int, at: datetime, retained: bool = False, hb: float = 10) -> Batch:
    msg = StatusMessage(state=state, session=session, boot_id="b", ts=at, heartbeat_s=hb)
    upd = StatusUpdate("qp", "att-1", msg, retained, at)
    b = Batch(statuses=[upd])
    if not retained:
        b.seen[DEV] = at
    return b


async def presence_of(store: Store) -> str:
    return str(await store.scalar(sa.select(devices.c.presence).where(devices.c.key == KEY)))


async def test_migrations_create_exactly_the_schema_the_code_uses(store: Store) -> None:
    def diff(sync_conn: sa.Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_conn), metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_migrating_twice_is_harmless(store_url: str, store: Store) -> None:
    again = await Store.open(store_url)
    await again.close()


async def test_a_store_in_a_missing_directory_is_refused_by_name_before_any_connection(tmp_path: Path) -> None:
    """The commonest config typo: the error names the directory, and no driver thread is left to answer after the
    command's loop has closed (aiosqlite's failed connect did: a traceback after the command's own error)."""
    before = set(threading.enumerate())
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "no" / "such")):
        await Store.open(f"sqlite+aiosqlite:///{tmp_path}/no/such/store.db")
    assert not set(threading.enumerate()) - before, "no driver thread started"
    assert not (tmp_path / "no").exists()
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/store.db")  # its directory exists: created
    await opened.close()
    assert (tmp_path / "store.db").is_file()


async def test_the_same_event_written_twice_is_stored_once(store: Store) -> None:
    row = event_row(0)
    first = await store.write(Batch(events=[row], seen={DEV: T0}))
    second = event_row(1)
    again = await store.write(Batch(events=[row, second], seen={DEV: T0}))
    assert first.new_events == {EventRef("qp", "att-1", row["id"])}
    assert again.new_events == {EventRef("qp", "att-1", second["id"])}, "only what was new is said to be new"
    rows = await store.fetch(sa.select(events.c.seq, events.c.ts, events.c.received_at).order_by(events.c.seq))
    assert [r.seq for r in rows] == [0, 1]
    assert rows[0].ts == T0 and rows[0].ts.tzinfo is not None, "times come back aware, in UTC"


async def test_a_batch_mixing_new_stored_and_repeated_events_says_exactly_which_were_new(store: Store) -> None:
    """The insert learns newness from its row counts, and reads the new rows back only when some were not new:
    an event stored before and one that comes twice in the same batch are both not new (the second time)."""
    stored, a, c = event_row(0), event_row(1), event_row(2)
    await store.write(Batch(events=[stored], seen={DEV: T0}))
    written = await store.write(Batch(events=[a, stored, c, a], seen={DEV: T0}))
    assert written.new_events == {EventRef("qp", "att-1", r["id"]) for r in (a, c)}
    assert await store.scalar(sa.select(sa.func.count()).select_from(events)) == 3


async def test_signed_and_unsigned_events_in_one_batch_or_apart_keep_their_own_signature_columns(
    store: Store,
) -> None:
    """A batch without a signed event leaves the signature columns out of its insert (both backends): they stay
    NULL; beside a signed one, each row keeps its own."""
    plain, alone = event_row(0), event_row(1)
    signed = event_row(2) | {"sig_key": "k1", "sig": "c2ln", "signed": '{"v":1}'}
    await store.write(Batch(events=[alone], seen={DEV: T0}))
    await store.write(Batch(events=[plain, signed], seen={DEV: T0}))
    c = events.c
    rows = await store.fetch(sa.select(c.seq, c.sig_key, c.sig, c.signed, c.clock_synced).order_by(c.seq))
    assert [tuple(r) for r in rows] == [
        (0, None, None, None, True),
        (1, None, None, None, True),
        (2, "k1", "c2ln", '{"v":1}', True),
    ]


async def test_the_batch_insert_stores_what_sqlalchemy_itself_would(store: Store) -> None:
    """The events insert bypasses SQLAlchemy's per-row binding: its columns must still hold exactly what the
    column types write (SQLite keeps times as text, compared as text by every reader), a whole second too."""
    shanghai = timezone(timedelta(hours=8))
    at = datetime(2026, 11, 23, 16, 25, tzinfo=shanghai)  # no fraction: sqlite3's own adapter would drop it
    ours = event_row(0, at=at) | {"ts": at, "received_at": at.astimezone(UTC)}
    theirs = event_row(1, at=at) | {"ts": at, "received_at": at.astimezone(UTC)}
    await store.write(Batch(events=[ours], seen={DEV: T0}))
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), [theirs])
        raw = (await conn.exec_driver_sql("SELECT seq, ts, received_at, clock_synced, replayed FROM events")).all()
    by_seq = {r[0]: tuple(r[1:]) for r in raw}
    assert by_seq[0] == by_seq[1], "the driver got other values than SQLAlchemy's insert writes"
    [row] = await store.fetch(sa.select(events.c.ts).where(events.c.seq == 0))
    assert row.ts == at


async def test_the_batch_insert_commits_or_rolls_back_with_the_write(store: Store) -> None:
    """Known device, no status: the events insert is the transaction's first statement, and must still be in it."""
    await store.write(Batch(events=[event_row(0)], seen={DEV: T0}))

    async def rule_bug(conn: Any, written: Any) -> None:
        assert len(written.new_events) == 2
        raise KeyError("a rule bug")

    with pytest.raises(KeyError):
        await store.write(Batch(events=[event_row(1), event_row(2)]), rule_bug)
    assert await store.scalar(sa.select(sa.func.count()).select_from(events)) == 1


async def test_a_failed_write_leaves_nothing_behind_for_the_next_batch(store: Store) -> None:
    """GIVEN a write that failed half-way (the batch's connection is kept between writes) WHEN the next batch
    comes THEN it commits on its own: nothing of the failed one rides along."""
    await store.write(Batch(events=[event_row(0)], seen={DEV: T0}))

    async def rule_bug(conn: Any, written: Any) -> None:
        raise KeyError("a rule bug")

    with pytest.raises(KeyError):
        await store.write(Batch(events=[event_row(1)], seen={DEV: T0}), rule_bug)
    written = await store.write(Batch(events=[event_row(2)], seen={DEV: T0}))
    assert len(written.new_events) == 1
    seqs = await store.fetch(sa.select(events.c.seq).order_by(events.c.seq))
    assert [r.seq for r in seqs] == [0, 2]


@pytest.mark.postgres
async def test_a_batch_after_the_database_ended_the_kept_connection_is_stored_at_once(pg_url: str) -> None:
    """GIVEN the batches' connection ended by the database while idle (a restart, an idle timeout) WHEN the next
    batch comes THEN it is stored without an error, as when every batch checked a pinged connection out."""
    store = await Store.open(pg_url)
    try:
        await store.write(Batch(events=[event_row(0)], seen={DEV: T0}))
        async with store.engine.connect() as other:
            ended = await other.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert ended >= 1
        written = await store.write(Batch(events=[event_row(1)], seen={DEV: T0}))
        assert len(written.new_events) == 1
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_new_batch_on_postgresql_is_one_insert_and_only_a_batch_with_stored_events_reads_back(
    pg_url: str,
) -> None:
    """Nothing returned by the insert (its row count says all were new); the rows this transaction wrote are read
    back only when some events were stored already, and concurrent writers' rows are not among them."""
    store = await Store.open(pg_url)
    statements: list[str] = []
    sa_event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        old, other_writer = event_row(0), event_row(1)
        await store.write(Batch(events=[old], seen={DEV: T0}))
        async with store.engine.begin() as conn:  # committed by someone else, not in any batch of ours
            await conn.execute(events.insert(), [other_writer])
        statements.clear()
        fresh = event_row(2)
        written = await store.write(Batch(events=[fresh], seen={DEV: T0}))
        assert written.new_events == {EventRef("qp", "att-1", fresh["id"])}
        assert not [q for q in statements if ("INTO events" in q and "RETURNING" in q) or "xmin" in q], statements
        mixed = [event_row(3), old, other_writer, event_row(4)]
        written = await store.write(Batch(events=[*mixed, mixed[0]], seen={DEV: T0}))
        assert written.new_events == {EventRef("qp", "att-1", mixed[i]["id"]) for i in (0, 3)}
        assert len([q for q in statements if "xmin" in q]) == 1
    finally:
        await store.close()


async def test_a_read_back_that_disagrees_with_the_insert_count_fails_the_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back of a batch with stored events is held to the insert's own count: finding fewer would store
    events the rules stage never sees, so the write fails and nothing of it stays."""
    old = event_row(0)
    await store.write(Batch(events=[old], seen={DEV: T0}))
    monkeypatch.setattr(events_insert, "_PG_ADDED", events_insert._PG_ADDED + " AND false")
    monkeypatch.setattr(events_insert, "_SQLITE_ADDED_SINCE", events_insert._SQLITE_ADDED_SINCE + " AND 0")
    with pytest.raises(RuntimeError, match="added 1 rows but 0 were read back"):
        await store.write(Batch(events=[old, event_row(1)], seen={DEV: T0}))
    assert await store.scalar(sa.select(sa.func.count()).select_from(events)) == 1


async def test_a_batch_past_one_statement_says_exactly_which_events_were_new(store: Store) -> None:
    rows = [event_row(seq) for seq in range(4500)]  # SQLite: three statements
    first = await store.write(Batch(events=rows[:3000], seen={DEV: T0}))
    assert len(first.new_events) == 3000
    again = await store.write(Batch(events=rows, seen={DEV: T0}))
    assert again.new_events == {EventRef("qp", "att-1", r["id"]) for r in rows[3000:]}
    assert await store.scalar(sa.select(sa.func.count()).select_from(events)) == 4500


async def test_naive_times_are_refused(store: Store) -> None:
    row = event_row(0) | {"received_at": T0.replace(tzinfo=None)}
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await store.write(Batch(events=[row], seen={DEV: T0}))


async def test_birth_will_and_late_will(store: Store) -> None:
    await store.write(status(Presence.ONLINE, 1, T0))
    assert await presence_of(store) == "online"
    await store.write(status(Presence.ONLINE, 2, T0 + timedelta(seconds=5)))
    late = await transitions_of(store, status(Presence.OFFLINE, 1, T0 + timedelta(seconds=6)))
    assert late == [] and await presence_of(store) == "online", "a Will of session 1 must not kill session 2"
    t = await transitions_of(store, status(Presence.OFFLINE, 2, T0 + timedelta(seconds=7)))
    assert [(x.state, x.reason) for x in t] == [("offline", "will (connection lost)")]
    assert await presence_of(store) == "offline"


async def test_a_duplicate_birth_changes_nothing_and_a_retained_old_birth_is_old_news(store: Store) -> None:
    await store.write(status(Presence.ONLINE, 3, T0))
    assert await transitions_of(store, status(Presence.ONLINE, 3, T0 + timedelta(seconds=1))) == []
    await store.write(status(Presence.OFFLINE, 3, T0 + timedelta(seconds=2)))
    # A restarted consumer gets the retained status: an online of the same session is stale news.
    assert await transitions_of(store, status(Presence.ONLINE, 3, T0 + timedelta(seconds=3), retained=True)) == []
    assert await presence_of(store) == "offline"
    # ... but a retained birth of a newer session means we missed it.
    t = await transitions_of(store, status(Presence.ONLINE, 4, T0 + timedelta(seconds=4), retained=True))
    assert [x.state for x in t] == ["online"]


async def test_a_device_that_reset_its_session_counter_is_still_believed_when_it_comes_online(
    store: Store,
) -> None:
    await store.write(status(Presence.ONLINE, 57, T0))
    await store.write(status(Presence.OFFLINE, 57, T0 + timedelta(seconds=1)))
    t = await transitions_of(store, status(Presence.ONLINE, 1, T0 + timedelta(seconds=2)))  # re-imaged device
    assert [x.state for x in t] == ["online"]
    assert await presence_of(store) == "online"


async def test_stale_after_one_and_a_half_heartbeats_and_revived_by_any_message(store: Store) -> None:
    await store.write(status(Presence.ONLINE, 1, T0, hb=10))
    assert await store.sweep_stale(T0 + timedelta(seconds=14)) == []
    stale = await store.sweep_stale(T0 + timedelta(seconds=16))
    assert [(x.key, x.state) for x in stale] == [(DEV, "stale")]
    assert await store.sweep_stale(T0 + timedelta(seconds=30)) == [], "stale once, not at every sweep"
    t = await store.write(Batch(events=[event_row(0)], seen={DEV: T0 + timedelta(seconds=31)}))
    assert [(x.state, x.reason) for x in t.transitions] == [("online", "heartbeat resumed")]
    states = await store.fetch(sa.select(presence_history.c.state).order_by(presence_history.c.id))
    assert [r.state for r in states] == ["online", "stale", "online"]


async def test_a_batch_revives_only_its_stale_devices_and_moves_every_deadline(store: Store) -> None:
    """A batch's touch moves every device's deadline; its revival takes only the stale ones online, as of the
    batch's newest message (broker/store/events_insert.py's touch_devices, both backends)."""
    other = DeviceKey("qp", "att-2")
    at_other = T0 + timedelta(seconds=10)
    await store.write(status(Presence.ONLINE, 1, T0, hb=10))
    other_birth = StatusMessage(state=Presence.ONLINE, session=4, boot_id="b", ts=at_other, heartbeat_s=10)
    await store.write(
        Batch(statuses=[StatusUpdate("qp", "att-2", other_birth, False, at_other)], seen={other: at_other})
    )
    assert [(x.key, x.state) for x in await store.sweep_stale(T0 + timedelta(seconds=16))] == [(DEV, "stale")]
    heard = T0 + timedelta(seconds=20)
    t = await store.write(Batch(events=[event_row(0)], seen={DEV: heard, other: heard}))
    assert [(x.key, x.state, x.session, x.at) for x in t.transitions] == [(DEV, "online", 1, heard)]
    c = devices.c
    rows = await store.fetch(sa.select(c.key, c.presence, c.presence_since, c.last_seen, c.stale_after).order_by(c.key))
    assert [(r.key, r.presence, r.presence_since, r.last_seen, r.stale_after) for r in rows] == [
        (KEY, "online", heard, heard, heard + timedelta(seconds=15)),
        ("qp/att-2", "online", at_other, heard, heard + timedelta(seconds=15)),
    ]


async def test_shutdown_is_not_offline(store: Store) -> None:
    await store.write(status(Presence.ONLINE, 1, T0))
    await store.write(status(Presence.SHUTDOWN, 1, T0 + timedelta(seconds=1)))
    assert await presence_of(store) == "shutdown"
    assert await store.sweep_stale(T0 + timedelta(hours=1)) == [], "a device that said goodbye is not stale"


async def test_a_retained_birth_heard_first_registers_the_device(store: Store) -> None:
    # A consumer started after the device hears its retained birth before any event.
    await store.write(status(Presence.ONLINE, 1, T0, retained=True))
    assert await presence_of(store) == "online"
    await store.write(Batch(events=[event_row(0)], seen={DEV: T0 + timedelta(seconds=1)}))
    last_seen = await store.scalar(sa.select(devices.c.last_seen).where(devices.c.key == KEY))
    assert last_seen == T0 + timedelta(seconds=1)
