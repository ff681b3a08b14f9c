"""The 好差评 rating pad at a window: the citizen rates each completed item (NS 003:101), the pad shows
暂停服务 / 请稍后 when the staff step away (QP 000:99), and staff may not rate for the citizen (SJ 001:1033).

Every rating is a ``rating.submitted`` event committed to the outbox before the pad says 谢谢您的评价,
so a rating taken while the hall's network is down reaches the centre exactly once later. Every change
of what the pad is doing is a ``rating.pad_state`` (the centre measures pauses from them, G9).

Decisions:
- One rating per completed service: the rating ends ``awaiting``; further rating presses within
  ``second_press_s`` are the same citizen pressing again, ignored and counted (``second_presses``).
- A rating key pressed when no service awaits a rating (idle, serving, paused, please_wait) is not
  dropped: it goes out with ``pad_state`` = that state and no ``service_id``, so the centre can flag a
  possible proxy rating (with ``since_staff_key_s``) or accept a late one (``delay_s``, from the last
  service end, e.g. after the ``await_s`` prompt timed out). The device never judges; it keeps evidence.
- Offline is a mark on the screen, not a service state: after ``offline_after_s`` without the link the
  pad shows 离线 beside whatever it shows, and keeps taking ratings (their ``pad_state`` is the service
  state, so an offline rating is as valid as any). No ``rating.pad_state`` "offline" is sent: it would
  reach the centre only after the link is back, which knows the outage already from the agent's status
  and Will, and the centre's pause clock (G9) ends at any state that is not a pause, so an outage in
  the middle of 暂停服务 would hide the pause.
- The staff id comes from the queue system (it names who called the ticket) and stays until another
  is named; before that the configured ``staff_id``, else ``unknown``. A service started by a staff
  key has a local id (``local-<uuid7>``), so the centre still counts one rating per service.
- Levels are 1-5 (G8): a pad with fewer keys maps them onto the scale (好/中/差 -> 5/3/1); 差评 is the
  centre's derived class.

The queue system (排队叫号) reaches the pad over HTTP on the loopback (``QueueServer``: POST /service
with JSON ``{"action": "start", "service_id": "A017", "staff_id": "S0001"}``), the centre through the
``rating_service`` / ``rating_pause`` / ``rating_resume`` commands. Without either the pad works on its
own staff keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from agent.commands.registry import CommandFailed, CommandSpec, NoArgs, Registry
from agent.device import DeviceContext
from agent.outbox import OutboxFull
from agent.tasks import first_of
from config.base import Section
from drivers.http1 import HttpError, read_request, write_json
from drivers.keypad import KeypadConfig, KeypadReader, SimulatedKeypad, SimulatedKeypadConfig
from protocol.envelope import Frozen
from protocol.events import PadState, RatingPadState, RatingSubmitted
from protocol.ids import uuid7
from runtime.clock import real_seconds

log = logging.getLogger(__name__)

UNKNOWN_STAFF = "unknown"
SHOWN: dict[PadState, str] = {
    "idle": "欢迎", "serving": "正在为您办理", "awaiting": "请评价", "paused": "暂停服务", "please_wait": "请稍后"
}  # fmt: skip
OFFLINE_MARK = "离线"
THANKS = "谢谢您的评价"
NOT_YET = "请在办结后评价"


class QueueAdapterConfig(Section):
    host: str = Field(default="127.0.0.1", description="Listen address: the loopback unless the queue PC is another")
    port: int = Field(default=8731, ge=0, le=65535, description="TCP port (0: any free port, for tests)")
    max_body: int = Field(default=16_384, ge=256, le=1_048_576, description="Larger request bodies get 413")
    read_timeout_s: float = Field(default=5.0, gt=0, le=60, description="A request not read within this gets 408")


class RatingConfig(Section):
    window: str = Field(min_length=1, max_length=32, description="The window this pad faces, as the queue names it")
    staff_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Who serves here until the queue system names someone"
    )
    keypad: KeypadConfig = Field(description="The HID keypad (evdev) or 'sim', and its key map")
    queue: QueueAdapterConfig | None = Field(default=None, description="HTTP endpoint for the queue system")
    await_s: float = Field(default=60, gt=0, le=3600, description="After a service ends, a rating is awaited this long")
    second_press_s: float = Field(
        default=10, ge=0, le=600, description="Rating presses this soon after a rating are the same citizen again"
    )
    please_wait_s: float = Field(default=300, gt=0, le=3600, description="请稍后 lasts at most this long")
    offline_after_s: float = Field(default=5, ge=0, le=600, description="离线 is shown once the link is down this long")
    tick_s: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="Unused: the pad wakes at each timeout and link change; kept so configs that set it still load",
    )

    @model_validator(mode="after")
    def _can_invite(self) -> RatingConfig:
        if self.queue is None and "service_end" not in self.keypad.keys.values():
            raise ValueError("queue or a service_end key: without either the pad never invites a rating")
        return self


ServiceAction = Literal["start", "end", "pause", "resume", "please_wait"]
STAFF_CALLS: dict[str, ServiceAction] = {
    "service_start": "start", "service_end": "end", "pause": "pause", "resume": "resume", "please_wait": "please_wait"
}  # fmt: skip


class ServiceCall(Frozen):
    """What the queue system or the centre says happened at the window."""

    action: ServiceAction
    service_id: str | None = Field(default=None, min_length=1, max_length=64, description="Ticket or 办件编号")
    staff_id: str | None = Field(default=None, min_length=1, max_length=64, description="Pseudonymous staff id")
    window: str | None = Field(default=None, min_length=1, max_length=32, description="If given, must be this pad's")


@dataclass(frozen=True, slots=True)
class Screen:
    """What the pad shows: a text, and the 离线 mark while the agent's link is down."""

    text: str
    state: PadState
    offline: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One input's result: events to emit in order, then what to show; ``ignored`` says why nothing changed."""

    events: tuple[tuple[str, Frozen], ...] = ()
    screen: Screen | None = None
    ignored: str | None = None


