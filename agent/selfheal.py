"""Self-healing, the first rung of kiosk recovery: probe the device's application, restart it when it
fails, and hand over to the centre with a ``device.fault`` when restarting does not help.

A 24-hour kiosk must be back within 30 minutes. Most outages (a crashed or hung kiosk app) are cured
by a restart, which the agent can do in seconds without anybody travelling; what it cannot cure it
reports once, loudly, so the centre (remote action, then a technician) takes over in good time.

The application is either a systemd unit (``unit``: probed with ``systemctl is-active``, restarted with
``systemctl restart``) or a process the agent supervises itself (``command``); an HTTP health URL can be
added to either, so a hung app that is still "running" is caught too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator, model_validator

from config.base import Section
from protocol.envelope import Frozen
from protocol.events import AppRestart, Fault
from runtime.clock import Clock, SystemClock

log = logging.getLogger(__name__)

RESTART_TYPE = "app.restart"
FAULT_TYPE = "device.fault"
FAULT_CODE = "restart_failed"
MAX_TEXT = 500  # AppRestart.reason and Fault.detail are capped there; a longer text would be refused
# systemd's own unit-name alphabet; a leading "-" would be read by systemctl as an option.
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*$")

Emit = Callable[[str, Frozen], Awaitable[object]]
Trigger = Literal["probe", "exited", "command"]
State = Literal["up", "down", "unknown"]


class AppWatchConfig(Section):
    name: str = Field(min_length=1, max_length=64, description="The application's name in events and logs")
    health_url: str | None = Field(
        default=None, description="http:// URL; a 2xx answer within probe_timeout_s means healthy"
    )
    unit: str | None = Field(
        default=None,
        description="systemd unit: `systemctl is-active UNIT` exit 0 means healthy; `systemctl restart UNIT`",
    )
    command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="Program and arguments the agent starts and supervises itself; unhealthy once exited",
    )
    systemctl: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: ["systemctl"],
        min_length=1,
        description="How to call systemctl, e.g. with a sudo wrapper in front",
    )
    probe_interval_s: float = Field(default=5.0, gt=0, description="Time between probes")
    probe_timeout_s: float = Field(default=2.0, gt=0, description="A probe that takes longer has failed")
    failures_before_restart: int = Field(
        default=3, ge=1, description="Consecutive failed probes before a restart (and passing ones before up)"
    )
    restart_backoff_initial_s: float = Field(
        default=5.0, ge=0, description="Delay after the first failed restart of an outage; doubles each time"
    )
    restart_backoff_max_s: float = Field(default=300.0, ge=0, description="Cap of the delay between restarts")
    max_restarts: int = Field(
        default=5, ge=1, description="Restarts within restart_window_s before giving up and raising a fault"
    )
    restart_window_s: float = Field(default=1800.0, gt=0, description="Window max_restarts is counted in")
    recovery_timeout_s: float = Field(
        default=60.0, gt=0, description="How long after a (re)start the app has to become healthy"
    )
    stop_timeout_s: float = Field(
        default=5.0, gt=0, description="Supervised command: SIGTERM, then SIGKILL after this long"
    )

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"health_url has a bad port: {exc}") from None
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("health_url must be http://HOST[:PORT]/PATH (https is not probed)")
        return value

    @field_validator("unit")
    @classmethod
    def _unit_name(cls, value: str | None) -> str | None:
        if value is not None and not UNIT_RE.match(value):
            raise ValueError(f"unit {value!r} is not a systemd unit name")
        return value

    @model_validator(mode="after")
    def _restartable(self) -> AppWatchConfig:
        if self.health_url is None and self.unit is None and self.command is None:
            raise ValueError("set at least one of health_url, unit or command: there is nothing to watch")
        if self.unit is None and self.command is None:
            raise ValueError(
                "health_url alone can detect but not restart: set unit (a systemd unit) or command "
                "(a process the agent supervises) as well"
            )
        if self.unit is not None and self.command is not None:
            raise ValueError(
                "unit and command exclude each other: the app is either a systemd unit or a process the "
                "agent supervises, and only one of them may restart it"
            )
        if self.restart_backoff_max_s < self.restart_backoff_initial_s:
            raise ValueError("restart_backoff_max_s must be at least restart_backoff_initial_s")
        return self


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The child leads its own process group, so this also reaches whatever it started itself.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def http_probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """GET ``url`` over HTTP/1.0; healthy on a 2xx status line within ``timeout_s``. Never raises for
    what the network or the app does: every oddity is a failed probe with its reason."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, parts.port or 80, limit=4096)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        return False, f"GET {url}: no answer within {timeout_s:g} s"
    except OSError as exc:
        # asyncio words a refused connection "Connect call failed (addr)"; the errno says it plainly.
        return False, f"GET {url}: {os.strerror(exc.errno) if exc.errno else exc}"
    except ValueError:  # readline() past the stream limit: not a status line
        return False, f"GET {url}: not an HTTP answer (status line too long)"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return _judge_status_line(url, line)


