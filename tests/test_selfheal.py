"""Self-healing, the first rung of kiosk recovery: real application processes (tests/support/apps.py)
crash, hang and refuse to come back, and the agent's AppWatch restarts them, backs off, hands over to
the centre with one fault and clears it once.

The ``unit`` mode runs against a fake ``systemctl`` script (FakeSystemctl): this machine has no systemd
as PID 1, so the script stands in for the service manager, answering ``is-active`` from a state file and
logging every call so the tests can read what the agent asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.selfheal import AppWatch, AppWatchConfig, http_probe
from protocol.envelope import Frozen
from protocol.events import REGISTRY, AppRestart, Fault
from tests.support.apps import FakeSystemctl, app_command, free_port, process_gone
from tests.support.procs import wait_for

Events = list[tuple[str, Frozen]]


def recorder() -> tuple[Events, Any]:
    """An emit() that keeps what it is given, and checks it as Agent.emit would."""
    events: Events = []

    async def emit(event_type: str, payload: Frozen) -> None:
        assert isinstance(payload, REGISTRY[event_type].model), (event_type, payload)
        events.append((event_type, payload))

    return events, emit


def restarts(events: Events) -> list[AppRestart]:
    return [p for t, p in events if t == "app.restart" and isinstance(p, AppRestart)]


def faults(events: Events) -> list[Fault]:
    return [p for t, p in events if t == "device.fault" and isinstance(p, Fault)]


@asynccontextmanager
async def running(watch: AppWatch) -> AsyncIterator[asyncio.Task[None]]:
    """run() in a task for the block; cancelled and awaited afterwards, so no child outlives a test."""
    task = asyncio.create_task(watch.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def fast(**fields: Any) -> AppWatchConfig:
    defaults: dict[str, Any] = {
        "name": "kiosk",
        "probe_interval_s": 0.05,
        "probe_timeout_s": 0.3,
        "failures_before_restart": 3,
        "restart_backoff_initial_s": 0.05,
        "restart_backoff_max_s": 0.1,
        "recovery_timeout_s": 5.0,
        "stop_timeout_s": 2.0,
    }
    return AppWatchConfig(**(defaults | fields))


def health_body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())


async def test_crashed_command_is_restarted_at_once_with_trigger_exited(tmp_path: Path) -> None:
    """GIVEN a supervised app that crashes 0.3 s after its first start
    WHEN it exits
    THEN it is restarted without waiting for failed probes, and one app.restart says exited, ok."""
    events, emit = recorder()
    watch = AppWatch(fast(command=app_command("crash-once", tmp_path / "crashed")), emit)
    async with running(watch):
        await wait_for(lambda: bool(restarts(events)), 10, "an app.restart event")
        assert (tmp_path / "crashed").exists()
        [event] = restarts(events)
        assert (event.app, event.attempt, event.trigger, event.ok) == ("kiosk", 1, "exited", True)
        assert "exited with code 3" in event.reason
        await asyncio.sleep(0.3)
        report = watch.diagnose()
        assert watch.state == "up" and report["child"]["returncode"] is None
        first_pid = report["child"]["pid"]
    assert first_pid is not None and process_gone(first_pid)
    assert len(restarts(events)) == 1 and not faults(events)


async def test_hung_http_app_is_restarted_after_failed_probes(tmp_path: Path) -> None:
    """GIVEN a supervised HTTP app whose /health answers
    WHEN it hangs (SIGSTOP): connections are accepted by the kernel, nobody answers
    THEN after failures_before_restart failed probes it is restarted, the new process answers, and the
    event says trigger probe with the probe's reason."""
    events, emit = recorder()
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    cfg = fast(command=app_command("http", port), health_url=url, probe_interval_s=0.1, probe_timeout_s=0.3)
    watch = AppWatch(cfg, emit)
    async with running(watch):
        await wait_for(lambda: watch.state == "up", 10, "the app to come up")
        hung_pid = watch.diagnose()["child"]["pid"]
        assert health_body(url) == f"pid={hung_pid}\n"
        os.kill(hung_pid, signal.SIGSTOP)
        took = await wait_for(lambda: bool(restarts(events)), 15, "an app.restart event")
        [event] = restarts(events)
        assert (event.trigger, event.ok, event.attempt) == ("probe", True, 1)
        assert f"GET {url}: no answer within 0.3 s" in event.reason
        assert took >= 3 * 0.3, "restarted before three probes had failed"
        new_pid = watch.diagnose()["child"]["pid"]
        assert new_pid != hung_pid
        assert health_body(url) == f"pid={new_pid}\n"
        assert process_gone(hung_pid), "the hung process must be gone, not left stopped"
    assert process_gone(new_pid)
    assert not faults(events)