def _merge(outcomes: Iterable[Outcome]) -> Outcome:
    events: list[tuple[str, Frozen]] = []
    screen = None
    for o in outcomes:
        events += o.events
        screen = o.screen or screen
    return Outcome(tuple(events), screen)


def local_service_id() -> str:
    return f"local-{uuid7()}"


class RatingPad:
    """The pad's state machine. Pure: no I/O, time from the injected monotonic clock ``now``.

    idle -start-> serving -end-> awaiting -rating-> idle (or -await_s-> idle without one); pause from
    any state, resume -> idle; please_wait from idle/serving/awaiting, back to where it was on resume
    or after please_wait_s. Counters: ratings, odd_ratings, second_presses, timeouts, ignored.
    """

    def __init__(
        self, cfg: RatingConfig, now: Callable[[], float], new_service_id: Callable[[], str] = local_service_id
    ) -> None:
        self.cfg = cfg
        self.now = now
        self.new_service_id = new_service_id
        self.state: PadState = "idle"
        self.staff_id = cfg.staff_id
        self.service_id: str | None = None
        self.offline = False
        self.ratings = self.odd_ratings = self.second_presses = self.timeouts = self.ignored = 0
        self._entered_at = now()
        self._ended_at: float | None = None  # the last service end
        self._rated_at: float | None = None
        self._staff_key_at: float | None = None
        self._before: tuple[PadState, str | None] = ("idle", None)  # what please_wait interrupted
        self._down_since: float | None = None
        self._reported: tuple[PadState, str | None, str | None] | None = None  # the last rating.pad_state

    # -- inputs ------------------------------------------------------------------------------------
    def boot(self) -> Outcome:
        """The pad starts idle, and says so: a pause before a restart ends with it."""
        return self._go("idle", None)

    def service_start(self, service_id: str | None = None, staff_id: str | None = None) -> Outcome:
        """Calling a ticket means someone serves: accepted in every state, also ending a pause. The
        same ticket again changes nothing (the queue system retries)."""
        self.staff_id = staff_id or self.staff_id
        self._rated_at = None
        return self._go("serving", service_id or self.new_service_id())

    def service_end(self, service_id: str | None = None, staff_id: str | None = None) -> Outcome:
        """Invite the rating. From idle it binds a new service (pads without a queue system: the staff
        press 评价 when done); a paused pad cannot invite one."""
        if self.state == "paused":
            return self._ignore("paused: resume before ending a service")
        bound = self.service_id if self.state != "idle" else None
        sid = service_id or bound or self.new_service_id()
        if self.state == "awaiting" and sid == self.service_id:
            return self._ignore("this service already awaits its rating")
        self.staff_id = staff_id or self.staff_id
        self._ended_at = self.now()
        return self._go("awaiting", sid)

    def pause(self) -> Outcome:
        if self.state == "paused":
            return self._ignore("already paused")
        return self._go("paused", self.service_id)  # the service paused mid-way is evidence (QP 000:99)

    def resume(self) -> Outcome:
        if self.state == "paused":
            return self._go("idle", None)
        if self.state == "please_wait":
            state, sid = self._before
            return self._go(state, sid)
        return self._ignore(f"not paused ({self.state})")

    def please_wait(self) -> Outcome:
        if self.state in ("paused", "please_wait"):
            return self._ignore(f"already {self.state}")
        self._before = (self.state, self.service_id)
        return self._go("please_wait", self.service_id)

    def rate(self, level: int) -> Outcome:
        now = self.now()
        if self.state == "awaiting":
            self.ratings += 1
            self._rated_at = now
            rating = self._rating(level, now, self.service_id)
            return self._go("idle", None, first=[("rating.submitted", rating)], text=THANKS)
        if self.state == "idle" and self._rated_at is not None and now - self._rated_at < self.cfg.second_press_s:
            self.second_presses += 1
            return Outcome(screen=self._screen(THANKS), ignored="one rating per service: a second press")
        self.odd_ratings += 1  # not bound to a service: the centre judges it (proxy? late?)
        text = {"idle": THANKS, "serving": NOT_YET}.get(self.state)  # paused, please_wait keep their sign
        return Outcome((("rating.submitted", self._rating(level, now, None)),), self._screen(text))

    def staff_key(self, action: str) -> Outcome:
        """A staff key on the pad: remembered, as a rating soon after one is evidence of a proxy rating."""
        self._staff_key_at = self.now()
        return self.call(ServiceCall(action=STAFF_CALLS[action]))

    def call(self, call: ServiceCall) -> Outcome:
        if call.action == "start":
            return self.service_start(call.service_id, call.staff_id)
        if call.action == "end":
            return self.service_end(call.service_id, call.staff_id)
        return {"pause": self.pause, "resume": self.resume, "please_wait": self.please_wait}[call.action]()

    def tick(self, link_up: bool) -> Outcome:
        """Timeouts (the rating prompt, 请稍后) and the link; called when ``due_in`` says, or at any time."""
        now, outcomes = self.now(), []
        if self.state == "awaiting" and self._ended_at is not None and now - self._ended_at >= self.cfg.await_s:
            self.timeouts += 1
            outcomes.append(self._go("idle", None))
        elif self.state == "please_wait" and now - self._entered_at >= self.cfg.please_wait_s:
            outcomes.append(self.resume())
        outcomes.append(self._link(link_up, now))
        return _merge(outcomes)

    def due_in(self, link_up: bool) -> float | None:
        """Seconds (of ``now``) until ``tick`` would change something, 0 if it would now; None when only an input
        or the link going up or down can (the role then sleeps until one of them, instead of ticking)."""
        # Each as ``limit - elapsed``: <= 0 exactly when tick's ``elapsed >= limit`` holds.
        now, due = self.now(), []
        if self.state == "awaiting" and self._ended_at is not None:
            due.append(self.cfg.await_s - (now - self._ended_at))
        elif self.state == "please_wait":
            due.append(self.cfg.please_wait_s - (now - self._entered_at))
        if link_up and (self._down_since is not None or self.offline):
            due.append(0.0)  # back up: clear the mark (and the outage's start) now
        elif not link_up and not self.offline:
            since = self._down_since
            due.append(0.0 if since is None else self.cfg.offline_after_s - (now - since))
        return max(0.0, min(due)) if due else None

    # -- outputs -----------------------------------------------------------------------------------
    def _go(
        self, state: PadState, service_id: str | None, first: Iterable[tuple[str, Frozen]] = (), text: str | None = None
    ) -> Outcome:
        if state != self.state:
            self._entered_at = self.now()
        self.state, self.service_id = state, service_id
        events = list(first)
        if (state, self.staff_id, service_id) != self._reported:
            self._reported = (state, self.staff_id, service_id)
            events.append(("rating.pad_state", self._pad_state()))
        return Outcome(tuple(events), self._screen(text))

    def _link(self, up: bool, now: float) -> Outcome:
        """The 离线 mark, only after ``offline_after_s``: a reconnect of a second must not flash it."""
        if up:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        down_for = 0.0 if self._down_since is None else now - self._down_since
        offline = not up and down_for >= self.cfg.offline_after_s
        if offline == self.offline:
            return Outcome()
        self.offline = offline
        return Outcome(screen=self._screen())

    def _ignore(self, why: str) -> Outcome:
        self.ignored += 1
        return Outcome(ignored=why)

    def _screen(self, text: str | None = None) -> Screen:
        return Screen(text or SHOWN[self.state], self.state, self.offline)

    def _pad_state(self) -> RatingPadState:
        return RatingPadState(
            window=self.cfg.window, state=self.state, staff_id=self.staff_id, service_id=self.service_id
        )

    def _rating(self, level: int, now: float, service_id: str | None) -> RatingSubmitted:
        return RatingSubmitted(
            window=self.cfg.window,
            staff_id=self.staff_id or UNKNOWN_STAFF,
            service_id=service_id,
            level=level,  # validated 1-5 by RatingSubmitted; the keypad maps only rate_1..rate_5
            delay_s=None if self._ended_at is None else now - self._ended_at,
            pad_state=self.state,
            since_staff_key_s=None if self._staff_key_at is None else now - self._staff_key_at,
        )


