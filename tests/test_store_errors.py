"""What the store refuses costs only the message behind it: one test per class of store error, on both backends.

The contract (protocol/bounds.py) keeps these values off the wire, so here they reach the store the way a
gap in the contract or a rule would bring them: as rows in a batch (isolation against the real database),
or as valid messages a constraint of the real database refuses (the consumer end to end).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from broker.ingest.isolation import StopCommitting, StoreFault, classify, commit_isolated
from broker.ingest.items import Item, to_batch
from broker.mosquitto.local import LocalMosquitto
from broker.store import commands as cmd_sql
from broker.store.db import Store, create_engine
from broker.store.schema import commands, dead_letters, device_configs, devices, events, incident_timeline
from protocol import topics
from protocol.commands import Command, CommandAck, CommandState, ConfigReport
from protocol.envelope import Envelope, Presence, StatusMessage
from protocol.events import Fault
from protocol.ids import uuid7
from tests.conftest import RunningConsumer
from tests.support.mqtt import publish
from tests.support.procs import wait_for
from tests.support.refusal import POISON, refuse


def row(n: int, **over: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    r = {
        "site": "qp",
        "device": f"dev-{n}",
        "id": uuid7(),
        "type": "attendance.punch",
        "seq": n,
        "boot_id": "b1",
        "ts": now,
        "clock_synced": True,
        "replayed": False,
        "received_at": now,
        "data": "{}",
    }
    return {**r, **over}


def item(n: int, **over: Any) -> Item:
    r = row(n, **over)
    return Item(f"hall/v1/qp/dev-{n}/evt/attendance.punch", b"raw-%d" % n, n, event=r)


async def never_unavailable(exc: BaseException) -> None:
    raise AssertionError(f"a data error was taken for an unavailable store: {exc!r}")


# Each class of refusal, as the value that causes it, and the backends whose database refuses it.
DATA_ERRORS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "integer overflow (past 64 bits)": ({"seq": 2**64}, {"sqlite", "postgresql"}),
    "encoding (lone surrogate)": ({"boot_id": "b\ud800"}, {"sqlite", "postgresql"}),
    "encoding (NUL in text)": ({"boot_id": "b\x00"}, {"postgresql"}),
    "value too long for its column": ({"boot_id": "b" * 65}, {"postgresql"}),
    "integrity (NOT NULL)": ({"boot_id": None}, {"sqlite", "postgresql"}),
    "cannot adapt (a dict for text)": ({"boot_id": {"a": 1}}, {"sqlite", "postgresql"}),
    "a time that cannot be moved to UTC": (
        {"ts": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))},
        {"sqlite", "postgresql"},
    ),
    "a naive time (bind processor, wrapped by SQLAlchemy)": ({"ts": datetime(2026, 1, 1)}, {"sqlite", "postgresql"}),
}


@pytest.mark.parametrize("case", list(DATA_ERRORS))
async def test_each_class_of_data_error_costs_only_its_row_and_says_why(store_url: str, case: str) -> None:
    """GIVEN a batch of good rows and one the database refuses WHEN it is committed with isolation THEN the
    good rows are stored, the bad one comes back with the database's message, and nothing was retried."""
    over, refusing = DATA_ERRORS[case]
    store = await Store.open(store_url)
    try:
        batch = [item(1), item(2), item(3, **over), item(4), item(5)]

        async def write(items: Sequence[Item]) -> None:
            await store.write(to_batch(items))

        out = await commit_isolated(batch, write, never_unavailable)

        if store.engine.dialect.name in refusing:
            assert [i.mid for i in out.committed] == [1, 2, 4, 5]
            assert [(i.mid, bool(why)) for i, why in out.rejected] == [(3, True)]
            assert await _count(store, events) == 4
        else:  # SQLite keeps NUL and does not enforce VARCHAR lengths: it stores what PostgreSQL refuses
            assert (len(out.committed), out.rejected, out.writes) == (5, [], 1)
    finally:
        await store.close()


@pytest.mark.parametrize("case", list(DATA_ERRORS))
async def test_each_refusal_is_classified_as_data_not_as_an_unavailable_store(store_url: str, case: str) -> None:
    over, refusing = DATA_ERRORS[case]
    store = await Store.open(store_url)
    try:
        try:
            await store.write(to_batch([item(1, **over)]))
        except Exception as exc:
            assert store.engine.dialect.name in refusing, repr(exc)
            assert classify(exc) is StoreFault.DATA, repr(exc)
        else:
            assert store.engine.dialect.name not in refusing, "the database stored what it should refuse"
    finally:
        await store.close()