async def test_restarts_of_one_outage_back_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    """GIVEN a unit that restarting does not fix, backoff 0.2 s doubling up to 0.8 s
    WHEN the watch keeps restarting it
    THEN the gaps between restarts grow by the backoff (0.2, 0.4, 0.8) and stop growing at the cap."""
    fake = FakeSystemctl.create(tmp_path, state="failed", restart_fixes=False)
    events, emit = recorder()
    recovery = 0.2
    cfg = fast(
        unit="kiosk.service",
        systemctl=[str(fake.path)],
        failures_before_restart=2,
        restart_backoff_initial_s=0.2,
        restart_backoff_max_s=0.8,
        recovery_timeout_s=recovery,
        max_restarts=5,
    )
    async with running(AppWatch(cfg, emit)):
        await wait_for(lambda: bool(faults(events)), 15, "the fault after five restarts")
    times = fake.restarts()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4, gaps
    # Each gap is the recovery wait plus the backoff; timers never fire early, scheduling may be late.
    for gap, backoff in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
        assert recovery + backoff <= gap < recovery + backoff + 0.35, (gaps, backoff)
    assert gaps[0] < gaps[1] < gaps[2]
    assert [e.attempt for e in restarts(events)] == [1, 2, 3, 4, 5]


async def test_app_that_never_comes_back_raises_one_fault_and_clears_it_once(tmp_path: Path) -> None:
    """GIVEN a unit that restarting does not fix, max_restarts 3
    WHEN three restarts fail
    THEN restarting stops, one device.fault restart_failed active=True goes to the centre; once the unit
    is healthy again (someone fixed it), exactly one active=False follows."""
    fake = FakeSystemctl.create(tmp_path, state="failed", restart_fixes=False)
    events, emit = recorder()
    cfg = fast(unit="kiosk.service", systemctl=[str(fake.path)], recovery_timeout_s=0.1, max_restarts=3)
    watch = AppWatch(cfg, emit)
    async with running(watch):
        await wait_for(lambda: bool(faults(events)), 10, "the fault")
        await asyncio.sleep(0.6)  # many probe intervals: no more restarts, no second fault
        assert len(fake.restarts()) == 3
        assert [(e.attempt, e.ok, e.trigger) for e in restarts(events)] == [(i, False, "probe") for i in (1, 2, 3)]
        [raised] = faults(events)
        assert (raised.component, raised.code, raised.active) == ("app", "restart_failed", True)
        assert "3 restarts" in raised.detail and "unit kiosk.service is failed" in raised.detail
        assert raised.since is not None
        assert watch.diagnose()["fault_active"] is True and watch.state == "down"

        fake.set_state("active")
        await wait_for(lambda: len(faults(events)) == 2, 5, "the fault to clear")
        await asyncio.sleep(0.4)
    raised, cleared = faults(events)
    assert (cleared.code, cleared.active) == ("restart_failed", False)
    assert len(faults(events)) == 2 and len(restarts(events)) == 3
    assert watch.state == "up" and watch.diagnose()["restarts_in_window"] == 0


