"""The attendance terminal end to end: fingerprint and QR punches through the real agent, broker and
consumer; offline punches arrive once; gallery updates from the centre; revocation with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.commands.registry import Registry
from agent.config import AgentConfig, OutboxConfig
from agent.device import DeviceContext
from agent.gallery import GalleryConfig
from agent.roles.attendance import AttendanceConfig, AttendanceRole, Feedback, FingerEnrol
from agent.sqlite import Database
from agent.state import StateStore
from broker import gallery
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import commands, devices, events, incidents, staff_consents
from drivers.fingerprint.protocol import Instruction
from drivers.qr.validators import staff_map_line
from protocol.gallery import key_to_text, new_key
from runtime.clock import SystemClock
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.procs import wait_for

SALT = b"hall-salt-2026"


def qr_settings(tmp_path: Path) -> dict[str, Any]:
    """A Shanghai 随申码 scanner twin and its validator, S0002's personal id in the staff map."""
    (tmp_path / "salt").write_bytes(SALT)
    (tmp_path / "staff.map").write_text(staff_map_line(SALT, "310101199001011234", "S0002") + "\n")
    return {
        "qr": {"type": "sim"},
        "qr_validator": {
            "type": "pattern",
            "region": "shanghai",
            "pattern": r"SSM1:(?P<id>\d{17}[\dX]):(?P<ts>\d{10})",
            "staff_map": str(tmp_path / "staff.map"),
            "salt_file": str(tmp_path / "salt"),
        },
    }


def terminal_config(mosquitto: LocalMosquitto, tmp_path: Path, device: str = "att-1", **extra: Any) -> AgentConfig:
    extra.setdefault("repeat_s", 60)
    key = tmp_path / "keys" / f"qp.{device}.key"
    key.parent.mkdir(exist_ok=True)
    key.write_text(key_to_text(new_key()))
    return AgentConfig(
        site="qp",
        device=device,
        role="attendance",
        heartbeat_s=60,
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=0.5),
        outbox=OutboxConfig(path=tmp_path / f"{device}.db"),
        clock_sync_file=Path("/"),
        attendance=AttendanceConfig.model_validate(
            {
                "fingerprint": {"type": "sim"},
                **qr_settings(tmp_path),
                "gallery": GalleryConfig(path=tmp_path / f"{device}.gallery", key_file=key),
                "fingerprint_poll_s": 0.05,
                **extra,
            }
        ),
    )


def role(agent: Agent) -> AttendanceRole:
    assert agent.attendance is not None
    return agent.attendance


async def stored(consumer: RunningConsumer, event_type: str) -> list[dict[str, Any]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data).where(events.c.type == event_type).order_by(events.c.seq)
    )
    return [json.loads(r.data) for r in rows]


async def consented(store: Any, staff_id: str, site: str = "qp") -> None:
    """The consent `hallfleet provision staff` records first: the gallery refuses a face without one."""
    now = SystemClock().now()
    async with store.engine.begin() as conn:
        await conn.execute(
            staff_consents.insert().values(
                site=site, staff_id=staff_id, purpose=gallery.CONSENT_PURPOSE, given_at=now, recorded_at=now,
                recorded_by="wm", evidence="同意书",
            )
        )  # fmt: skip


async def enrol_finger(agent: Agent, staff: str, finger: str) -> None:
    r = role(agent)
    assert r.finger_sim is not None
    asked = r.output.expect(asks_for_the_first_press)  # pressed when the screen asks, as a person does
    task = asyncio.create_task(r._cmd_finger_enrol(FingerEnrol(staff_id=staff)))
    await asyncio.wait_for(asked, 10)
    r.finger_sim.press(finger, 2)
    page = (await asyncio.wait_for(task, 30))["page"]
    assert r.finger_sim.library[page] == finger


def qr(personal_id: str = "310101199001011234", age_s: float = 0) -> str:
    return f"SSM1:{personal_id}:{int(time.time() - age_s)}"


