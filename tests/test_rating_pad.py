"""The 好差评 rating pad: its state machine on an injected clock, the keypad decoder on real
``evdev.InputEvent`` objects (this kernel has no input devices: the SimulatedKeypad twin writes them),
the queue system's HTTP endpoint over a real socket, and the pad end to end through the real agent,
Mosquitto and consumer: ratings taken while the broker is down arrive exactly once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from evdev import InputEvent, ecodes
from pydantic import ValidationError

from agent.agent import Agent
from agent.commands.registry import CommandFailed, NoArgs
from agent.config import AgentConfig, OutboxConfig
from agent.roles.rating import (
    NOT_YET,
    THANKS,
    Outcome,
    RatingConfig,
    RatingPad,
    RatingRole,
    Screen,
    ServiceCall,
)
from broker.commands import centre_link, command_row, issue_command
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import events
from drivers.keypad import (
    EvdevKeypadConfig,
    KeyAction,
    KeypadDecoder,
    KeypadError,
    KeypadReader,
    KeyPress,
    SimulatedKeypad,
    SimulatedKeypadConfig,
)
from protocol.events import RatingPadState, RatingSubmitted
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.procs import wait_for

K = ecodes
# A pad with a numeric keypad under its overlay, 非常满意 on the right, and two staff keys on top.
KEYS: dict[str, KeyAction] = {
    "KEY_KP1": "rate_1", "KEY_KP2": "rate_2", "KEY_KP3": "rate_3", "KEY_KP4": "rate_4", "KEY_KP5": "rate_5",
    "KEY_F1": "pause", "KEY_F2": "resume", "KEY_F3": "please_wait", "KEY_F4": "service_start",
    "KEY_F5": "service_end",
}  # fmt: skip


class Clock:
    """The pad's monotonic clock, moved by the test."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def pad_config(**extra: Any) -> RatingConfig:
    return RatingConfig.model_validate({"window": "W03", "keypad": {"type": "sim", "keys": KEYS}, **extra})


def new_pad(**extra: Any) -> tuple[RatingPad, Clock]:
    clock, ids = Clock(), iter(range(1, 100))
    pad = RatingPad(pad_config(**extra), clock, new_service_id=lambda: f"local-{next(ids)}")
    pad.boot()
    return pad, clock


def trace(outcomes: list[Outcome]) -> list[str]:
    """Events as short strings: a state change as ``state:service``, a rating as ``rating level state service``."""
    out = []
    for o in outcomes:
        for _, payload in o.events:
            if isinstance(payload, RatingPadState):
                out.append(payload.state + (f":{payload.service_id}" if payload.service_id else ""))
            else:
                assert isinstance(payload, RatingSubmitted)
                out.append(f"rating {payload.level} {payload.pad_state} {payload.service_id}")
    return out


def drive(pad: RatingPad, clock: Clock, script: str) -> list[Outcome]:
    """``start A017 S0002 | end | rate 5 | key pause | pause | resume | wait | +3 (advance and tick)``."""
    outcomes = []
    for step in (s.split() for s in script.split("|") if s.strip()):
        verb, args = step[0], step[1:]
        if verb.startswith("+"):
            clock.t += float(verb[1:])
            outcomes.append(pad.tick(link_up=True))
        elif verb == "start":
            outcomes.append(pad.service_start(*args))
        elif verb == "end":
            outcomes.append(pad.service_end(*args))
        elif verb == "rate":
            outcomes.append(pad.rate(int(args[0])))
        elif verb == "key":
            outcomes.append(pad.staff_key(args[0]))
        else:
            outcomes.append({"pause": pad.pause, "resume": pad.resume, "wait": pad.please_wait}[verb]())
    return outcomes