# -- the queue system's HTTP endpoint ---------------------------------------------------------------
class CallRefused(Exception):
    """A service call this pad will not take (another window's); the message says why."""


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3])


class QueueServer:
    """The 排队叫号 adapter: the queue system POSTs service calls (JSON ``ServiceCall``) to ``/service``;
    200 with the pad's state, 4xx with a reason it can log, 503 while the outbox cannot take events."""

    PATH = "/service"

    def __init__(self, cfg: QueueAdapterConfig, handle: Callable[[ServiceCall], Awaitable[dict[str, Any]]]) -> None:
        self.cfg = cfg
        self.handle = handle
        self.port: int | None = None  # the bound port, once listening
        self.requests = self.refused = 0

    async def serve(self) -> None:
        server = await asyncio.start_server(self._client, self.cfg.host, self.cfg.port)
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("queue adapter listening on http://%s:%d%s", self.cfg.host, self.port, self.PATH)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()  # the client went away: nothing to answer
            return
        await write_json(writer, status, body)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        try:
            method, path, body = await asyncio.wait_for(
                read_request(reader, self.cfg.max_body), self.cfg.read_timeout_s
            )
            if path != self.PATH:
                raise HttpError(404, f"service calls go to {self.PATH}")
            if method != "POST":
                raise HttpError(405, "POST a JSON service call")
            return 200, await self.handle(ServiceCall.model_validate_json(body))
        except HttpError as exc:
            status, reason = exc.status, exc.reason
        except TimeoutError:
            status, reason = 408, f"request not complete within {self.cfg.read_timeout_s} s"
        except ValidationError as exc:
            status, reason = 400, _reason(exc)
        except CallRefused as exc:
            status, reason = 400, str(exc)
        except OutboxFull as exc:
            status, reason = 503, f"the pad cannot store events: {exc}"
        self.refused += 1
        log.warning("queue adapter refused a request: %d %s", status, reason)
        return status, {"ok": False, "reason": reason}


