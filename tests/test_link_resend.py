"""Re-sending what the store never confirmed backs off while the store stays silent."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.link import RESEND_MAX_S, Identity, Link
from agent.outbox import Outbox
from agent.state import StateStore
from broker.mosquitto.local import LocalMosquitto
from runtime.backoff import Backoff
from runtime.settings import MqttConfig
from runtime.transport import LinkOptions


class FakeMonotonic:
    """Only the link's timers: the clock is injectable for exactly this."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self):  # type: ignore[no-untyped-def]
        raise AssertionError("not used here")


def make_link(tmp_path: Path, clock: FakeMonotonic) -> Link:
    outbox = Outbox(tmp_path / "o.db")
    return Link(
        lambda will: LinkOptions(host="127.0.0.1", port=1, client_id="x", will=will),
        Identity("qp", "att-1", "b", 30, "none", "0"),
        outbox,
        StateStore(outbox.db),
        clock,  # type: ignore[arg-type]
        Backoff(1, 60),
        confirm_timeout_s=100,
    )


def _rounds(link: Link, clock: FakeMonotonic, until: float) -> list[float]:
    at = []
    while clock.t < until:
        clock.t += 1
        if link._should_resend():
            at.append(clock.t)
            link._progress_at = clock.t  # what the pump does when it rewinds
    return at


def test_silent_store_rounds_double_up_to_an_hour_and_a_confirmation_resets_them(tmp_path: Path) -> None:
    clock = FakeMonotonic()
    link = make_link(tmp_path, clock)
    at = _rounds(link, clock, 10_000)
    gaps = [b - a for a, b in zip([0.0, *at], at, strict=False)]
    assert gaps[:4] == [101, 201, 401, 801]
    assert max(gaps) <= RESEND_MAX_S + 1
    link._resend_after_s = link.confirm_timeout_s  # what a confirmation does
    link._progress_at = start = clock.t
    assert _rounds(link, clock, start + 150) == [start + 101], "back to the base timeout"


def test_unrouted_events_are_retried_after_a_second_then_backing_off(tmp_path: Path) -> None:
    clock = FakeMonotonic()
    link = make_link(tmp_path, clock)
    link._unrouted = True
    clock.t = 2
    assert link._should_resend()
    link._progress_at = clock.t
    link._unrouted = True
    clock.t = 3
    assert not link._should_resend(), "the second retry waits 2 s"
    clock.t = 5
    assert link._should_resend()


def test_the_agent_has_no_reconnect_delay_of_its_own() -> None:
    """runtime/backoff.py is the one home of the reconnect delay: no module under agent/ defines another."""
    root = Path(__file__).resolve().parents[1] / "agent"
    copies = [
        str(path.relative_to(root.parent))
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and "backoff" in node.name.lower()
    ]
    assert copies == [], f"{copies} define a backoff: use runtime.backoff.Backoff"


async def test_a_cancelled_agent_leaves_no_link_task_behind(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    """GIVEN a connected agent WHEN its task is cancelled (power lost in the fleet simulator) THEN the link's
    pump, confirm loop and close watch end with it: none is left to publish into the closed connection."""
    cfg = AgentConfig(
        site="qp",
        device="pwr-1",
        heartbeat_s=3600,
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        clock_sync_file=Path("/"),
    )
    agent = Agent(cfg)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.link.connected.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    link_tasks = {"outbox-pump", "outbox-confirm", "mqtt-closed"}
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in link_tasks and not t.done()]
    assert left == []


def test_a_client_collected_after_its_loop_closed_raises_nothing() -> None:
    """GIVEN the paho transport's socket callbacks WHEN paho calls them after the event loop closed, from another
    thread (its Client.__del__ at garbage collection) THEN they do nothing instead of raising 'Event loop is closed'
    (which pytest reports, in whatever test is running, as an exception ignored in Client.__del__)."""
    import socket
    import threading

    from runtime.transport import AsyncMqtt

    async def make() -> AsyncMqtt:
        return AsyncMqtt(LinkOptions(host="127.0.0.1", port=1, client_id="gc"))

    client = asyncio.run(make())  # the loop is closed when run() returns
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def callbacks() -> None:
        try:
            client._on_socket_unregister_write(None, None, a)
            client._on_socket_close(None, None, a)
        except BaseException as exc:  # the thread's failure is the test's
            errors.append(exc)

    callbacks()
    other = threading.Thread(target=callbacks)
    other.start()
    other.join()
    a.close()
    b.close()
    assert errors == []