# -- the state machine -------------------------------------------------------------------------------
TRANSITIONS = [
    ("a queue service is rated once after it ends", "start A017 S0002 | +30 | end | +3 | rate 5",
     ["serving:A017", "awaiting:A017", "rating 5 awaiting A017", "idle"], "idle"),
    ("a prompt nobody answers goes back to idle after await_s", "start A017 | end | +59 | +1",
     ["serving:A017", "awaiting:A017", "idle"], "idle"),
    ("the staff's end key alone invites a rating for a local service", "key service_end | rate 4",
     ["awaiting:local-1", "rating 4 awaiting local-1", "idle"], "idle"),
    ("staff start and end keys", "key service_start | key service_end | rate 3",
     ["serving:local-1", "awaiting:local-1", "rating 3 awaiting local-1", "idle"], "idle"),
    ("pause mid-service keeps the service as evidence; resume goes to idle", "start A017 | pause | resume",
     ["serving:A017", "paused:A017", "idle"], "idle"),
    ("pausing a prompt drops it: no timeout later", "start A017 | end | key pause | key resume | +120",
     ["serving:A017", "awaiting:A017", "paused:A017", "idle"], "idle"),
    ("please_wait goes back to the service it interrupted", "start A017 | wait | resume",
     ["serving:A017", "please_wait:A017", "serving:A017"], "serving"),
    ("please_wait ends by itself after please_wait_s", "start A017 | wait | +299 | +1",
     ["serving:A017", "please_wait:A017", "serving:A017"], "serving"),
    ("please_wait over a prompt, then the end key rates the same service", "start A017 | end | wait | end | rate 2",
     ["serving:A017", "awaiting:A017", "please_wait:A017", "awaiting:A017", "rating 2 awaiting A017", "idle"], "idle"),
    ("a paused pad cannot invite a rating", "pause | end A018", ["paused"], "paused"),
    ("calling the next ticket ends a pause", "pause | start A018", ["paused", "serving:A018"], "serving"),
    ("the queue retrying a start changes nothing", "start A017 | start A017", ["serving:A017"], "serving"),
    ("the queue retrying an end changes nothing", "start A017 | end | end A017", ["serving:A017", "awaiting:A017"],
     "awaiting"),
    ("resume when not paused changes nothing", "resume", [], "idle"),
    ("please_wait does not cover a pause", "pause | wait", ["paused"], "paused"),
    ("a new ticket before the rating leaves the old one unrated", "start A017 | end | start A018",
     ["serving:A017", "awaiting:A017", "serving:A018"], "serving"),
]  # fmt: skip


@pytest.mark.parametrize(("script", "expected", "final"), [t[1:] for t in TRANSITIONS], ids=[t[0] for t in TRANSITIONS])
def test_pad_transitions(script: str, expected: list[str], final: str) -> None:
    pad, clock = new_pad()
    assert trace(drive(pad, clock, script)) == expected
    assert pad.state == final


def test_the_pad_boots_idle_and_says_so_with_the_configured_staff() -> None:
    pad = RatingPad(pad_config(staff_id="S0009"), Clock())
    ((event_type, payload),) = pad.boot().events
    assert event_type == "rating.pad_state"
    assert payload == RatingPadState(window="W03", state="idle", staff_id="S0009")


def test_a_rating_carries_staff_service_and_the_delay_from_the_end() -> None:
    pad, clock = new_pad(staff_id="S0009")
    outcomes = drive(pad, clock, "start A017 S0002 | +40 | end | +7 | rate 5")
    rating = outcomes[-1].events[0][1]
    assert rating == RatingSubmitted(
        window="W03", staff_id="S0002", service_id="A017", level=5, delay_s=7.0, pad_state="awaiting"
    )
    assert outcomes[-1].screen is not None and outcomes[-1].screen.text == THANKS
    assert (pad.ratings, pad.odd_ratings) == (1, 0)
    assert pad.staff_id == "S0002", "the queue's staff stays until another is named"


def test_a_rating_without_any_known_staff_is_sent_as_unknown() -> None:
    pad, clock = new_pad()
    rating = drive(pad, clock, "key service_end | rate 3")[-1].events[0][1]
    assert isinstance(rating, RatingSubmitted) and rating.staff_id == "unknown"