# -- the role ---------------------------------------------------------------------------------------
class LogOutput:
    """The console twin of the pad's screen."""

    def __init__(self) -> None:
        self.shown: list[Screen] = []

    def show(self, screen: Screen) -> None:
        self.shown.append(screen)
        del self.shown[:-100]
        log.info("rating pad: %s%s", screen.text, f" [{OFFLINE_MARK}]" if screen.offline else "")


class RatingRole:
    def __init__(self, device: DeviceContext, cfg: RatingConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.pad = RatingPad(cfg, device.clock.monotonic)
        self.output = LogOutput()
        self.keypad_sim = SimulatedKeypad() if isinstance(cfg.keypad, SimulatedKeypadConfig) else None
        self.keypad = KeypadReader(cfg.keypad, self.keypad_sim.events if self.keypad_sim else None)
        self.queue = QueueServer(cfg.queue, self.service) if cfg.queue is not None else None
        self._lock = asyncio.Lock()  # one input at a time: events leave in the order the pad decided them
        self._input = asyncio.Event()

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("rating_pause", NoArgs, self._cmd_pause))
        registry.register(CommandSpec("rating_resume", NoArgs, self._cmd_resume))
        registry.register(CommandSpec("rating_service", ServiceCall, self._cmd_service))

    async def run(self) -> None:
        await self.apply(self.pad.boot)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._keypad_loop(), name="keypad")
            tg.create_task(self._tick_loop(), name="rating-tick")
            if self.queue is not None:
                tg.create_task(self.queue.serve(), name="queue-adapter")

    async def apply(self, step: Callable[[], Outcome]) -> Outcome:
        """Run one input through the pad; its events are in the outbox before the screen changes."""
        async with self._lock:
            outcome = step()
            self._input.set()  # the tick loop recomputes when the pad is next due
            for event_type, payload in outcome.events:
                await self.device.emit(event_type, payload)
            if outcome.screen is not None:
                self.output.show(outcome.screen)
            return outcome

    async def service(self, call: ServiceCall) -> dict[str, Any]:
        """A service call from the queue system or the centre."""
        if call.window is not None and call.window != self.cfg.window:
            raise CallRefused(f"this pad faces window {self.cfg.window}, not {call.window}")
        outcome = await self.apply(lambda: self.pad.call(call))
        return {"ok": True, "state": self.pad.state, "service_id": self.pad.service_id, "ignored": outcome.ignored}

    async def _keypad_loop(self) -> None:
        async with aclosing(self.keypad.presses()) as presses:
            async for press in presses:
                level = press.level
                await self.apply(partial(self.pad.rate, level) if level else partial(self.pad.staff_key, press.action))

    async def _tick_loop(self) -> None:
        """Tick when the pad has a timeout due or the link went up or down, never on a timer of its own: 65 % of
        a hall's devices are pads, and a 4 Hz tick each took an eighth of the fleet simulator's CPU (issue 20)."""
        while True:
            due = self.pad.due_in(self.device.link_up())
            if due is None or due > 0:
                await self._sleep(None if due is None else real_seconds(self.device.clock, due))
            else:
                await asyncio.sleep(0)  # due now: still let the loop run between ticks
            await self.apply(lambda: self.pad.tick(self.device.link_up()))

    async def _sleep(self, real_s: float | None) -> None:
        """For ``real_s`` at most, until an input (which may start or end a timeout) or a link change."""
        self._input.clear()
        await first_of(self._input.wait(), self.device.link_changed(), timeout_s=real_s)

    async def _cmd_pause(self, _args: NoArgs) -> dict[str, Any]:
        return await self.service(ServiceCall(action="pause"))

    async def _cmd_resume(self, _args: NoArgs) -> dict[str, Any]:
        return await self.service(ServiceCall(action="resume"))

    async def _cmd_service(self, call: ServiceCall) -> dict[str, Any]:
        try:
            return await self.service(call)
        except CallRefused as exc:
            raise CommandFailed(str(exc)) from None