def _judge_status_line(url: str, line: bytes) -> tuple[bool, str]:
    if not line:
        return False, f"GET {url}: connection closed without an answer"
    fields = line.decode("latin-1").split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        return False, f"GET {url}: not an HTTP answer: {line[:60]!r}"
    status = int(fields[1])
    if 200 <= status < 300:
        return True, f"GET {url}: HTTP {status}"
    return False, f"GET {url}: HTTP {status}"


async def run_tool(argv: list[str], timeout_s: float) -> tuple[int | None, str]:
    """Run a short command (systemctl); returns its exit code (None if it could not run or took too
    long) and its output, so a missing or hanging systemctl is a reason, not an exception."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except (OSError, ValueError) as exc:
        return None, f"cannot run {argv[0]}: {getattr(exc, 'strerror', None) or exc}"
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        return None, f"{' '.join(argv)} took longer than {timeout_s:g} s"
    finally:
        # Timed out, or cancelled because the agent stops: never leave the tool running unreaped.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(errors="replace").strip()


class AppWatch:
    """Watches one application: probes it, restarts it with capped exponential backoff, gives up after
    ``max_restarts`` in the window with one ``device.fault``, and clears that fault when it recovers.

    ``run()`` is the loop (and owns the supervised child); ``restart()`` may also be called by a
    ``restart_app`` command while ``run()`` runs.
    """

    def __init__(self, cfg: AppWatchConfig, emit: Emit, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self._emit = emit
        self.clock = clock or SystemClock()
        self._lock = asyncio.Lock()  # one restart at a time: the loop's or a command's
        self._proc: asyncio.subprocess.Process | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._spawn_error = ""
        self._state: State = "unknown"
        self._last_detail = "not probed yet"
        self._last_probe_at: float | None = None
        self._failures = 0  # consecutive failed probes
        self._successes = 0  # consecutive passing probes
        self._attempt = 0  # restarts in the current outage; 0 when none is going on
        self._not_before = 0.0  # monotonic time before which the next restart must wait
        self._restarts: deque[float] = deque()  # monotonic times of restarts, for the window
        self._fault_active = False
        self._down_since: datetime | None = None  # wall time of the outage's first failed probe

    @property
    def state(self) -> State:
        return self._state

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Start the supervised command (if any), then probe forever. Cancel to stop: the child is
        terminated (SIGTERM, SIGKILL after ``stop_timeout_s``) before this returns.

        An ``emit`` that raises (the outbox is full) ends run() too: a restart or fault the centre can
        never learn about is the agent's failure to report, not something to carry on past quietly."""
        try:
            if self.cfg.command is not None:
                await self._spawn()
                # A freshly started app gets the same time to come up as a restarted one.
                await self._await_recovery(self.clock.monotonic() + self.cfg.recovery_timeout_s)
            while True:
                await self._step()
                await self._pause()
        finally:
            await self._stop_child()

    async def _step(self) -> None:
        if self._lock.locked():  # a command's restart is under way; it probes for itself
            return
        ok, detail = await self.probe()
        if ok:
            await self._on_healthy()
            return
        self._failures += 1
        self._successes = 0
        if self._failures == 1 and not (self._attempt or self._fault_active):
            self._down_since = self.clock.now()
        trigger = self._due_trigger()
        if trigger is None or self._fault_active:
            return  # not yet, or given up: the centre has the fault and acts
        if self._budget_spent():
            await self._give_up(detail)
        elif self.clock.monotonic() >= self._not_before:
            await self.restart(trigger, detail)

    def _due_trigger(self) -> Trigger | None:
        if self._child_dead():
            return "exited"  # nothing to wait for: a dead process does not get better by probing
        if self._failures >= self.cfg.failures_before_restart:
            return "probe"
        return None

    async def _pause(self) -> None:
        """Sleep until the next probe; wake early when the supervised child exits or the backoff ends."""
        delay = self.cfg.probe_interval_s
        until_restart = self._not_before - self.clock.monotonic()
        if self._attempt and not self._fault_active and 0 < until_restart < delay:
            delay = until_restart
        reaper = self._reaper
        if reaper is not None and not reaper.done():
            await asyncio.wait({reaper}, timeout=delay)
        else:
            await asyncio.sleep(delay)

    async def _on_healthy(self) -> None:
        self._failures = 0
        self._successes += 1
        # The outage ends after as many passing probes as it took failing ones to start it: an app that
        # comes up and falls over again at once stays in the same outage, so its backoff keeps growing.
        if self._successes < self.cfg.failures_before_restart or not (self._attempt or self._fault_active):
            return
        log.info("%s: healthy again after %d restart(s)", self.cfg.name, self._attempt)
        self._attempt = 0
        self._not_before = 0.0
        if self._fault_active:
            self._fault_active = False
            # Someone (the centre, a technician, systemd) brought it back: self-healing starts afresh.
            self._restarts.clear()
            cleared = self._fault(active=False, detail=f"{self.cfg.name} is healthy again")
            await self._emit(FAULT_TYPE, cleared)

    def _budget_spent(self) -> bool:
        # Every restart counts, like systemd's StartLimitBurst, so an app that flaps is caught too.
        horizon = self.clock.monotonic() - self.cfg.restart_window_s
        while self._restarts and self._restarts[0] < horizon:
            self._restarts.popleft()
        return len(self._restarts) >= self.cfg.max_restarts

    async def _give_up(self, detail: str) -> None:
        self._fault_active = True
        text = (
            f"{self.cfg.name}: {len(self._restarts)} restarts in {self.cfg.restart_window_s:g} s did not "
            f"bring it back; last probe: {detail}"
        )
        log.error("%s; raising a fault for the centre", text)
        await self._emit(FAULT_TYPE, self._fault(active=True, detail=text))

    def _fault(self, active: bool, detail: str) -> Fault:
        # An active fault dates from the outage's start (the SLA runs from there), a cleared one from now.
        since = self._down_since if active and self._down_since else self.clock.now()
        return Fault(component="app", code=FAULT_CODE, active=active, since=since, detail=_clip(detail))

    # -- probing -----------------------------------------------------------------------------------
    async def probe(self) -> tuple[bool, str]:
        """Run every configured probe; healthy only if all pass. The text says what failed."""
        checks: list[Awaitable[tuple[bool, str]]] = []
        if self.cfg.command is not None:
            checks.append(self._probe_child())
        if self.cfg.unit is not None:
            checks.append(self._probe_unit(self.cfg.unit))
        if self.cfg.health_url is not None:
            checks.append(http_probe(self.cfg.health_url, self.cfg.probe_timeout_s))
        results = await asyncio.gather(*checks)
        failed = [detail for ok, detail in results if not ok]
        detail = "; ".join(failed) if failed else "healthy"
        self._record(not failed, detail)
        return not failed, detail

    def _record(self, ok: bool, detail: str) -> None:
        if not ok and detail != self._last_detail:
            log.warning("%s: probe failed: %s", self.cfg.name, detail)  # once per new reason, not per probe
        self._state = "up" if ok else "down"
        self._last_detail = detail
        self._last_probe_at = self.clock.monotonic()

    async def _probe_child(self) -> tuple[bool, str]:
        if self._proc is None:
            return False, self._spawn_error or "not started"
        if self._proc.returncode is not None:
            return False, f"process {self._proc.pid} {_exit_text(self._proc.returncode)}"
        return True, f"process {self._proc.pid} running"

    async def _probe_unit(self, unit: str) -> tuple[bool, str]:
        code, out = await run_tool([*self.cfg.systemctl, "is-active", unit], self.cfg.probe_timeout_s)
        if code == 0:
            return True, f"unit {unit} active"
        if code is None:
            return False, out
        return False, f"unit {unit} is {out or f'not active (exit {code})'}"

    # -- restarting --------------------------------------------------------------------------------
    async def restart(self, trigger: Trigger, reason: str) -> bool:
        """Restart the app once now, wait until it is healthy or ``recovery_timeout_s`` has passed, and
        emit one ``app.restart`` event. Returns whether it came back."""
        async with self._lock:
            self._attempt += 1
            attempt = self._attempt
            started = self.clock.monotonic()
            self._restarts.append(started)
            log.warning("%s: restart attempt %d (%s): %s", self.cfg.name, attempt, trigger, reason)
            deadline = started + self.cfg.recovery_timeout_s
            failure = await self._restart_now(deadline)
            ok = failure is None and await self._await_recovery(deadline)
            # The next attempt of this outage waits; _on_healthy() forgets this once the app stays up.
            delay = self.cfg.restart_backoff_initial_s * 2 ** min(attempt - 1, 30)
            self._not_before = self.clock.monotonic() + min(self.cfg.restart_backoff_max_s, delay)
            text = reason if failure is None else f"{reason}; restart failed: {failure}"
            event = AppRestart(app=self.cfg.name, attempt=attempt, trigger=trigger, reason=_clip(text), ok=ok)
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "%s: restart attempt %d ok=%s", self.cfg.name, attempt, ok)
            await self._emit(RESTART_TYPE, event)
            return ok

    async def _restart_now(self, deadline: float) -> str | None:
        """Do the restart itself; returns why it failed, or None."""
        if self.cfg.unit is not None:
            timeout = max(0.1, deadline - self.clock.monotonic())  # systemctl waits for the start job
            code, out = await run_tool([*self.cfg.systemctl, "restart", self.cfg.unit], timeout)
            return None if code == 0 else (out or f"systemctl restart exited with {code}")
        await self._stop_child()
        await self._spawn()
        return self._spawn_error or None

    async def _await_recovery(self, deadline: float) -> bool:
        # Poll at least every second so a quick recovery is reported quickly.
        every = min(self.cfg.probe_interval_s, 1.0)
        while True:
            ok, _ = await self.probe()
            if ok:
                return True
            now = self.clock.monotonic()
            if now >= deadline or self._child_dead():
                return False  # a supervised process that exited does not come back by itself
            await asyncio.sleep(min(every, deadline - now))

    # -- the supervised child ----------------------------------------------------------------------
    def _child_dead(self) -> bool:
        """The supervised command has exited or could not be started at all."""
        return self.cfg.command is not None and (self._proc is None or self._proc.returncode is not None)

    async def _spawn(self) -> None:
        assert self.cfg.command is not None
        self._spawn_error = ""
        try:
            # Its own session (and process group), so stopping it also stops what it started (no
            # orphans). start_new_session rather than process_group=0: uvloop, which the agent runs
            # on, refuses the latter.
            proc = await asyncio.create_subprocess_exec(
                *self.cfg.command, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
        except (OSError, ValueError) as exc:
            self._proc = None
            self._spawn_error = f"cannot start {self.cfg.command[0]}: {getattr(exc, 'strerror', None) or exc}"
            log.error("%s: %s", self.cfg.name, self._spawn_error)
            return
        self._proc = proc
        self._reaper = asyncio.create_task(self._reap(proc), name=f"selfheal-{self.cfg.name}-reap")
        log.info("%s: started %s as pid %d", self.cfg.name, self.cfg.command[0], proc.pid)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        returncode = await proc.wait()
        # Sweep the group the moment its leader is gone: later, its id could belong to someone else.
        _signal_group(proc.pid, signal.SIGKILL)
        log.warning("%s: pid %d %s", self.cfg.name, proc.pid, _exit_text(returncode))

    async def _stop_child(self) -> None:
        """SIGTERM the child's group, SIGKILL after ``stop_timeout_s``, and wait until it is reaped."""
        proc, reaper = self._proc, self._reaper
        if proc is None or reaper is None:
            return
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            # A stopped (hung, SIGSTOPped) process acts on SIGTERM only once continued; systemd does the same.
            _signal_group(proc.pid, signal.SIGCONT)
            # asyncio.wait, not asyncio.timeout: this also runs in a cancelled task, where a 3.11 timeout
            # would re-raise the cancellation instead of timing out.
            done, _ = await asyncio.wait({reaper}, timeout=self.cfg.stop_timeout_s)
            if not done:
                log.warning("%s: pid %d ignored SIGTERM; SIGKILL", self.cfg.name, proc.pid)
                _signal_group(proc.pid, signal.SIGKILL)
        await asyncio.wait({reaper})

    # -- diagnosis ---------------------------------------------------------------------------------
    def diagnose(self) -> dict[str, Any]:
        """What the watch knows, for a diagnose command or a technician."""
        now = self.clock.monotonic()
        self._budget_spent()  # prunes the window so the count below is current
        child = None
        if self.cfg.command is not None:
            child = {
                "pid": self._proc.pid if self._proc else None,
                "returncode": self._proc.returncode if self._proc else None,
                "spawn_error": self._spawn_error or None,
            }
        return {
            "name": self.cfg.name,
            "state": self._state,
            "consecutive_failures": self._failures,
            "attempt": self._attempt,
            "restarts_in_window": len(self._restarts),
            "max_restarts": self.cfg.max_restarts,
            "fault_active": self._fault_active,
            "last_probe": self._last_detail,
            "last_probe_age_s": None if self._last_probe_at is None else round(now - self._last_probe_at, 3),
            "next_restart_in_s": round(max(0.0, self._not_before - now), 3) if self._attempt else None,
            "child": child,
        }