@pytest.mark.parametrize(
    ("setup", "state", "screen"),
    [
        ("", "idle", THANKS),
        ("start A017", "serving", NOT_YET),
        ("key pause", "paused", "暂停服务"),
        ("key please_wait", "please_wait", "请稍后"),
    ],
)
def test_a_rating_key_outside_awaiting_is_sent_with_that_state_and_no_service(
    setup: str, state: str, screen: str
) -> None:
    pad, clock = new_pad()
    drive(pad, clock, setup)
    clock.t += 2
    outcome = pad.rate(1)
    ((event_type, rating),) = outcome.events
    assert event_type == "rating.submitted" and isinstance(rating, RatingSubmitted)
    assert (rating.pad_state, rating.service_id, rating.level) == (state, None, 1)
    assert rating.since_staff_key_s == (2.0 if setup.startswith("key") else None)
    assert outcome.screen is not None and outcome.screen.text == screen
    assert pad.state == state, "an odd press changes nothing"
    assert pad.odd_ratings == 1


def test_a_late_rating_after_the_timeout_keeps_its_delay_for_the_centre_to_judge() -> None:
    pad, clock = new_pad()
    outcomes = drive(pad, clock, "start A017 | end | +60 | +5 | rate 4")
    rating = outcomes[-1].events[0][1]
    assert isinstance(rating, RatingSubmitted)
    assert (rating.pad_state, rating.service_id, rating.delay_s) == ("idle", None, 65.0)
    assert pad.timeouts == 1


def test_one_rating_per_service_a_second_press_is_ignored_and_counted() -> None:
    pad, clock = new_pad()
    outcomes = drive(pad, clock, "start A017 | end | rate 5 | +0.5 | rate 1 | +3 | rate 5")
    assert trace(outcomes) == ["serving:A017", "awaiting:A017", "rating 5 awaiting A017", "idle"]
    assert pad.second_presses == 2
    assert outcomes[-1].ignored is not None
    assert outcomes[-1].screen is not None and outcomes[-1].screen.text == THANKS


def test_after_second_press_s_a_press_is_an_odd_rating_again() -> None:
    pad, clock = new_pad()
    outcomes = drive(pad, clock, "start A017 | end | rate 5 | +10 | rate 1")
    assert trace(outcomes)[-1] == "rating 1 idle None"
    assert pad.second_presses == 0


def test_the_next_service_is_rated_again() -> None:
    pad, clock = new_pad()
    outcomes = drive(pad, clock, "start A017 | end | rate 5 | start A018 | end | rate 2")
    assert [t for t in trace(outcomes) if t.startswith("rating")] == [
        "rating 5 awaiting A017",
        "rating 2 awaiting A018",
    ]


def test_offline_is_a_screen_mark_after_offline_after_s_and_ratings_stay_valid() -> None:
    pad, clock = new_pad(offline_after_s=5)
    drive(pad, clock, "start A017 | end")
    assert pad.tick(link_up=False).screen is None
    clock.t += 4
    assert [pad.tick(link_up=False).screen, pad.tick(link_up=True).screen, pad.tick(link_up=False).screen] == [
        None,
        None,
        None,
    ], "a reconnect of a moment is not shown"
    clock.t += 5
    shown = pad.tick(link_up=False)
    assert shown.screen == Screen("请评价", "awaiting", offline=True)
    assert shown.events == (), "no pad_state: the centre knows the outage from the agent's status"
    rated = pad.rate(5)
    assert trace([rated]) == ["rating 5 awaiting A017", "idle"], "offline is not the service state"
    assert rated.screen == Screen(THANKS, "idle", offline=True)
    back = pad.tick(link_up=True)
    assert back == Outcome(screen=Screen("欢迎", "idle", offline=False))


def test_an_outage_during_a_pause_leaves_the_pause_unbroken() -> None:
    """The centre's pause clock (G9) ends at any state that is not a pause: an outage must not send one."""
    pad, clock = new_pad(offline_after_s=1)
    outcomes = drive(pad, clock, "key pause")
    for _ in range(5):
        clock.t += 1
        outcomes.append(pad.tick(link_up=False))
    outcomes.append(pad.tick(link_up=True))
    assert trace(outcomes) == ["paused"]
    assert [o.screen.offline for o in outcomes[1:] if o.screen] == [True, False]


