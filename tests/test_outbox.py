"""Pin the durable outbox on real SQLite files: seqs, durability across reopen, group commit, the two
lanes (critical refuses when full, telemetry drops oldest and counts), confirm, reject, sessions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import Outbox, OutboxFull, Row
from agent.state import StateStore
from protocol.events import Lane

TOPIC = "hall/v1/qingpu/att-01/evt/attendance.punch"
HEALTH_TOPIC = "hall/v1/qingpu/att-01/tele/health"


def build(seq: int) -> tuple[str, bytes]:
    return TOPIC, f'{{"seq":{seq}}}'.encode()


def build_health(seq: int) -> tuple[str, bytes]:
    return HEALTH_TOPIC, f'{{"health":{seq}}}'.encode()


def make(path: Path, **kwargs: Any) -> Outbox:
    kwargs.setdefault("commit_interval_ms", 0)
    return Outbox(path, **kwargs)


def state(outbox: Outbox) -> StateStore:
    """The state store on the outbox's own file and connection (as the agent composes them)."""
    return StateStore(outbox.db)


async def all_rows(outbox: Outbox) -> list[Row]:
    return await outbox.fetch(-1, 1_000_000)


async def all_seqs(outbox: Outbox) -> list[int]:
    return [row.seq for row in await all_rows(outbox)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox" / "outbox.db"


async def test_append_returns_consecutive_seqs_starting_at_zero(db: Path) -> None:
    async with make(db) as outbox:
        seqs = [await outbox.append(Lane.CRITICAL, build) for _ in range(5)]

        assert seqs == [0, 1, 2, 3, 4]
        assert outbox.depth == 5
        assert await all_rows(outbox) == [Row(seq, TOPIC, build(seq)[1]) for seq in range(5)]


async def test_open_creates_the_directory_and_the_file(db: Path) -> None:
    assert not await asyncio.to_thread(db.parent.exists)

    async with make(db) as outbox:
        await outbox.append(Lane.CRITICAL, build)

    assert await asyncio.to_thread(db.is_file)


async def test_fetch_pages_after_a_seq_with_a_limit(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(10):
            await outbox.append(Lane.CRITICAL, build)

        assert [row.seq for row in await outbox.fetch(3, 4)] == [4, 5, 6, 7]
        assert [row.seq for row in await outbox.fetch(8, 100)] == [9]
        assert await outbox.fetch(9, 100) == []


async def test_rows_survive_close_and_reopen(db: Path) -> None:
    async with make(db) as outbox:
        await outbox.append(Lane.CRITICAL, build)
        await outbox.append(Lane.TELEMETRY, build_health)
        await outbox.append(Lane.CRITICAL, build)

    async with make(db) as reopened:
        assert await all_rows(reopened) == [
            Row(0, TOPIC, b'{"seq":0}'),
            Row(1, HEALTH_TOPIC, b'{"health":1}'),
            Row(2, TOPIC, b'{"seq":2}'),
        ]
        assert reopened.depth == 3
        assert reopened.counts == {Lane.CRITICAL: 2, Lane.TELEMETRY: 1}


async def test_seq_continues_after_reopen_without_reuse(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(3):
            await outbox.append(Lane.CRITICAL, build)

    async with make(db) as reopened:
        assert reopened.next_seq == 3
        assert await reopened.append(Lane.CRITICAL, build) == 3
        assert await all_seqs(reopened) == [0, 1, 2, 3]


async def test_seq_is_not_reused_after_every_row_was_confirmed(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(4):
            await outbox.append(Lane.CRITICAL, build)
        assert await outbox.confirm([(0, 3)]) == 4
        assert outbox.depth == 0

    async with make(db) as reopened:
        assert await all_rows(reopened) == []
        assert await reopened.append(Lane.CRITICAL, build) == 4


async def test_counter_is_committed_with_its_row(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(7):
            await outbox.append(Lane.CRITICAL, build, counter="sim")
        await outbox.append(Lane.CRITICAL, build)
        await outbox.append(Lane.TELEMETRY, build_health, counter="health")

        assert await state(outbox).counter("sim") == 7

    async with make(db) as reopened:
        assert await state(reopened).counter("sim") == 7
        assert await state(reopened).counter("health") == 1
        assert await state(reopened).counter("never-used") == 0
        assert len(await all_rows(reopened)) == 9


async def test_counter_counts_every_append_of_a_group_commit(db: Path) -> None:
    async with make(db, commit_interval_ms=5) as outbox:
        await asyncio.gather(*(outbox.append(Lane.CRITICAL, build, counter="sim") for _ in range(50)))

    async with make(db) as reopened:
        assert await state(reopened).counter("sim") == 50
        assert len(await all_rows(reopened)) == 50


async def test_confirm_removes_exactly_the_confirmed_rows(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(10):
            await outbox.append(Lane.CRITICAL, build)

        removed = await outbox.confirm([(2, 4), (7, 7)])

        assert removed == 4
        assert await all_seqs(outbox) == [0, 1, 5, 6, 8, 9]
        assert outbox.depth == 6
        assert outbox.counts[Lane.CRITICAL] == 6


async def test_confirm_is_idempotent_and_ignores_unknown_seqs(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(5):
            await outbox.append(Lane.CRITICAL, build)
        await outbox.confirm([(1, 2)])

        assert await outbox.confirm([(1, 2)]) == 0
        assert await outbox.confirm([(100, 200)]) == 0
        assert await outbox.confirm([(4, 50)]) == 1
        assert await all_seqs(outbox) == [0, 3]
        assert outbox.depth == 2


async def test_confirm_updates_depth_of_both_lanes(db: Path) -> None:
    async with make(db) as outbox:
        await outbox.append(Lane.CRITICAL, build)
        await outbox.append(Lane.TELEMETRY, build_health)
        await outbox.append(Lane.TELEMETRY, build_health)

        await outbox.confirm([(0, 1)])

        assert outbox.counts == {Lane.CRITICAL: 0, Lane.TELEMETRY: 1}
        assert outbox.depth == 1


async def test_confirmed_rows_stay_gone_after_reopen(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(5):
            await outbox.append(Lane.CRITICAL, build)
        await outbox.confirm([(0, 1), (3, 3)])

    async with make(db) as reopened:
        assert await all_seqs(reopened) == [2, 4]
        assert reopened.depth == 2


async def test_telemetry_lane_keeps_the_newest_and_counts_drops(db: Path) -> None:
    async with make(db, max_telemetry=10) as outbox:
        for _ in range(25):
            await outbox.append(Lane.TELEMETRY, build_health)

        assert await all_seqs(outbox) == list(range(15, 25))
        assert outbox.dropped == 15
        assert outbox.depth == 10

    async with make(db, max_telemetry=10) as reopened:
        assert reopened.dropped == 15
        assert reopened.depth == 10
        assert await all_seqs(reopened) == list(range(15, 25))
        assert reopened.next_seq == 25


async def test_telemetry_bound_holds_for_a_group_commit(db: Path) -> None:
    async with make(db, max_telemetry=10, commit_interval_ms=5) as outbox:
        await asyncio.gather(*(outbox.append(Lane.TELEMETRY, build_health) for _ in range(25)))

        assert await all_seqs(outbox) == list(range(15, 25))
        assert outbox.dropped == 15


async def test_telemetry_drops_never_touch_critical_rows(db: Path) -> None:
    async with make(db, max_telemetry=10) as outbox:
        for _ in range(5):
            await outbox.append(Lane.CRITICAL, build)
        for _ in range(25):
            await outbox.append(Lane.TELEMETRY, build_health)

        assert await all_seqs(outbox) == [0, 1, 2, 3, 4, *range(20, 30)]
        assert outbox.counts == {Lane.CRITICAL: 5, Lane.TELEMETRY: 10}
        assert outbox.dropped == 15


async def test_critical_lane_full_refuses_without_consuming_a_seq(db: Path) -> None:
    built: list[int] = []

    def tracking_build(seq: int) -> tuple[str, bytes]:
        built.append(seq)
        return build(seq)

    async with make(db, max_critical=3) as outbox:
        for _ in range(3):
            await outbox.append(Lane.CRITICAL, tracking_build)

        with pytest.raises(OutboxFull):
            await outbox.append(Lane.CRITICAL, tracking_build)

        assert built == [0, 1, 2]  # the refused event was never even built
        assert outbox.next_seq == 3
        assert await outbox.append(Lane.TELEMETRY, build_health) == 3
        assert await all_seqs(outbox) == [0, 1, 2, 3]
        assert outbox.counts == {Lane.CRITICAL: 3, Lane.TELEMETRY: 1}

    async with make(db, max_critical=3) as reopened:
        assert reopened.next_seq == 4
        with pytest.raises(OutboxFull):
            await reopened.append(Lane.CRITICAL, build)


async def test_critical_lane_counts_pending_appends_against_the_bound(db: Path) -> None:
    async with make(db, max_critical=3, commit_interval_ms=5) as outbox:
        results = await asyncio.gather(*(outbox.append(Lane.CRITICAL, build) for _ in range(5)), return_exceptions=True)

        assert results[:3] == [0, 1, 2]
        assert all(isinstance(r, OutboxFull) for r in results[3:])
        assert await all_seqs(outbox) == [0, 1, 2]


async def test_critical_lane_takes_again_after_confirm(db: Path) -> None:
    async with make(db, max_critical=3) as outbox:
        for _ in range(3):
            await outbox.append(Lane.CRITICAL, build)
        with pytest.raises(OutboxFull):
            await outbox.append(Lane.CRITICAL, build)

        await outbox.confirm([(0, 0)])

        assert await outbox.append(Lane.CRITICAL, build) == 3


async def test_reject_moves_the_row_to_the_rejected_table(db: Path) -> None:
    async with make(db) as outbox:
        for _ in range(3):
            await outbox.append(Lane.CRITICAL, build)

        await outbox.reject(1, "not authorised")

        assert await outbox.rejected_count() == 1
        assert await all_seqs(outbox) == [0, 2]
        assert outbox.depth == 2

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, topic, body, reason FROM rejected").fetchall()
    assert rows == [(1, TOPIC, b'{"seq":1}', "not authorised")]

    async with make(db) as reopened:
        assert await reopened.rejected_count() == 1
        assert await all_seqs(reopened) == [0, 2]


async def test_reject_of_an_unknown_seq_changes_nothing(db: Path) -> None:
    async with make(db) as outbox:
        await outbox.append(Lane.CRITICAL, build)

        await outbox.reject(99, "not authorised")

        assert await outbox.rejected_count() == 0
        assert await all_seqs(outbox) == [0]


async def test_next_session_increments_and_persists(db: Path) -> None:
    async with make(db) as outbox:
        assert await state(outbox).next_session() == 1
        assert await state(outbox).next_session() == 2

    async with make(db) as reopened:
        assert await state(reopened).next_session() == 3


async def test_500_concurrent_appends_all_commit_with_distinct_consecutive_seqs(db: Path) -> None:
    async with make(db, commit_interval_ms=5) as outbox:
        seqs = await asyncio.gather(*(outbox.append(Lane.CRITICAL, build) for _ in range(500)))

        assert sorted(seqs) == list(range(500))
        assert len(set(seqs)) == 500
        rows = await all_rows(outbox)
        assert [row.seq for row in rows] == list(range(500))
        assert all(row.body == build(row.seq)[1] for row in rows)
        assert outbox.depth == 500

    async with make(db) as reopened:
        assert len(await all_rows(reopened)) == 500
        assert reopened.next_seq == 500


async def test_wait_committed_wakes_on_the_commit_and_times_out_without_one(db: Path) -> None:
    async with make(db) as outbox:
        assert not await outbox.wait_committed(-1, timeout=0.05), "nothing committed yet"
        waiter = asyncio.create_task(outbox.wait_committed(-1))
        await asyncio.sleep(0.02)
        assert not waiter.done()

        await outbox.append(Lane.CRITICAL, build)

        assert await asyncio.wait_for(waiter, 1) is True
        assert outbox.committed_seq == 0
        assert not await outbox.wait_committed(0, timeout=0.05), "seq 0 is not beyond 0"


async def test_one_event_is_committed_at_once_even_with_a_group_commit_window(db: Path) -> None:
    """GIVEN a 1 s window for contended group commits WHEN one producer appends THEN its commit does not
    wait for the window (a command's ack must not wait out a batch that never comes)."""
    async with make(db, commit_interval_ms=1000) as outbox:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(3):
            await outbox.append(Lane.CRITICAL, build)
        assert loop.time() - t0 < 0.5


async def test_contending_producers_share_commits(db: Path) -> None:
    """Appends taken while a commit is on the disk go together in the next one: fewer commits than events."""
    async with make(db) as outbox:
        commits = 0
        real_commit = outbox.db.commit

        async def counting_commit() -> None:
            nonlocal commits
            commits += 1
            await real_commit()

        outbox.db.commit = counting_commit  # type: ignore[method-assign]
        await asyncio.gather(*(outbox.append(Lane.CRITICAL, build) for _ in range(200)))

        assert await all_seqs(outbox) == list(range(200))
        assert commits < 50, f"{commits} commits for 200 contending appends"


async def test_an_in_memory_outbox_is_a_real_backend_and_uses_no_thread(tmp_path: Path) -> None:
    import threading

    before = threading.active_count()
    async with Outbox(Path(":memory:")) as outbox:
        seqs = [await outbox.append(Lane.CRITICAL, build) for _ in range(3)]
        assert seqs == [0, 1, 2]
        assert await state(outbox).next_session() == 1
        assert await outbox.confirm([(0, 1)]) == 2
        assert await all_seqs(outbox) == [2]
        assert threading.active_count() == before


async def test_many_file_outboxes_share_one_sqlite_thread(tmp_path: Path) -> None:
    """aiosqlite gave every connection a thread (3,408 at 5,000 simulated agents): now one per process."""
    import threading

    boxes = [Outbox(tmp_path / f"o{i}.db") for i in range(20)]
    for b in boxes:
        await b.open()
    try:
        await asyncio.gather(*(b.append(Lane.CRITICAL, build) for b in boxes))
        sqlite_threads = [t for t in threading.enumerate() if t.name.startswith("sqlite")]
        assert len(sqlite_threads) == 1
    finally:
        for b in boxes:
            await b.close()


async def test_pending_appends_are_flushed_by_close(db: Path) -> None:
    outbox = make(db, commit_interval_ms=1000)
    await outbox.open()
    # Two producers contend: the committer waits out the 1 s window to gather more.
    tasks = [asyncio.create_task(outbox.append(Lane.CRITICAL, build)) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks)

    await outbox.close()

    assert sorted(await asyncio.wait_for(asyncio.gather(*tasks), 5)) == [0, 1]
    async with make(db) as reopened:
        assert await all_seqs(reopened) == [0, 1]


# BUG: agent/outbox.py Outbox.close() (lines 116-125) cancels the committer task even while it is inside
# _flush(). _flush() has already moved the batch out of self._pending (line 167) and only catches
# Exception (line 192), so the CancelledError leaves the batch's futures unresolved and the transaction
# uncommitted: close() then finds _pending empty and closes the connection (rolling back). The caller
# of append() waits forever and the event is gone (reopen: no row, next_seq 0). Reproduce: append with
# commit_interval_ms=0, close() once the committer has taken the batch.
async def test_close_during_an_in_flight_commit_still_commits_the_event(db: Path) -> None:
    outbox = make(db, commit_interval_ms=0)
    await outbox.open()
    task = asyncio.create_task(outbox.append(Lane.CRITICAL, build))
    for _ in range(1000):  # until the committer has taken the batch into _flush()
        await asyncio.sleep(0)
        if not outbox._pending:
            break
    assert not outbox._pending
    assert not task.done()

    await outbox.close()

    try:
        seq = await asyncio.wait_for(task, 2)
    except TimeoutError:
        pytest.fail("append() never returned: close() cancelled its in-flight commit")
    assert seq == 0
    async with make(db) as reopened:
        assert await all_seqs(reopened) == [0]
        assert reopened.next_seq == 1