async def test_an_unreachable_postgresql_is_unavailable_and_retried_not_isolated() -> None:
    store = Store(create_engine(_closed_port_url()))
    tries: list[BaseException] = []

    async def retry(exc: BaseException) -> None:
        tries.append(exc)
        if len(tries) == 3:
            raise StopCommitting("enough")

    async def write(items: Sequence[Item]) -> None:
        await store.write(to_batch(items))

    try:
        with pytest.raises(StopCommitting):
            await commit_isolated([item(1), item(2)], write, retry)
        assert len(tries) == 3, "the same batch is retried, never split"
        assert all(classify(e) is StoreFault.UNAVAILABLE for e in tries)
    finally:
        await store.close()


async def test_an_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()  # a directory where the database file should be
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/dir.db")
    before = set(threading.enumerate())
    try:
        with pytest.raises(Exception) as caught:
            async with engine.begin() as conn:
                await conn.execute(sa.text("SELECT 1"))
        assert classify(caught.value) is StoreFault.UNAVAILABLE, repr(caught.value)
    finally:
        await engine.dispose()
        # aiosqlite stops a failed connection's thread by a message the thread answers on this loop: waited for
        # here, or it answered a loop already closed (a warning pinned on whichever test ran next).
        for thread in set(threading.enumerate()) - before:
            thread.join(5)


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+asyncpg://nobody:secret@127.0.0.1:{port}/nothing"


# -- the consumer, end to end: valid messages a constraint of the real database refuses ------------------


def envelope(device: str, seq: int, event_type: str, data: dict[str, Any]) -> Envelope:
    return Envelope(
        v=1,
        id=uuid7(),
        site="qp",
        device=device,
        type=event_type,
        seq=seq,
        boot_id="b1",
        ts=datetime.now(UTC),
        clock_synced=True,
        data=data,
    )


def punch_msg(device: str, seq: int, staff: str = "S0001") -> tuple[str, bytes, bool]:
    env = envelope(device, seq, "attendance.punch", {"staff_id": staff, "method": "face"})
    return topics.event("qp", device, "attendance.punch"), env.model_dump_json().encode(), False


def status_msg(device: str, role: str) -> tuple[str, bytes, bool]:
    s = StatusMessage(state=Presence.ONLINE, session=1, boot_id="b1", ts=datetime.now(UTC), heartbeat_s=30, role=role)
    return topics.status("qp", device), s.model_dump_json().encode(), False


async def _poisoned_ack(store: Store) -> tuple[str, bytes, bool]:
    now = datetime.now(UTC)
    cmd = Command(id=uuid7(), name="restart_app", issuer="test", issued_at=now, expires_at=now + timedelta(hours=1))
    async with store.engine.begin() as conn:
        await cmd_sql.insert_command(conn, "qp/kiosk-9", cmd)
    ack = CommandAck(command_id=cmd.id, name=cmd.name, state=CommandState.REJECTED, reason=f"{POISON} says no")
    env = envelope("kiosk-9", 1, "command.ack", ack.model_dump(mode="json"))
    return topics.cmd_ack("qp", "kiosk-9"), env.model_dump_json().encode(), False


async def _poisoned_config_report(store: Store) -> tuple[str, bytes, bool]:
    async with store.engine.begin() as conn:
        await conn.execute(
            device_configs.insert().values(
                key="qp/kiosk-9", version=3, body="{}", issuer="test", issued_at=datetime.now(UTC), state="desired"
            )
        )
    report = ConfigReport(version=3, errors=[f"{POISON}: heartbeat_s too small"])
    env = envelope("kiosk-9", 2, "config.rejected", report.model_dump(mode="json"))
    return topics.event("qp", "kiosk-9", "config.rejected"), env.model_dump_json().encode(), False


async def _poisoned_incident(store: Store) -> tuple[str, bytes, bool]:
    # The rule's own insert reads an integrity error as "another consumer opened it"; its timeline row does not.
    fault = Fault(component="printer", code="jam", active=True, detail=f"jammed ({POISON})")
    env = envelope("kiosk-9", 3, "kiosk.fault", fault.model_dump(mode="json"))
    return topics.event("qp", "kiosk-9", "kiosk.fault"), env.model_dump_json().encode(), False