def test_due_in_names_the_next_timeout_or_link_change_and_none_when_only_an_input_can_change_the_pad() -> None:
    """The role sleeps until ``due_in`` (no tick on a timer): each due time is when ``tick`` first does something."""
    pad, clock = new_pad(offline_after_s=5, await_s=60, please_wait_s=300)
    assert pad.due_in(link_up=True) is None, "idle and connected: nothing to time out"
    drive(pad, clock, "start A017")
    assert pad.due_in(link_up=True) is None, "serving has no timeout"
    drive(pad, clock, "end")
    clock.t += 20
    assert pad.due_in(link_up=True) == 40
    clock.t += 39.5
    assert pad.tick(link_up=True) == Outcome(), "not yet"
    clock.t += 0.5
    assert pad.due_in(link_up=True) == 0
    assert trace([pad.tick(link_up=True)]) == ["idle"], "the prompt timed out when due"
    drive(pad, clock, "wait")
    assert pad.due_in(link_up=True) == 300
    assert pad.due_in(link_up=False) == 0, "the link just went: start counting its outage now"
    pad.tick(link_up=False)
    clock.t += 2
    assert pad.due_in(link_up=False) == 3
    clock.t += 3
    assert pad.tick(link_up=False).screen == Screen("请稍后", "please_wait", offline=True)
    assert pad.due_in(link_up=False) == 295, "marked: only 请稍后's own timeout is left"
    assert pad.due_in(link_up=True) == 0, "back up: clear the mark now"
    pad.tick(link_up=True)
    assert pad.due_in(link_up=True) == 295


# -- the keypad --------------------------------------------------------------------------------------
class Keys:
    """Key events written by hand, independent of the driver; ``at`` in seconds."""

    def __init__(self) -> None:
        self.events: list[InputEvent] = []

    def ev(self, at: float, code: int, value: int, type_: int = K.EV_KEY) -> Keys:
        sec, usec = divmod(round((1_741_000_000 + at) * 1_000_000), 1_000_000)
        self.events.append(InputEvent(sec, usec, type_, code, value))
        self.events.append(InputEvent(sec, usec, K.EV_SYN, K.SYN_REPORT, 0))
        return self

    def tap(self, at: float, code: int) -> Keys:
        return self.ev(at, code, 4, K.EV_MSC).ev(at, code, 1).ev(at + 0.005, code, 0)


def decode(events: list[InputEvent], decoder: KeypadDecoder | None = None) -> list[str]:
    decoder = decoder or KeypadDecoder(KEYS)
    return [p.action for e in events if (p := decoder.feed(e)) is not None]


def test_keys_map_to_their_actions_and_scan_sync_and_key_up_are_skipped() -> None:
    keys = Keys().tap(0, K.KEY_KP5).tap(1, K.KEY_F1).tap(2, K.KEY_KP1).tap(3, K.KEY_F5)
    assert decode(keys.events) == ["rate_5", "pause", "rate_1", "service_end"]


def test_keys_not_in_the_map_are_skipped_and_counted() -> None:
    decoder = KeypadDecoder(KEYS)
    assert decode(Keys().tap(0, K.KEY_A).tap(1, K.KEY_KP3).events, decoder) == ["rate_3"]
    assert decoder.unknown == 1


def test_a_bounce_20_ms_after_a_press_is_the_same_press() -> None:
    decoder = KeypadDecoder(KEYS, debounce_ms=150)
    assert decode(Keys().tap(0, K.KEY_KP5).tap(0.020, K.KEY_KP5).tap(0.500, K.KEY_KP5).events, decoder) == [
        "rate_5",
        "rate_5",
    ]
    assert decoder.bounced == 1


def test_debounce_is_per_key_and_measured_from_the_press_that_counted() -> None:
    decoder = KeypadDecoder(KEYS, debounce_ms=150)
    keys = Keys().tap(0, K.KEY_KP5).tap(0.020, K.KEY_KP1)  # two keys: both count
    keys.tap(0.100, K.KEY_KP5).tap(0.149, K.KEY_KP5).tap(0.151, K.KEY_KP5)  # chatter does not extend the window
    assert decode(keys.events, decoder) == ["rate_5", "rate_1", "rate_5"]
    assert decoder.bounced == 2


def test_a_clock_stepped_back_is_not_taken_for_a_bounce() -> None:
    assert decode(Keys().tap(10, K.KEY_KP5).tap(9.99, K.KEY_KP5).events) == ["rate_5", "rate_5"]