async def test_unit_mode_restarts_the_unit_through_systemctl(tmp_path: Path) -> None:
    """GIVEN a systemd unit (the fake systemctl) whose is-active fails
    WHEN failures_before_restart probes have failed
    THEN `systemctl restart UNIT` is called, and the event carries what is-active said."""
    fake = FakeSystemctl.create(tmp_path, state="active")
    events, emit = recorder()
    watch = AppWatch(fast(unit="kiosk.service", systemctl=[str(fake.path)]), emit)
    async with running(watch):
        await wait_for(lambda: watch.state == "up", 5, "the unit to be seen up")
        fake.log_file.unlink()
        fake.set_state("failed")
        await wait_for(lambda: bool(restarts(events)), 5, "an app.restart event")
    calls = [args for _, args in fake.calls()]
    first_restart = calls.index(["restart", "kiosk.service"])
    assert calls[:first_restart] == [["is-active", "kiosk.service"]] * 3
    [event] = restarts(events)
    assert (event.trigger, event.ok) == ("probe", True)
    assert event.reason == "unit kiosk.service is failed"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, ["health_url", "unit", "command"]),
        ({"health_url": "http://127.0.0.1:8080/health"}, ["health_url", "unit", "command"]),
        ({"unit": "kiosk.service", "command": ["kiosk"]}, ["unit", "command"]),
        ({"unit": "kiosk.service", "health_url": "https://kiosk/health"}, ["health_url"]),
        ({"unit": "kiosk.service", "health_url": "http://kiosk:99999/"}, ["health_url", "port"]),
        ({"unit": "--now"}, ["unit"]),
        ({"command": []}, ["command"]),
        (
            {"unit": "k.service", "restart_backoff_initial_s": 10, "restart_backoff_max_s": 1},
            ["restart_backoff"],
        ),
        ({"unit": "k.service", "probe_interval_s": 0}, ["probe_interval_s"]),
        ({"unit": "k.service", "restart_after": 3}, ["restart_after"]),
    ],
)
def test_config_errors_name_the_fields(fields: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        AppWatchConfig(name="kiosk", **fields)
    text = str(info.value)
    for name in named:
        assert name in text, text


def test_every_config_field_is_described() -> None:
    undescribed = [n for n, f in AppWatchConfig.model_fields.items() if not f.description]
    assert not undescribed


async def test_odd_answers_are_failed_probes_with_their_reason(tmp_path: Path) -> None:
    """GIVEN a health URL that answers garbage, one that closes at once, one nobody listens on, and a
    systemctl that does not exist
    WHEN probed
    THEN each is a failed probe whose text says why; nothing raises."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\xffhello there\r\n")
        await writer.drain()
        writer.close()

    async def silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # closing before reading the request would be a reset
        writer.close()

    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (garbage, silent_close)]
    try:
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        ok, detail = await http_probe(f"http://127.0.0.1:{ports[0]}/health", 1)
        assert not ok and "not an HTTP answer" in detail
        ok, detail = await http_probe(f"http://127.0.0.1:{ports[1]}/health", 1)
        assert not ok and "closed without an answer" in detail
    finally:
        for s in servers:
            s.close()
    ok, detail = await http_probe(f"http://127.0.0.1:{free_port()}/health", 1)
    assert not ok and "refused" in detail.lower()

    cfg = fast(unit="kiosk.service", systemctl=[str(tmp_path / "no-such-systemctl")])
    ok, detail = await AppWatch(cfg, recorder()[1]).probe()
    assert not ok and "cannot run" in detail and "no-such-systemctl" in detail


async def test_command_that_cannot_start_ends_in_a_fault(tmp_path: Path) -> None:
    """GIVEN a command whose program does not exist
    THEN each restart fails with that reason, and after max_restarts one fault; run() does not crash."""
    events, emit = recorder()
    watch = AppWatch(fast(command=[str(tmp_path / "no-such-app")], max_restarts=2), emit)
    async with running(watch) as task:
        await wait_for(lambda: bool(faults(events)), 5, "the fault")
        assert not task.done()
    assert [e.ok for e in restarts(events)] == [False, False]
    assert "cannot start" in restarts(events)[0].reason


async def test_cancelling_run_terminates_the_child(tmp_path: Path) -> None:
    """GIVEN a supervised app that stops on SIGTERM
    WHEN run() is cancelled
    THEN the child is gone when run() returns, well before the SIGKILL deadline."""
    watch = AppWatch(fast(command=app_command("sleep"), stop_timeout_s=5), recorder()[1])
    task = asyncio.create_task(watch.run())
    await wait_for(lambda: watch.state == "up", 5, "the app to start")
    pid = watch.diagnose()["child"]["pid"]
    t0 = time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - t0 < 2
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cancelling_run_kills_a_child_that_ignores_sigterm_and_its_own_children(tmp_path: Path) -> None:
    """GIVEN a supervised app that ignores SIGTERM and has started a child of its own
    WHEN run() is cancelled
    THEN after stop_timeout_s both get SIGKILL: no orphan is left running."""
    pid_file = tmp_path / "grandchild.pid"
    watch = AppWatch(fast(command=app_command("stubborn", pid_file), stop_timeout_s=0.5), recorder()[1])
    task = asyncio.create_task(watch.run())
    await wait_for(lambda: pid_file.exists() and bool(pid_file.read_text()), 10, "the grandchild")
    pid, grandchild = watch.diagnose()["child"]["pid"], int(pid_file.read_text())
    t0 = time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 0.5 <= time.monotonic() - t0 < 3
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await wait_for(lambda: process_gone(grandchild), 2, "the grandchild to die")