async def test_punches_taken_while_the_broker_is_down_arrive_exactly_once(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(terminal_config(mosquitto, tmp_path))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the terminal to connect")
    r = role(agent)
    await enrol_finger(agent, "S0001", "zhang-right-index")
    await wait_for(lambda: r.qr_sim is not None, 5, "the QR scanner")
    assert r.finger_sim is not None and r.qr_sim is not None

    mosquitto.kill()  # the hall's network is down
    await wait_for(lambda: not agent.link.connected.is_set(), 10, "the terminal to notice")
    r.finger_sim.press("zhang-right-index", 1)
    await wait_for(lambda: any(f.staff_id == "S0001" and f.ok for f in r.output.shown), 10, "the fingerprint punch")
    r.finger_sim.press("zhang-right-index", 1)  # pressed again to be sure: the same punch
    r.qr_sim.type(qr())
    r.qr_sim.type(qr(age_s=600))  # a screenshot of an old code
    r.qr_sim.type(qr("110101198001010000"))  # someone else's code: not a member of staff here
    await wait_for(lambda: sum(1 for f in r.output.shown if not f.ok) >= 2, 10, "the refusals")
    await asyncio.sleep(1.5)
    assert agent.outbox.depth >= 4

    mosquitto.restart()

    async def all_stored() -> bool:
        return (
            len(await stored(consumer, "attendance.punch")) >= 2
            and len(await stored(consumer, "attendance.punch_rejected")) >= 2
        )

    await wait_for(all_stored, 30, "the offline punches in the store")
    await asyncio.sleep(1.0)  # any duplicate would land now
    punches = await stored(consumer, "attendance.punch")
    assert sorted((p["staff_id"], p["method"], p["offline"]) for p in punches) == [
        ("S0001", "fingerprint", True),
        ("S0002", "qr", True),
    ]
    assert next(p for p in punches if p["method"] == "fingerprint")["score"] > 0
    rejected = await stored(consumer, "attendance.punch_rejected")
    assert sorted(x["reason"] for x in rejected) == ["expired", "unknown_staff"]
    wire = json.dumps(punches + rejected)
    assert "310101199001011234" not in wire and "SSM1" not in wire, "no personal id or raw code in events"


async def test_the_centre_sends_the_gallery_and_a_revoked_person_no_longer_punches(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(terminal_config(mosquitto, tmp_path))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the terminal to connect")
    await enrol_finger(agent, "S0001", "zhang-right-index")
    store, now = consumer.store, SystemClock().now()
    rng = np.random.default_rng(1)
    for staff in ("S0001", "S0003"):
        await consented(store, staff)
        await gallery.enrol(store, "qp", staff, list(rng.normal(0, 0.1, (2, 128))), by="wm", at=now)
    cfg = gallery.GalleryCentreConfig(keys_dir=tmp_path / "keys", revoke_within_h=24)

    async def reconcile_until(version: int) -> None:
        async def holds() -> bool:
            await consumer.consumer.send_commands(await gallery.reconcile(store, cfg, SystemClock().now()))
            async with store.engine.connect() as conn:
                return (await gallery.held_versions(conn, "qp")).get("att-1") == version

        await wait_for(holds, 20, f"the terminal to hold version {version}")

    await reconcile_until(2)
    assert sorted(role(agent).held.entries) == ["S0001", "S0003"]

    await gallery.revoke(store, "qp", "S0001", by="wm", at=now, within=timedelta(hours=24), reason="调离")
    await reconcile_until(3)
    updates = await store.fetch(
        sa.select(commands.c.args).where(commands.c.name == "gallery_update").order_by(commands.c.issued_at)
    )
    assert len(updates) == 2, "one update per version: none sent again while the terminal's report is on its way"
    update = updates[-1]
    assert json.loads(update.args)["base_version"] == 2, "a delta, not the whole gallery"
    assert "S0001" not in update.args, "staff ids travel sealed too"
    assert sorted(role(agent).held.entries) == ["S0003"]

    r = role(agent)
    assert r.finger_sim is not None
    r.finger_sim.press("zhang-right-index", 1)  # the fingerprint template went with the revocation
    await asyncio.sleep(1.0)
    punches = await stored(consumer, "attendance.punch")
    assert [p for p in punches if p["staff_id"] == "S0001"] == []
    assert not [f for f in r.output.shown if f.ok and f.staff_id == "S0001"]


async def test_a_terminal_still_holding_a_revoked_person_past_the_deadline_is_an_incident(
    consumer: RunningConsumer, tmp_path: Path
) -> None:
    """att-9 is switched off: it reported version 1 once and never took the revocation."""
    store, now = consumer.store, SystemClock().now()
    async with store.engine.begin() as conn:
        await conn.execute(
            devices.insert().values(
                key="qp/att-9", site="qp", device="att-9", role="attendance", presence="offline", first_seen=now
            )
        )
        await conn.execute(
            events.insert().values(
                site="qp", device="att-9", id="e1", type="attendance.gallery", seq=1, boot_id="b", ts=now,
                clock_synced=True, replayed=False, received_at=now, data=json.dumps({"version": 1, "staff": 1}),
            )
        )  # fmt: skip
    await consented(store, "S0001")
    await gallery.enrol(store, "qp", "S0001", [np.zeros(128), np.ones(128) * 0.1], by="wm", at=now)
    await gallery.revoke(store, "qp", "S0001", by="wm", at=now, within=timedelta(hours=24), reason="离职")
    cfg = gallery.GalleryCentreConfig(keys_dir=tmp_path)
    assert consumer.consumer.rules is not None
    rules = consumer.consumer.rules.rules  # the consumer's own incident rules, handed over explicitly
    await gallery.reconcile(store, cfg, now + timedelta(hours=23), rules)
    assert await store.fetch(sa.select(incidents)) == []
    await gallery.reconcile(store, cfg, now + timedelta(hours=25), rules)
    (incident,) = await store.fetch(sa.select(incidents))
    assert (incident.key, incident.kind, incident.state) == ("qp/att-9", "gallery.revocation_overdue", "open")


async def test_a_face_punch_from_the_camera_and_no_match_once_revoked(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """Real photos: enrolled at the centre from obama.jpg and obama2.jpg, recognised on a video of
    obama3.jpg; after the revocation reaches the terminal the same face is refused as unknown."""
    from drivers.face.gallery import encode_image
    from tests.support.faces import camera_noise, framed, photo, write_video

    rng = np.random.default_rng(3)
    frames = [camera_noise(framed("obama3"), rng) for _ in range(10)]
    video = write_video(tmp_path / "entrance.avi", frames, fps=10)
    cfg = terminal_config(
        mosquitto,
        tmp_path,
        camera={"source": str(video), "fps": 10, "loop": True},
        face={"liveness": "off", "cooldown_s": 0},
        repeat_s=3600,
        reject_repeat_s=0,
    )
    agent: Agent = running(cfg)
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the terminal to connect")
    store, now = consumer.store, SystemClock().now()
    shots = [encode_image(np.asarray(photo(name)))[0] for name in ("obama", "obama2")]
    await consented(store, "S0100")
    await gallery.enrol(store, "qp", "S0100", shots, by="wm", at=now)
    keys = gallery.GalleryCentreConfig(keys_dir=tmp_path / "keys")

    async def holds(version: int) -> bool:
        await consumer.consumer.send_commands(await gallery.reconcile(store, keys, SystemClock().now()))
        async with store.engine.connect() as conn:
            return (await gallery.held_versions(conn, "qp")).get("att-1") == version

    await wait_for(lambda: holds(1), 30, "the terminal to hold the gallery")
    await wait_for(lambda: stored(consumer, "attendance.punch"), 60, "a face punch in the store")
    punches = await stored(consumer, "attendance.punch")
    assert [(p["staff_id"], p["method"]) for p in punches] == [("S0100", "face")]
    assert 0.5 < punches[0]["score"] < 0.7, "1 - distance: the same person is 0.33-0.43 away"

    await gallery.revoke(
        store, "qp", "S0100", by="wm", at=SystemClock().now(), within=timedelta(hours=1), reason="调离"
    )
    await wait_for(lambda: holds(2), 30, "the revocation on the terminal")
    r = role(agent)
    refused = len([f for f in r.output.shown if not f.ok])
    await wait_for(lambda: len([f for f in r.output.shown if not f.ok]) > refused + 2, 30, "refusals after revocation")
    assert [p["staff_id"] for p in await stored(consumer, "attendance.punch")] == ["S0100"]


def test_the_agent_loads_without_opencv_or_dlib_until_a_camera_is_used() -> None:
    """Kiosks and rating pads need not install the face extra: importing the agent (and an attendance
    config without a camera) must not pull in OpenCV, dlib or face_recognition."""
    import subprocess
    import sys

    code = (
        "import sys, agent.agent, agent.roles.attendance\n"
        "heavy = [m for m in ('cv2', 'dlib', 'face_recognition') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- enrolment against the fingerprint twin: the role alone, its reader thread and the module's library ------------
@contextlib.asynccontextmanager
async def finger_terminal(tmp_path: Path, **extra: Any) -> AsyncIterator[tuple[AttendanceRole, list[tuple[str, Any]]]]:
    """A fingerprint terminal role on the twin (and whatever ``extra`` configures), its state in a real SQLite file,
    its events recorded, its loops running. Repeats are not collapsed: what bounds the events is the role's own."""
    db = Database(tmp_path / "state.db")
    await db.open()
    state = StateStore(db)
    await state.prepare()
    sent: list[tuple[str, Any]] = []

    async def emit(event_type: str, payload: Any, counter: str | None = None) -> Any:
        sent.append((event_type, payload))

    device = DeviceContext("qp", "att-1", "b", SystemClock(), state, emit, None, lambda: True, lambda: True)  # type: ignore[arg-type]
    settings = {"fingerprint": {"type": "sim"}, "fingerprint_poll_s": 0.01, "repeat_s": 0, "reject_repeat_s": 0}
    r = AttendanceRole(device, AttendanceConfig.model_validate(settings | extra))
    assert r.finger is not None
    r.finger.poll_s = 0.01  # the reader's own polls while it waits for a press or a lift
    loop = asyncio.create_task(r.run())
    try:
        yield r, sent
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await db.close()


@pytest.fixture
async def finger_role(tmp_path: Path) -> AsyncIterator[tuple[AttendanceRole, list[tuple[str, Any]]]]:
    """A fingerprint-only terminal (finger_terminal), its finger loop running."""
    async with finger_terminal(tmp_path) as terminal:
        yield terminal


def asks_for_the_first_press(fb: Feedback) -> bool:
    return fb.prompt and fb.text == "请按压手指 (登记)"


def refusals(sent: list[tuple[str, Any]]) -> list[str]:
    return [f"{p.reason}: {p.detail}" for t, p in sent if t == "attendance.punch_rejected"]


async def test_a_finger_placed_as_soon_as_its_enrolment_is_acked_punches_every_time(
    finger_role: tuple[AttendanceRole, list[tuple[str, Any]]],
) -> None:
    """GIVEN a terminal whose finger loop scans all the time WHEN person after person is enrolled (pressing when
    the screen asks) and places the finger the moment the command acks THEN each is a punch, never a refusal."""
    r, sent = finger_role
    sim = r.finger_sim
    assert sim is not None
    for i in range(25):
        staff, finger = f"S{i:04d}", f"p{i}-right-index"
        asked = r.output.expect(asks_for_the_first_press)
        enrol = asyncio.create_task(r._cmd_finger_enrol(FingerEnrol(staff_id=staff)))
        await asyncio.wait_for(asked, 10)
        sim.press(finger, 2)
        page = (await asyncio.wait_for(enrol, 10))["page"]
        assert sim.library[page] == finger
        punched = r.output.expect(lambda fb, s=staff: fb.ok and fb.staff_id == s)  # type: ignore[misc]
        sim.press(finger, 1)
        await asyncio.wait_for(punched, 10)
    assert refusals(sent) == []
    assert sim.library == {p: f"p{int(s[1:])}-right-index" for p, s in r._fingers.items()}


async def test_an_enrolment_cut_off_by_its_timeout_leaves_no_template_behind(
    finger_role: tuple[AttendanceRole, list[tuple[str, Any]]],
) -> None:
    """GIVEN enrolments cut off by the command's timeout at every point (before any press, after the first,
    around the second) WHEN the person then places the finger at once THEN the module holds only mapped templates,
    no punch is refused as "page N is not mapped", and an enrolment sent again works."""
    r, sent = finger_role
    sim = r.finger_sim
    assert sim is not None
    for i, cut_s in enumerate([0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3] * 2):
        staff, finger = f"S{i:04d}", f"p{i}-right-index"
        asked = r.output.expect(asks_for_the_first_press)
        enrol = asyncio.create_task(r._cmd_finger_enrol(FingerEnrol(staff_id=staff)))
        await asyncio.wait_for(asked, 10)
        sim.press(finger, 2)
        try:
            await asyncio.wait_for(asyncio.shield(enrol), cut_s)  # the command runner's wait_for, cut short
        except TimeoutError:
            enrol.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await enrol
        searched = sim.commands.count(Instruction.SEARCH)
        sim.press(finger, 1)  # at once: an enrolment still running behind the cancel would take this press
        await wait_for(
            lambda n=searched: sim.commands.count(Instruction.SEARCH) > n,
            10,
            "the scan to read the press (not an enrolment left running)",
        )
        assert set(sim.library) <= set(r._fingers), f"cut at {cut_s}s: {sim.library} vs {r._fingers}"
        assert not [x for x in refusals(sent) if "not mapped" in x], cut_s
    asked = r.output.expect(asks_for_the_first_press)
    enrol = asyncio.create_task(r._cmd_finger_enrol(FingerEnrol(staff_id="S9999")))
    await asyncio.wait_for(asked, 10)
    sim.press("again-right-index", 2)
    page = (await asyncio.wait_for(enrol, 10))["page"]
    assert sim.library[page] == "again-right-index" and r._fingers[page] == "S9999"


class LateReads(StateStore):
    """The state store on a busy SQLite thread: a read issued before ``release`` answers only after it (or a
    second), with what the file held when it ran, as a read queued ahead of a write does."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.release = asyncio.Event()

    async def kv_get(self, key: str) -> str | None:
        value = await super().kv_get(key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), 1)
        return value


async def test_an_enrolment_sent_while_the_terminal_starts_keeps_its_page(tmp_path: Path) -> None:
    """GIVEN a terminal starting (its saved state still loading from a busy SQLite thread) WHEN the fingerprint_enrol
    command runs at once for one person, then for another, each pressing when the screen asks THEN both mappings
    are kept, on two pages, and each finger punches (the load used to land after the first enrolment and wipe its
    mapping: the second took the same page, and the first person's finger matched nothing, silently)."""
    db = Database(tmp_path / "state.db")
    await db.open()
    state = LateReads(db)
    await state.prepare()
    sent: list[tuple[str, Any]] = []

    async def emit(event_type: str, payload: Any, counter: str | None = None) -> Any:
        sent.append((event_type, payload))

    device = DeviceContext("qp", "att-1", "b", SystemClock(), state, emit, None, lambda: True, lambda: True)  # type: ignore[arg-type]
    r = AttendanceRole(device, AttendanceConfig.model_validate({"fingerprint": {"type": "sim"}, "repeat_s": 0}))
    assert r.finger is not None and r.finger_sim is not None
    r.finger.poll_s = 0.01
    registry = Registry()
    r.register_commands(registry)
    spec = registry.get("fingerprint_enrol")
    assert spec is not None
    running = asyncio.create_task(r.run())  # the command runner starts beside the role, as in Agent._run
    try:
        pages = []
        for staff in ("S0001", "S0004"):
            asked = r.output.expect(asks_for_the_first_press)
            enrol = asyncio.ensure_future(spec.handler(FingerEnrol(staff_id=staff)))
            await asyncio.wait_for(asked, 10)
            r.finger_sim.press(f"{staff}-right-index", 2)
            pages.append((await asyncio.wait_for(enrol, 10))["page"])
            state.release.set()
        assert len(set(pages)) == 2, pages
        assert json.loads(await StateStore.kv_get(state, "attendance.fingers") or "{}") == {
            str(p): s for p, s in zip(pages, ("S0001", "S0004"), strict=True)
        }
        for staff in ("S0001", "S0004"):
            punched = r.output.expect(lambda fb, s=staff: fb.ok and fb.staff_id == s)  # type: ignore[misc]
            r.finger_sim.press(f"{staff}-right-index", 1)
            await asyncio.wait_for(punched, 5)
        assert [p.staff_id for t, p in sent if t == "attendance.punch"] == ["S0001", "S0004"]
        assert refusals(sent) == []
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await db.close()


# -- a finger that matches no template: told on the screen, one refusal per press -------------------------------------
def refused_feedback(r: AttendanceRole) -> list[Feedback]:
    return [fb for fb in r.output.shown if not fb.ok and not fb.prompt]


async def test_a_finger_matching_no_template_is_told_and_refused_once_per_press(tmp_path: Path) -> None:
    """GIVEN a terminal with a finger sensor and a 随申码 scanner WHEN a finger nobody enrolled presses, is lifted and
    presses again THEN each press is answered on the screen, pointing to the 随申码 (with its English line), and is
    one attendance.punch_rejected (fingerprint, unknown) that carries the reason and nothing of the finger."""
    async with finger_terminal(tmp_path, **qr_settings(tmp_path)) as (r, sent):
        assert r.finger_sim is not None
        r.finger_sim.presses("mallory-right-index", "mallory-right-index")  # one GenImg sees each step

        await wait_for(lambda: len(refusals(sent)) >= 2, 10, "a refusal of each press")
        await asyncio.sleep(0.2)  # any extra refusal would land now

    rejected = [p for t, p in sent if t == "attendance.punch_rejected"]
    assert [(p.method, p.reason, p.staff_id) for p in rejected] == [("fingerprint", "unknown", None)] * 2
    assert {p.detail for p in rejected} == {"the module found no matching template"}
    assert not [t for t, _ in sent if t == "attendance.punch"]
    assert "mallory" not in json.dumps([p.model_dump(mode="json") for p in rejected]), "nothing of the finger"
    told = refused_feedback(r)
    assert [(fb.text, fb.text_en, fb.staff_id) for fb in told] == [
        ("未识别，请重试或使用随申码", "Not recognised: try again or use your Suishenma QR code", None)
    ] * 2


async def test_a_finger_held_on_the_sensor_is_one_refusal_until_it_is_lifted(
    finger_role: tuple[AttendanceRole, list[tuple[str, Any]]],
) -> None:
    """GIVEN a fingerprint-only terminal (no QR scanner to point to) that does not collapse repeated refusals WHEN
    a finger nobody enrolled rests on the sensor through thirty more scans THEN the screen says so once and one
    refusal is sent; lifted and placed again, it is a new press and a second refusal."""
    r, sent = finger_role
    sim = r.finger_sim
    assert sim is not None
    sim.place("mallory-right-index")
    await wait_for(lambda: bool(refusals(sent)), 10, "the refusal")
    scans = sim.commands.count(Instruction.GEN_IMG)
    await wait_for(lambda: sim.commands.count(Instruction.GEN_IMG) >= scans + 30, 10, "thirty more scans")

    assert refusals(sent) == ["unknown: the module found no matching template"]
    assert [fb.text for fb in refused_feedback(r)] == ["未识别, 请重试或换用其他方式"]

    sim.lift()
    lifted = sim.commands.count(Instruction.GEN_IMG)
    await wait_for(lambda: sim.commands.count(Instruction.GEN_IMG) >= lifted + 2, 10, "a scan of the empty sensor")
    sim.place("mallory-right-index")
    await wait_for(lambda: len(refusals(sent)) >= 2, 10, "the second press's refusal")
    assert len(refusals(sent)) == 2


async def test_an_enrolled_finger_is_punched_even_before_a_refused_one_was_seen_lifted(
    finger_role: tuple[AttendanceRole, list[tuple[str, Any]]],
) -> None:
    """GIVEN a stranger's finger refused and still on the sensor WHEN an enrolled person's finger takes its place
    before any scan saw the sensor empty (the next in the queue pressing at once) THEN that press is punched: only
    refusals wait for the lift, so no enrolled press is swallowed as "the same finger"."""
    r, sent = finger_role
    sim = r.finger_sim
    assert sim is not None
    asked = r.output.expect(asks_for_the_first_press)
    enrol = asyncio.create_task(r._cmd_finger_enrol(FingerEnrol(staff_id="S0001")))
    await asyncio.wait_for(asked, 10)
    sim.press("zhang-right-index", 2)
    await asyncio.wait_for(enrol, 10)

    sim.place("mallory-right-index")
    await wait_for(lambda: bool(refusals(sent)), 10, "the stranger's refusal")
    punched = r.output.expect(lambda fb: fb.ok and fb.staff_id == "S0001")
    sim.place("zhang-right-index")
    await asyncio.wait_for(punched, 10)

    assert [p.staff_id for t, p in sent if t == "attendance.punch"] == ["S0001"]
    assert refusals(sent) == ["unknown: the module found no matching template"]


async def test_an_idle_terminal_only_asks_whether_a_finger_is_there_and_a_press_is_still_answered_within_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a fingerprint terminal at the default 0.3 s poll that nobody touches WHEN 1.5 s pass THEN its sensor was
    sent only GenImg, about once per poll, and no scan ran (no features, no search, no thread-pool hop per poll:
    issue 20's idle CPU); WHEN a finger is then placed THEN it is answered within about one poll."""
    async with finger_terminal(tmp_path, fingerprint_poll_s=0.3) as (r, _sent):
        assert r.finger is not None and r.finger_sim is not None
        reader, sim = r.finger, r.finger_sim
        scans = 0
        scan = reader.scan

        def counted() -> Any:
            nonlocal scans
            scans += 1
            return scan()

        monkeypatch.setattr(reader, "scan", counted)
        started = time.monotonic()
        await asyncio.sleep(1.5)
        polls = (time.monotonic() - started) / 0.3  # the sleep may overrun on a busy machine
        asked = [c for c in sim.commands if c not in (Instruction.VFY_PWD, Instruction.READ_SYS_PARA)]
        assert set(asked) == {Instruction.GEN_IMG}
        assert 4 <= len(asked) <= polls + 2
        assert scans == 0

        told = r.output.expect(lambda fb: not fb.ok)
        placed = asyncio.get_running_loop().time()
        sim.place("mallory-right-index")
        await asyncio.wait_for(told, 5)
        assert asyncio.get_running_loop().time() - placed < 0.6
        assert scans == 1