def test_autorepeat_of_a_held_key_is_ignored_and_counted() -> None:
    decoder = KeypadDecoder(KEYS)
    keys = Keys().ev(0, K.KEY_KP1, 1)
    for n in range(20):
        keys.ev(0.25 + n * 0.033, K.KEY_KP1, 2)
    keys.ev(1.0, K.KEY_KP1, 0)
    assert decode(keys.events, decoder) == ["rate_1"]
    assert decoder.repeats == 20


async def collect(reader: KeypadReader) -> list[KeyPress]:
    async with aclosing(reader.presses()) as presses:
        return [p async for p in presses]


def sim_reader(sim: SimulatedKeypad, debounce_ms: int = 150) -> KeypadReader:
    return KeypadReader(SimulatedKeypadConfig(keys=KEYS, debounce_ms=debounce_ms), sim.events)


async def test_the_simulated_keypad_sends_what_a_keypad_sends() -> None:
    wall = Clock(1_741_000_000.0)
    sim = SimulatedKeypad(clock=wall)
    sim.press("KEY_KP4", hold_s=0.1, repeats=2)
    sim.close()
    events = [e async for e in sim.events()]
    assert [(e.type, e.code, e.value) for e in events if e.type == K.EV_KEY] == [
        (K.EV_KEY, K.KEY_KP4, 1),
        (K.EV_KEY, K.KEY_KP4, 2),
        (K.EV_KEY, K.KEY_KP4, 2),
        (K.EV_KEY, K.KEY_KP4, 0),
    ]
    assert events[0].type == K.EV_MSC and sum(e.type == K.EV_SYN for e in events) == 4
    stamps = [e.timestamp() - wall.t for e in events if e.type == K.EV_KEY]
    assert stamps == pytest.approx([0, 0.25, 0.283, 0.283])


async def test_keypad_presses_reach_the_pad_as_one_rating_per_service() -> None:
    """Through the twin, reader and decoder: a bounce 20 ms later is one press; a press 500 ms after the
    rating reaches the pad and is ignored there as a second rating; a held key is one press."""
    wall = Clock(1_741_000_000.0)
    sim = SimulatedKeypad(clock=wall)
    sim.press("KEY_F5", hold_s=0.01)
    wall.t += 1.0
    sim.press("KEY_KP5", hold_s=0.01)
    wall.t += 0.020
    sim.press("KEY_KP5", hold_s=0.01)
    wall.t += 0.480
    sim.press("KEY_KP5", hold_s=0.01)
    wall.t += 0.5
    sim.press("KEY_KP1", hold_s=1.0, repeats=20)
    sim.close()
    reader = sim_reader(sim)
    presses = await collect(reader)
    assert [p.action for p in presses] == ["service_end", "rate_5", "rate_5", "rate_1"]
    assert (reader.decoder.bounced, reader.decoder.repeats) == (1, 20)

    pad, clock = new_pad()
    outcomes = []
    for p in presses:
        clock.t = p.ts  # the pad's clock follows the keys
        outcomes.append(pad.rate(p.level) if p.level else pad.staff_key(p.action))
    assert trace(outcomes) == ["awaiting:local-1", "rating 5 awaiting local-1", "idle"]
    assert pad.second_presses == 2
    rating = outcomes[1].events[0][1]
    assert isinstance(rating, RatingSubmitted)
    assert rating.delay_s == pytest.approx(1.0) and rating.since_staff_key_s == pytest.approx(1.0)


async def test_an_unplugged_keypad_is_reopened_and_presses_go_on() -> None:
    sim = SimulatedKeypad()
    sim.press("KEY_KP5")
    sim.unplug()
    sim.press("KEY_KP5")  # right after the replug: a new press, not a bounce
    sim.close()
    reader = sim_reader(sim, debounce_ms=2000)
    assert [p.action for p in await collect(reader)] == ["rate_5", "rate_5"]
    assert reader.outages == 1