async def _poisoned_event(store: Store) -> tuple[str, bytes, bool]:
    return punch_msg("att-9", 1, staff=POISON)


async def _poisoned_status(store: Store) -> tuple[str, bytes, bool]:
    return status_msg("att-9", POISON)


TARGETS = {
    "event": (events, "data", _poisoned_event),
    "status": (devices, "role", _poisoned_status),
    "command ack": (commands, "refusal", _poisoned_ack),
    "config report": (device_configs, "errors", _poisoned_config_report),
    "incident opened by a rule": (incident_timeline, "text", _poisoned_incident),
}


@pytest.mark.parametrize("target", list(TARGETS))
async def test_a_valid_message_the_store_refuses_is_dead_lettered_and_everyone_else_is_stored(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, target: str
) -> None:
    """GIVEN a database that refuses one valid message (what it writes breaks a constraint) WHEN it arrives in
    one batch with other devices' traffic THEN the others are stored, it is in dead_letters as store_rejected
    with the database's message and its raw bytes, and the consumer keeps ingesting."""
    table, column, make = TARGETS[target]
    store = consumer.store
    poison = await make(store)
    await refuse(store.engine, table, column)
    good = [punch_msg(f"att-{n}", 1) for n in range(1, 6)]
    publish(mosquitto.port, [*good[:2], poison, *good[2:], status_msg("att-1", "attendance")])

    await wait_for(lambda: _n(store, events, events.c.device.like("att-_")), 20, "the other devices' punches")
    await wait_for(lambda: _n(store, dead_letters, dead_letters.c.reason == "store_rejected"), 20, "the dead letter")
    assert await _count_where(store, events, events.c.device.like("att-_")) == 5
    [dead] = await store.fetch(sa.select(dead_letters).where(dead_letters.c.reason == "store_rejected"))
    assert dead.topic == poison[0]
    assert dead.raw == poison[1]
    assert POISON in dead.detail or "refuse_" in dead.detail, dead.detail
    assert await store.scalar(sa.select(devices.c.role).where(devices.c.key == "qp/att-1")) == "attendance"
    assert consumer.consumer.counters.store_rejected == 1
    assert not consumer.task.done()

    publish(mosquitto.port, [punch_msg("att-7", 1)])  # and it keeps going
    await wait_for(lambda: _n(store, events, events.c.device == "att-7"), 20, "a later punch")


async def test_a_rule_that_raises_on_one_message_costs_only_that_message(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a database error at all: a bug in a rule, raised inside the ingest transaction for one device."""
    stage = consumer.consumer.rules
    assert stage is not None
    rules = stage.rules
    original = rules.apply_batch

    async def apply_batch(conn: Any, signals: Any, transitions: Any, levels: Any) -> Any:
        if any(s.device == "kiosk-bug" for s in signals):
            raise KeyError("a rule bug")
        return await original(conn, signals, transitions, levels)

    monkeypatch.setattr(rules, "apply_batch", apply_batch)
    fault = Fault(component="printer", code="jam", active=True)
    bad = envelope("kiosk-bug", 1, "kiosk.fault", fault.model_dump(mode="json"))
    good = [punch_msg(f"att-{n}", 1) for n in range(1, 4)]
    publish(
        mosquitto.port,
        [good[0], (topics.event("qp", "kiosk-bug", "kiosk.fault"), bad.model_dump_json().encode(), False), *good[1:]],
    )

    store = consumer.store
    await wait_for(lambda: _n(store, dead_letters, dead_letters.c.reason == "store_rejected"), 20, "the dead letter")
    await wait_for(lambda: _n(store, events, events.c.device.like("att-_"), 3), 20, "the punches")
    [dead] = await store.fetch(sa.select(dead_letters))
    assert "KeyError" in dead.detail
    assert json.loads(dead.raw)["id"] == bad.id


async def _n(store: Store, table: sa.Table, where: Any, at_least: int = 1) -> bool:
    return await _count_where(store, table, where) >= at_least


async def _count_where(store: Store, table: sa.Table, where: Any) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(table).where(where)))


async def _count(store: Store, table: sa.Table) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(table)))
