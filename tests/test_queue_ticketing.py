"""Queue ticketing (排队叫号) as a device kind: the simulated queue system serves its records over a real socket,
the real HTTP driver reads them, the agent's queue role turns them into events through its outbox, and a real
Mosquitto and consumer store them; the rating pad is bound by the queue system to the same ticket numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from agent.config import AgentConfig, OutboxConfig
from agent.device import DeviceContext
from agent.roles.queue import CURSOR_KEY, QueueRole, QueueRoleConfig, Scope, event_of
from agent.roles.rating import RatingConfig
from agent.sqlite import Database
from agent.state import StateStore
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import events
from drivers.queue import BadRecord, HttpQueueConfig, HttpQueueSystem, QueueRecord, QueueSystemError, SimQueueSystem
from drivers.queue.http import parse_page
from protocol.events import REGISTRY
from protocol.queueing import TicketIssued
from runtime.clock import SystemClock
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.procs import wait_for

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def record(no: int, step: str, **extra: Any) -> QueueRecord:
    return QueueRecord.model_validate({"no": no, "step": step, "ticket": "A017", "service": "A", "at": T0, **extra})


# -- the contract ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ticket", ["13800138000", "310101199001011234", "张三", "a017", "A 017", "ABCDE1", ""])
def test_a_ticket_number_cannot_carry_a_phone_an_id_or_a_name(ticket: str) -> None:
    with pytest.raises(ValidationError, match="ticket"):
        TicketIssued(ticket=ticket, service="A", at=T0)


def test_every_queue_step_is_a_critical_event_in_the_registry() -> None:
    names = {n for n in REGISTRY if n.startswith("queue.")}
    assert names == {f"queue.ticket_{s}" for s in ("issued", "called", "served", "transferred", "abandoned")}
    assert {REGISTRY[n].lane for n in names} == {"critical"}


def test_a_step_time_without_an_offset_is_refused() -> None:
    with pytest.raises(ValidationError, match="offset"):
        TicketIssued(ticket="A017", service="A", at=datetime(2026, 11, 23, 9, 0))


# -- the role's pure parts -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "rec", "takes"),
    [
        (Scope("dispenser", "d1", frozenset()), record(1, "issued", dispenser="d1"), True),
        (Scope("dispenser", "d1", frozenset()), record(1, "issued", dispenser="d2"), False),
        (Scope("dispenser", "*", frozenset()), record(1, "issued"), True),
        (Scope("dispenser", "d1", frozenset()), record(1, "called", window="03"), False),
        (Scope("display", "x", frozenset({"03"})), record(1, "called", window="03"), True),
        (Scope("display", "x", frozenset({"03"})), record(1, "called", window="04"), False),
        (Scope("display", "x", frozenset({"03"})), record(1, "abandoned", reason="cancelled"), False),
        # No window can claim these: the dispensers report them, or a hall of per-window displays never would.
        (Scope("dispenser", "d1", frozenset()), record(1, "abandoned", reason="cancelled"), True),
        (Scope("dispenser", "*", frozenset()), record(1, "abandoned", reason="day_closed"), True),
        (Scope("dispenser", "d1", frozenset()), record(1, "abandoned", reason="no_show", window="03"), False),
        (Scope("display", "x", frozenset()), record(1, "abandoned", reason="cancelled"), True),
        (Scope("display", "x", frozenset()), record(1, "issued"), False),
        (Scope("server", "x", frozenset()), record(1, "issued"), True),
    ],
)
def test_each_kind_reports_its_own_steps(scope: Scope, rec: QueueRecord, takes: bool) -> None:
    assert scope.takes(rec) is takes


@pytest.mark.parametrize(
    ("rec", "message"),
    [
        (record(1, "called"), "called step without its window"),
        (record(1, "transferred", window="03"), "to_service"),
        (record(1, "abandoned"), "reason"),
    ],
)
def test_a_record_lacking_what_its_step_needs_is_named(rec: QueueRecord, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event_of(rec)


def test_a_bad_record_is_named_by_number_and_field_never_by_its_value() -> None:
    page = {"records": [
        {"no": 5, "step": "issued", "ticket": "A001", "service": "A", "at": T0.isoformat()},
        {"no": 6, "step": "issued", "ticket": "13800138000", "service": "A", "at": T0.isoformat()},
    ]}  # fmt: skip
    got = parse_page(page, 4)
    assert isinstance(got[0], QueueRecord)
    assert isinstance(got[1], BadRecord) and got[1].no == 6 and "ticket" in got[1].error
    assert "13800138000" not in got[1].error


@pytest.mark.parametrize(
    "page",
    [{"rows": []}, [], {"records": [{"step": "issued"}]}, {"records": [{"no": 3}]}, {"records": [{"no": True}]}],
    ids=["wrong-key", "list", "no-number", "number-not-after", "bool"],
)
def test_a_page_that_cannot_be_trusted_is_an_error_not_a_skip(page: Any) -> None:
    with pytest.raises(QueueSystemError):
        parse_page(page, 3)


def test_kind_specific_fields_are_refused_on_other_kinds() -> None:
    with pytest.raises(ValidationError, match="windows are for kind"):
        QueueRoleConfig.model_validate({"kind": "dispenser", "windows": ["03"], "driver": {"type": "sim"}})
    with pytest.raises(ValidationError, match="role 'queue' needs"):
        AgentConfig(site="qp", device="q1", role="queue", outbox=OutboxConfig(path=Path("/tmp/x.db")))


# -- the twin over a real socket ----------------------------------------------------------------------
async def test_the_twin_serves_its_records_to_the_real_http_driver() -> None:
    clock = Clock()
    async with SimQueueSystem(clock, {"A": "A", "B": "B"}) as hall:
        assert hall.issue("A", dispenser="d1") == "A001"
        hall.issue("B", channel="priority")
        assert await hall.call("03", ["A", "B"]) == "B001"  # the green channel first (QP 000:351)
        system = HttpQueueSystem(HttpQueueConfig(url=hall.url))
        try:
            page = await system.records(0, 2)
            assert [(r.no, r.step, r.ticket) for r in page if isinstance(r, QueueRecord)] == [
                (1, "issued", "A001"), (2, "issued", "B001")
            ]  # fmt: skip
            rest = await system.records(2, 100)
            assert [(r.no, r.step) for r in rest if isinstance(r, QueueRecord)] == [(3, "called")]
        finally:
            await system.aclose()


@pytest.mark.parametrize(("after", "limit", "expected"), [(0, 2, [1, 2]), (2, 2, [3, 4]), (4, 9, [5]), (5, 2, []),
                                                     (9, 2, [])])  # fmt: skip
async def test_the_twin_pages_its_log_by_record_number(after: int, limit: int, expected: list[int]) -> None:
    async with SimQueueSystem(Clock(), {"A": "A"}) as hall:
        for _ in range(5):
            hall.issue("A", dispenser="d1")
        system = HttpQueueSystem(HttpQueueConfig(url=hall.url))
        assert [r.no for r in await system.records(after, limit)] == expected


class Log:
    """A queue system's log, read by page (the QueueSystem protocol)."""

    def __init__(self, log: list[QueueRecord | BadRecord]) -> None:
        self.log = log

    async def records(self, after: int, limit: int) -> list[QueueRecord | BadRecord]:
        return [r for r in self.log if r.no > after][:limit]

    async def aclose(self) -> None:
        pass