async def test_a_missing_keypad_is_an_outage_retried_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real evdev path: this machine has no input devices, so the by-id link is never there."""
    device = str(tmp_path / "by-id" / "usb-Pad-event-kbd")
    cfg = EvdevKeypadConfig(device=device, keys=KEYS, reopen_initial_s=0.01, reopen_max_s=0.02)
    reader = KeypadReader(cfg)
    with caplog.at_level(logging.WARNING, logger="drivers.keypad"):
        task = asyncio.create_task(collect(reader))
        await asyncio.sleep(0.3)  # about 15 attempts
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (reader.outages, reader.connected) == (1, False)
    assert len(caplog.records) == 1 and "is gone" in caplog.records[0].message


async def test_a_path_that_is_not_an_input_device_fails_loudly(tmp_path: Path) -> None:
    not_input = tmp_path / "event0"
    not_input.write_text("")
    with pytest.raises(KeypadError, match="not an input event device"):
        await collect(KeypadReader(EvdevKeypadConfig(device=str(not_input), keys=KEYS)))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"KEY_NOPE": "rate_5", "KEY_1": "rate_1"}, "not an evdev key name"),
        ({"KEY_1": "rate_5", "KEY_2": "rate_5"}, "at least two rating levels"),
        ({"KEY_1": "rate_6", "KEY_2": "rate_5"}, "rate_1"),
    ],
)
def test_keypad_config_refuses_unknown_keys_and_a_scale_of_one(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SimulatedKeypadConfig.model_validate({"keys": keys})


def test_a_pad_with_neither_queue_nor_end_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="never invites a rating"):
        RatingConfig.model_validate({"window": "W03", "keypad": {"type": "sim"}})
    RatingConfig.model_validate({"window": "W03", "keypad": {"type": "sim"}, "queue": {}})


def test_role_rating_needs_its_section(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"role 'rating' needs a \[rating\] section"):
        AgentConfig(site="qp", device="pad-w03", role="rating", outbox=OutboxConfig(path=tmp_path / "o.db"))


# -- the queue system's HTTP endpoint -----------------------------------------------------------------
def agent_config(tmp_path: Path, port: int = 1883, device: str = "pad-w03", **rating: Any) -> AgentConfig:
    return AgentConfig(
        site="qp",
        device=device,
        role="rating",
        heartbeat_s=60,
        mqtt=MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.1, backoff_max_s=0.5),
        outbox=OutboxConfig(path=tmp_path / f"{device}.db"),
        clock_sync_file=Path("/"),
        rating=pad_config(queue={"port": 0, "read_timeout_s": 1}, **rating),
    )


def role(agent: Agent) -> RatingRole:
    assert agent.rating is not None
    return agent.rating


async def http(port: int, raw: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def post(port: int, body: Any, path: str = "/service") -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: pad\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return await http(port, head.encode() + data)


@pytest.fixture
async def pad_agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """The agent's rating role with its outbox open and its queue endpoint listening; no broker."""
    agent = Agent(agent_config(tmp_path))
    async with agent.outbox:
        r = role(agent)
        assert r.queue is not None
        task = asyncio.create_task(r.queue.serve())
        await wait_for(lambda: r.queue is not None and r.queue.port is not None, 5, "the queue endpoint")
        yield agent
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def port_of(agent: Agent) -> int:
    queue = role(agent).queue
    assert queue is not None and queue.port is not None
    return queue.port


async def outbox_events(agent: Agent) -> list[tuple[str, dict[str, Any]]]:
    rows = await agent.outbox.fetch(-1, 1000)
    return [(json.loads(r.body)["type"], json.loads(r.body)["data"]) for r in rows]


async def test_the_queue_system_starts_and_ends_services_over_http(pad_agent: Agent) -> None:
    port = port_of(pad_agent)
    status, body = await post(port, {"action": "start", "service_id": "A017", "staff_id": "S0002", "window": "W03"})
    assert (status, body) == (200, {"ok": True, "state": "serving", "service_id": "A017", "ignored": None})
    status, body = await post(port, {"action": "end", "service_id": "A017"})
    assert (status, body["state"]) == (200, "awaiting")
    status, body = await post(port, {"action": "end", "service_id": "A017"})
    assert status == 200 and body["ignored"] == "this service already awaits its rating"
    states = [(d["state"], d["service_id"], d["staff_id"]) for t, d in await outbox_events(pad_agent)]
    assert states == [("serving", "A017", "S0002"), ("awaiting", "A017", "S0002")]
    assert role(pad_agent).output.shown[-1].text == "请评价"


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b'{"action": "start", "service_id": ', 400, "Invalid JSON"),
        (b'{"action": "finish"}', 400, "action"),
        (b'{"action": "start", "ticket": "A017"}', 400, "ticket"),
        (b'{"action": "start", "window": "W04"}', 400, "window W03, not W04"),
        (b'{"action": "start", "service_id": ""}', 400, "service_id"),
    ],
    ids=["bad-json", "unknown-action", "unknown-field", "another-window", "empty-id"],
)
async def test_a_bad_service_call_is_400_with_its_reason_and_changes_nothing(
    pad_agent: Agent, raw: bytes, status: int, reason: str
) -> None:
    got, body = await post(port_of(pad_agent), raw)
    assert (got, body["ok"]) == (status, False)
    assert reason in body["reason"]
    assert role(pad_agent).pad.state == "idle"
    assert await outbox_events(pad_agent) == []


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"GET /service HTTP/1.1\r\nHost: pad\r\n\r\n", 405, "POST"),
        (b"POST /call HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 404, "/service"),
        (b"POST /service HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413, "at most 16384"),
        (b"POST /service HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "Content-Length"),
        (b"HELLO\r\n\r\n", 400, "request line"),
        (b"POST /service HTTP/1.1\r\nContent-Length: 40\r\n\r\n{", 408, "within 1.0 s"),
    ],
    ids=["get", "wrong-path", "too-large", "chunked", "not-http", "body-never-comes"],
)
async def test_a_request_the_endpoint_cannot_take_gets_the_status_that_says_why(
    pad_agent: Agent, raw: bytes, status: int, reason: str
) -> None:
    got, body = await http(port_of(pad_agent), raw)
    assert (got, body["ok"]) == (status, False)
    assert reason in body["reason"]
    queue = role(pad_agent).queue
    assert queue is not None and queue.refused == 1


async def test_the_centres_commands_end_a_service_pause_and_refuse_another_window(pad_agent: Agent) -> None:
    r = role(pad_agent)
    names = pad_agent.commands.registry.names()
    assert {"rating_pause", "rating_resume", "rating_service"} <= set(names)
    spec = pad_agent.commands.registry.get("rating_service")
    assert spec is not None
    assert (await spec.handler(ServiceCall(action="end", service_id="A020")))["state"] == "awaiting"
    pause = pad_agent.commands.registry.get("rating_pause")
    assert pause is not None
    assert (await pause.handler(NoArgs()))["state"] == "paused"
    with pytest.raises(CommandFailed, match="window W03"):
        await spec.handler(ServiceCall(action="start", window="W09"))
    assert r.output.shown[-1].text == "暂停服务"


# -- end to end --------------------------------------------------------------------------------------
@pytest.fixture
async def centre(mosquitto: LocalMosquitto) -> AsyncIterator[AsyncMqtt]:
    client = AsyncMqtt(centre_link(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test"))
    await client.connect()
    yield client
    await client.disconnect()


async def stored(consumer: RunningConsumer, event_type: str) -> list[dict[str, Any]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data).where(events.c.type == event_type).order_by(events.c.seq)
    )
    return [json.loads(r.data) for r in rows]


async def test_an_idle_connected_pad_never_ticks_and_wakes_for_its_prompts_timeout(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """The old role ticked four times a second whatever the pad did (the fleet simulator's largest CPU share)."""
    agent: Agent = running(agent_config(tmp_path, mosquitto.port, await_s=0.5))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the pad to connect")
    r = role(agent)
    await wait_for(lambda: r.queue is not None and r.queue.port is not None, 5, "the queue endpoint")
    ticks: list[str] = []
    real_tick = r.pad.tick

    def counting(link_up: bool) -> Outcome:
        ticks.append(r.pad.state)
        return real_tick(link_up)

    r.pad.tick = counting  # type: ignore[method-assign]
    await asyncio.sleep(1.5)
    assert ticks == [], "an idle, connected pad woke up"

    await post(port_of(agent), {"action": "start", "service_id": "A017"})
    await post(port_of(agent), {"action": "end", "service_id": "A017"})
    await wait_for(lambda: r.pad.state == "idle", 5, "the prompt to time out")
    assert r.pad.timeouts == 1
    assert 1 <= len(ticks) <= 3, ticks


async def test_ratings_taken_while_the_broker_is_down_arrive_exactly_once(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(agent_config(tmp_path, mosquitto.port, offline_after_s=1.0))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the pad to connect")
    r = role(agent)
    await wait_for(lambda: r.queue is not None and r.queue.port is not None, 5, "the queue endpoint")
    sim, port = r.keypad_sim, port_of(agent)
    assert sim is not None
    await post(port, {"action": "start", "service_id": "A017", "staff_id": "S0002"})
    await post(port, {"action": "end", "service_id": "A017"})

    mosquitto.kill()  # the hall's network is down; the queue system on the same PC still talks to the pad
    await wait_for(lambda: r.output.shown and r.output.shown[-1].offline, 10, "离线 on the pad")
    sim.press("KEY_KP5")
    await asyncio.sleep(0.5)
    sim.press("KEY_KP5")  # pressed again to be sure: still one rating
    await post(port, {"action": "start", "service_id": "A018"})
    await post(port, {"action": "end", "service_id": "A018"})
    sim.press("KEY_KP2")
    sim.press("KEY_F1")  # 暂停服务 ...
    await asyncio.sleep(0.3)
    sim.press("KEY_KP1")  # ... and a rating key pressed while paused
    await wait_for(lambda: r.pad.odd_ratings == 1, 10, "the press while paused")
    assert (r.pad.ratings, r.pad.second_presses) == (2, 1)

    mosquitto.restart()

    async def all_stored() -> bool:
        return len(await stored(consumer, "rating.submitted")) >= 3

    await wait_for(all_stored, 30, "the offline ratings in the store")
    await asyncio.sleep(1.0)  # any duplicate would land now
    ratings = await stored(consumer, "rating.submitted")
    assert [(x["level"], x["pad_state"], x["service_id"], x["staff_id"]) for x in ratings] == [
        (5, "awaiting", "A017", "S0002"),
        (2, "awaiting", "A018", "S0002"),
        (1, "paused", None, "S0002"),
    ]
    assert ratings[0]["since_staff_key_s"] is None
    assert 0.2 < ratings[2]["since_staff_key_s"] < 5, "the pause key just before: proxy-rating evidence"
    states = [x["state"] for x in await stored(consumer, "rating.pad_state")]
    assert states == ["idle", "serving", "awaiting", "idle", "serving", "awaiting", "idle", "paused"]


async def test_the_centre_pauses_and_resumes_the_pad_by_command(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, centre: AsyncMqtt, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(agent_config(tmp_path, mosquitto.port))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the pad to connect")

    async def run(name: str, args: dict[str, Any] | None = None) -> Any:
        cmd = await issue_command(consumer.store, centre, "qp/pad-w03", name, args, issuer="wm", reason="窗口暂停")

        async def done() -> bool:
            row = await command_row(consumer.store, cmd.id)
            return row is not None and row.state in ("succeeded", "failed", "rejected")

        await wait_for(done, 20, f"{name} to finish")
        return await command_row(consumer.store, cmd.id)

    assert (await run("rating_pause")).state == "succeeded"
    assert role(agent).output.shown[-1].text == "暂停服务"
    row = await run("rating_service", {"action": "start", "service_id": "A030", "staff_id": "S0004"})
    assert (row.state, json.loads(row.result)["state"]) == ("succeeded", "serving")
    assert (await run("rating_service", {"action": "start", "window": "W07"})).state == "failed"
    resumed = await run("rating_resume")
    assert (resumed.state, json.loads(resumed.result)["ignored"]) == ("succeeded", "not paused (serving)")

    async def states_stored() -> bool:
        return [x["state"] for x in await stored(consumer, "rating.pad_state")] == ["idle", "paused", "serving"]

    await wait_for(states_stored, 10, "idle, paused, serving in the store")