async def test_a_display_writes_its_cursor_after_each_step_it_sent_and_once_for_those_it_passed_over() -> None:
    """The rule (agent/roles/queue.py): the cursor passes a step only once the outbox took its event; a step the
    device passes over (another window's) needs no write of its own, so a page costs a write per step sent."""
    db = Database(Path(":memory:"))
    state = StateStore(db)
    await db.open()
    await state.prepare()
    sent: list[str] = []
    writes: list[str] = []

    async def emit(event_type: str, payload: Any, counter: str | None = None) -> Any:
        sent.append(f"{event_type} cursor={await state.kv_get(CURSOR_KEY)}")

    real_set = state.kv_set

    async def kv_set(key: str, value: str) -> None:
        writes.append(value)
        await real_set(key, value)

    state.kv_set = kv_set  # type: ignore[method-assign]
    device = DeviceContext("qp", "qs-03", "b", SystemClock(), state, emit, None, lambda: True, lambda: True)  # type: ignore[arg-type]
    role = QueueRole(
        device, QueueRoleConfig.model_validate({"kind": "display", "windows": ["03"], "driver": {"type": "sim"}})
    )
    page: list[QueueRecord | BadRecord] = [
        record(1, "issued"), record(2, "called", window="04"), record(3, "called", window="03"),
        record(4, "served", window="04"), BadRecord(5, "no step"), record(6, "issued"),
    ]  # fmt: skip
    assert await role.step(Log(page)) is False
    # The call was sent before the cursor passed it; the bad record's fault is told once the page is read.
    assert sent == ["queue.ticket_called cursor=None", "device.fault cursor=6"]
    assert writes == ["3", "6"]
    assert await state.kv_get(CURSOR_KEY) == "6"
    await db.close()


async def test_an_unreachable_queue_system_is_an_error_naming_it() -> None:
    system = HttpQueueSystem(HttpQueueConfig(url="http://127.0.0.1:9/api", timeout_s=1))
    try:
        with pytest.raises(QueueSystemError, match=r"127\.0\.0\.1:9"):
            await system.records(0, 10)
    finally:
        await system.aclose()


# -- end to end ---------------------------------------------------------------------------------------
def agent_cfg(tmp_path: Path, port: int, device: str, role: str, **section: Any) -> AgentConfig:
    return AgentConfig.model_validate({
        "site": "qp", "device": device, "role": role, "heartbeat_s": 60, "clock_sync_file": "/",
        "mqtt": MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.1, backoff_max_s=0.5),
        "outbox": OutboxConfig(path=tmp_path / f"{device}.db"), role: section,
    })  # fmt: skip


async def stored(consumer: RunningConsumer, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.device, events.c.type, events.c.data).where(events.c.type.like(f"{prefix}%"))
        .order_by(events.c.device, events.c.seq)
    )  # fmt: skip
    return [(r.device, r.type, json.loads(r.data)) for r in rows]


async def test_tickets_from_dispenser_and_display_are_stored_once_and_the_pad_rates_the_same_ticket(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN the hall's queue system (the twin) with a dispenser agent, a display agent for window 03 and the
    rating pad of window 03, all on a real broker WHEN tickets are issued, called, served, transferred and
    abandoned, with the broker killed in the middle THEN every step is stored once, each by its device, and the
    rating carries the ticket number the queue events carry."""
    clock = Clock()
    async with SimQueueSystem(lambda: clock.t, {"A": "A", "B": "B"}) as hall:
        driver = {"type": "http", "url": hall.url}
        dispenser = running(agent_cfg(tmp_path, mosquitto.port, "qd-1", "queue", kind="dispenser", driver=driver,
                                      poll_s=0.1))  # fmt: skip
        display = running(agent_cfg(tmp_path, mosquitto.port, "qs-03", "queue", kind="display", windows=["03"],
                                    driver=driver, poll_s=0.1))  # fmt: skip
        pad_cfg = RatingConfig.model_validate(
            {"window": "03", "keypad": {"type": "sim"}, "queue": {"port": 0}, "staff_id": "S0003"}
        )
        pad = running(agent_cfg(tmp_path, mosquitto.port, "pad-03", "rating", **pad_cfg.model_dump()))
        await wait_for(lambda: pad.rating is not None and pad.rating.queue is not None
                       and pad.rating.queue.port is not None, 10, "the pad's queue endpoint")  # fmt: skip
        assert pad.rating is not None and pad.rating.queue is not None and pad.rating.keypad_sim is not None
        hall.pads["03"] = f"http://127.0.0.1:{pad.rating.queue.port}/service"

        hall.issue("A", dispenser="qd-1")
        hall.issue("A", dispenser="qd-1")
        hall.issue("B", dispenser="qd-other")  # another dispenser's ticket: not qd-1's to report
        clock.t += timedelta(minutes=4)
        assert await hall.call("03", ["A"]) == "A001"
        await wait_for(lambda: pad.rating is not None and pad.rating.pad.state == "serving", 10, "serving A001")
        mosquitto.kill()
        clock.t += timedelta(minutes=6)
        assert await hall.serve("03") == "A001"
        await wait_for(lambda: pad.rating is not None and pad.rating.pad.state == "awaiting", 10, "the prompt")
        pad.rating.keypad_sim.press("KEY_4")
        assert await hall.call("03", ["A"]) == "A002"
        hall.transfer("03", "B")
        hall.cancel("A002")
        await wait_for(lambda: display.queue is not None and display.queue.taken >= 4, 10, "the display's steps")
        mosquitto.restart()

        async def arrived() -> bool:
            return len(await stored(consumer, "queue.")) >= 7 and len(await stored(consumer, "rating.submitted")) >= 1

        await wait_for(arrived, 30, "every step in the store")
        steps = await stored(consumer, "queue.")
        assert [(d, t.removeprefix("queue.ticket_"), x["ticket"], x.get("window")) for d, t, x in steps] == [
            ("qd-1", "issued", "A001", None),
            ("qd-1", "issued", "A002", None),
            ("qd-1", "abandoned", "A002", None),  # cancelled in B's queue: no window's, the dispenser's to tell
            ("qs-03", "called", "A001", "03"),
            ("qs-03", "served", "A001", "03"),
            ("qs-03", "called", "A002", "03"),
            ("qs-03", "transferred", "A002", "03"),
        ]
        assert datetime.fromisoformat(steps[4][2]["at"]) - datetime.fromisoformat(steps[3][2]["at"]) == timedelta(
            minutes=6
        ), "the queue system's own stamps, not the agent's reading times"
        (rating,) = [x for _, _, x in await stored(consumer, "rating.submitted")]
        assert (rating["service_id"], rating["window"], rating["level"]) == ("A001", "03", 4)
        assert display.queue is not None and display.queue.skipped >= 3  # the issues and the cancel: not its
        assert dispenser.queue is not None and dispenser.queue.skipped >= 1
