"""The chaos suite (issue 11): break the broker, the network, the agent's process, its disk and its clock
while devices take punches, then check that every punch the device took is stored exactly once and
that presence ends right.

Real Mosquitto (killed with SIGKILL), real agent processes (killed with SIGKILL), a real TCP proxy on
the device's link (tests/support/tcpproxy.py), a real full filesystem where this machine lets us mount
one. Each scenario is bounded (a few cycles, a hard timeout), so the suite stays within minutes on a
2-core CI machine. The store is SQLite here: the same exactly-once path on PostgreSQL is in
test_delivery.py, and so is the consumer killed with SIGKILL mid-stream
(test_consumer_sigkill_mid_stream_loses_nothing): it is not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.outbox import Outbox, OutboxFull
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import events, presence_history
from protocol.events import AttendancePunch, Lane
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.procs import Proc, agent_proc, outbox_state, presence, wait_for
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.chaos
SITE = "qp"
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


# -- what every scenario checks ---------------------------------------------------------------------
async def stored(store: Store, device: str) -> list[tuple[int, str, str]]:
    """(seq, id, type) of every row the store holds for the device, in seq order."""
    rows = await store.fetch(
        sa.select(events.c.seq, events.c.id, events.c.type)
        .where(events.c.site == SITE, events.c.device == device)
        .order_by(events.c.seq)
    )
    return [(int(r.seq), str(r.id), str(r.type)) for r in rows]


async def assert_exactly_once(store: Store, agent_db: Path, device: str, n: int) -> None:
    """The sim role numbers its punches with a counter committed with each one: the device took n, the
    store holds each seq the outbox ever handed out, once, under one id."""
    st = outbox_state(agent_db)
    rows = await stored(store, device)
    seqs = [seq for seq, _, _ in rows]
    ids = [i for _, i, _ in rows]
    assert st["sim"] == n, f"{device}: the sim took {st['sim']} punches, not {n}"
    assert len(ids) == len(set(ids)), f"{device}: an event id stored twice"
    assert len(seqs) == len(set(seqs)), f"{device}: a seq stored twice (under two ids)"
    missing = sorted(set(range(st["next_seq"])) - set(seqs))
    assert not missing, f"{device}: {len(missing)} seqs never reached the store, first {missing[:10]}"
    assert seqs == list(range(st["next_seq"])), f"{device}: the store holds seqs the agent never took"
    assert sum(1 for _, _, t in rows if t == "attendance.punch") == n


async def drained(agent_db: Path, n: int) -> bool:
    st = outbox_state(agent_db)
    return st["sim"] >= n and st["depth"] == 0


async def is_(store: Store, device: str, state: str) -> bool:
    return await presence(store, f"{SITE}/{device}") == state


async def history(store: Store, device: str) -> list[str]:
    rows = await store.fetch(
        sa.select(presence_history.c.state)
        .where(presence_history.c.key == f"{SITE}/{device}")
        .order_by(presence_history.c.id)
    )
    return [r.state for r in rows]


def sim_agent(tmp_path: Path, port: int, device: str, n: int, rate: float, **kw: float) -> Proc:
    kw.setdefault("heartbeat_s", 600)  # punches only: the seqs are exactly the sim's
    kw.setdefault("keepalive_s", 2)
    kw.setdefault("confirm_timeout_s", 3)
    return agent_proc(tmp_path, port, SITE, device, events_n=n, rate=rate, **kw)  # type: ignore[arg-type]


# -- 1. the broker killed with SIGKILL, again and again ------------------------------------------------
@SQLITE_ONLY
@pytest.mark.timeout(240)
async def test_broker_kill9_restart_loop_stores_every_punch_once_and_presence_recovers(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    n, cycles = 400, 4
    devices = ["att-1", "att-2"]
    agents = {d: sim_agent(tmp_path, mosquitto.port, d, n, rate=50).start() for d in devices}
    procs += agents.values()
    dbs = {d: tmp_path / f"agent-{SITE}-{d}.db" for d in devices}
    await wait_for(lambda: all(outbox_state(db)["sim"] > 30 for db in dbs.values()), 60, "both agents to emit")

    for cycle in range(cycles):
        await asyncio.sleep(random.uniform(0.5, 1.2))
        mosquitto.kill()  # loses whatever it PUBACKed since its last snapshot
        await asyncio.sleep(random.uniform(0.1, 0.6))
        mosquitto.restart()
        taken = {d: outbox_state(db)["sim"] for d, db in dbs.items()}
        assert any(t < n for t in taken.values()), f"cycle {cycle}: the agents were not emitting any more"

    for d, db in dbs.items():
        await wait_for(lambda db=db: drained(db, n), 60, f"{d} to finish and drain")
    for d, db in dbs.items():
        await assert_exactly_once(consumer.store, db, d, n)
        await wait_for(lambda d=d: is_(consumer.store, d, "online"), 15, f"{d} online after the restarts")

    agents["att-2"].kill()  # att-2 dies for good: its Will, not a sweep, says so
    await wait_for(lambda: is_(consumer.store, "att-2", "offline"), 15, "att-2 offline by its Will")
    assert await is_(consumer.store, "att-1", "online")


# -- 2. the hall's network: cut, delayed, black-holed --------------------------------------------------
@SQLITE_ONLY
@pytest.mark.timeout(240)
async def test_network_cut_delay_and_blackhole_store_every_punch_once_and_presence_recovers(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    n, device = 600, "att-1"
    agent_db = tmp_path / f"agent-{SITE}-{device}.db"
    async with TcpProxy(mosquitto.port) as proxy:
        procs.append(sim_agent(tmp_path, proxy.port, device, n, rate=40).start())
        store = consumer.store
        await wait_for(lambda: is_(store, device, "online"), 60, "the birth through the proxy")
        await wait_for(lambda: _stored_at_least(store, device, 20), 30, "the first punches")

        proxy.cut()  # every connection reset, new ones refused
        await wait_for(lambda: is_(store, device, "offline"), 10, "the Will after the cut")
        await wait_for(lambda: proxy.refused > 1, 10, "the agent to retry while the link is cut")
        taken_offline = outbox_state(agent_db)["sim"]
        proxy.heal()
        await wait_for(lambda: is_(store, device, "online"), 20, "online after the cut healed")
        await wait_for(lambda: _stored_at_least(store, device, taken_offline), 30, "the punches taken offline")

        proxy.delay(0.3)  # a slow WAN: 300 ms each way, every chunk
        before = len(await stored(store, device))
        await asyncio.sleep(2.5)
        assert len(await stored(store, device)) > before, "punches still flow over a slow link"
        assert await is_(store, device, "online"), "latency alone must not make a device offline"
        proxy.heal()

        accepted = proxy.accepted
        proxy.blackhole()  # half-open: sockets stay up, no byte passes, nobody is told
        await wait_for(lambda: is_(store, device, "offline"), 15, "the broker's keepalive to fire the Will")
        await wait_for(lambda: proxy.accepted > accepted, 20, "the agent's keepalive to give up the dead link")
        proxy.heal()
        await wait_for(lambda: is_(store, device, "online"), 30, "online after the blackhole healed")

        await wait_for(lambda: drained(agent_db, n), 90, "the agent to finish and drain")
        await assert_exactly_once(store, agent_db, device, n)
        assert await is_(store, device, "online")
        assert {"online", "offline"} <= set(await history(store, device))


# -- 3. the agent killed with SIGKILL while it commits punches -----------------------------------------
@SQLITE_ONLY
@pytest.mark.timeout(240)
async def test_agent_sigkill_during_outbox_writes_loses_and_repeats_nothing(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    n, kills, device = 1200, 4, "att-1"
    agent_db = tmp_path / f"agent-{SITE}-{device}.db"
    agent = sim_agent(tmp_path, mosquitto.port, device, n, rate=400)  # a commit every 20 ms
    procs.append(agent)
    for k in range(kills):
        agent.start()
        start = outbox_state(agent_db)["sim"]
        assert start < n, f"kill {k}: nothing left to interrupt"
        await wait_for(lambda start=start: outbox_state(agent_db)["sim"] > start, 60, f"kill {k}: the agent emitting")
        await asyncio.sleep(random.uniform(0.0, 0.3))
        agent.kill()
    agent.start()

    await wait_for(lambda: drained(agent_db, n), 90, "the agent to finish and drain")
    await assert_exactly_once(consumer.store, agent_db, device, n)
    await wait_for(lambda: is_(consumer.store, device, "online"), 15, "the last run online")
    agent.kill()  # and not started again
    await wait_for(lambda: is_(consumer.store, device, "offline"), 15, "offline by its Will")


def committed(path: Path) -> tuple[int, int, int]:
    """What a SIGKILL would leave: (highest seq, next_seq, sim counter) as committed in the file."""
    with sqlite3.connect(path, timeout=10) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        highest = db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
    return (-1 if highest is None else int(highest)), meta.get("next_seq", 0), meta.get("counter:sim", 0)


@pytest.mark.timeout(60)
async def test_confirmations_racing_group_commits_never_make_half_a_batch_durable(tmp_path: Path) -> None:
    """Between any two commits the file must hold every row with its next_seq and its counter: that
    state is what a SIGKILL freezes. A confirmation used to commit in the middle of a group commit
    (one connection, transactions interleaved at each await), making rows durable without them; after
    a kill the agent reused their seqs and its sim counter repeated punches."""
    path = tmp_path / "outbox.db"
    seen: list[tuple[int, int, int]] = []

    def build(seq: int) -> tuple[str, bytes]:
        return f"hall/v1/{SITE}/att-1/evt/attendance.punch", f'{{"seq":{seq}}}'.encode()

    async with Outbox(path, commit_interval_ms=0) as outbox:
        done = asyncio.Event()

        async def confirmer() -> None:
            last = -1
            while not done.is_set():
                rows = await outbox.fetch(last, 20)
                if rows:
                    last = rows[-1].seq
                    await outbox.confirm([(rows[0].seq, last)])
                    seen.append(committed(path))
                await asyncio.sleep(0)

        task = asyncio.create_task(confirmer())
        for _ in range(300):
            await asyncio.gather(*(outbox.append(Lane.CRITICAL, build, counter="sim") for _ in range(5)))
        done.set()
        await task
    assert len(seen) > 50, "the confirmations should have raced the commits"
    torn = [s for s in seen if not s[0] < s[1] == s[2]]
    assert not torn, f"{len(torn)} states with rows beyond next_seq or the counter, e.g. {torn[:3]}"


# -- 4. the disk under the outbox fills up ------------------------------------------------------------
@dataclass
class Disk:
    """The outbox's directory, and a way to run it out of space and give the space back.

    As root on Linux it is a small tmpfs filled with a file: SQLite meets a real ENOSPC. Where
    mount is not allowed, the outbox's own connection gets ``PRAGMA max_page_count`` at its current
    size: SQLite's same SQLITE_FULL path, without the filesystem."""

    path: Path
    tmpfs: bool
    filler: Path = field(init=False)

    def __post_init__(self) -> None:
        self.filler = self.path / "filler"

    async def fill(self, agent: Agent) -> None:
        if self.tmpfs:
            with contextlib.suppress(OSError), self.filler.open("ab") as f:
                while True:
                    f.write(b"\0" * 65_536)
                    f.flush()
            return
        db = agent.outbox._require()  # max_page_count is a property of the connection
        cur = await db.execute("PRAGMA page_count")
        row = await cur.fetchone()
        assert row is not None
        await db.execute(f"PRAGMA max_page_count = {int(row[0])}")

    async def free(self, agent: Agent) -> None:
        if self.tmpfs:
            self.filler.unlink()
            return
        await agent.outbox._require().execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture(params=["tmpfs", "page_limit"])
def disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Disk]:
    """Both ways where mount works (root); the page limit alone where it does not."""
    path = tmp_path / "disk"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)]
    mounted = request.param == "tmpfs" and subprocess.run(mount, capture_output=True, check=False).returncode == 0
    try:
        yield Disk(path, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def agent_config(tmp_path: Path, port: int, device: str, outbox: Path, **top: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": SITE,
            "device": device,
            "heartbeat_s": 600,
            "mqtt": MqttConfig(host="127.0.0.1", port=port, keepalive_s=2, backoff_initial_s=0.1, backoff_max_s=1.0),
            "outbox": OutboxConfig(path=outbox, commit_interval_ms=5, confirm_timeout_s=3),
            "clock_sync_file": tmp_path / "synced",
            **top,
        }
    )


def punch(i: int) -> AttendancePunch:
    return AttendancePunch(staff_id=f"S{i:05d}", method="face")


@SQLITE_ONLY
@pytest.mark.timeout(90)
async def test_full_disk_refuses_punches_visibly_keeps_running_and_recovers(
    disk: Disk, mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path
) -> None:
    device = "att-1"
    # Heartbeats every second: the agent's own telemetry meets the full disk too.
    agent = Agent(agent_config(tmp_path, mosquitto.port, device, disk.path / "outbox.db", heartbeat_s=1))
    task = asyncio.create_task(agent.run())
    try:
        await _full_disk(disk, agent, task, consumer.store, device)
    finally:
        agent.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 20)


async def _full_disk(disk: Disk, agent: Agent, task: asyncio.Task[None], store: Store, device: str) -> None:
    await wait_for(lambda: is_(store, device, "online"), 20, "the birth")
    taken: list[str] = []

    async def take(numbers: range) -> list[int]:
        """Punches at once (one group commit); returns the numbers the outbox refused."""
        results = await asyncio.gather(
            *(agent.emit("attendance.punch", punch(i)) for i in numbers), return_exceptions=True
        )
        refused = []
        for i, r in zip(numbers, results, strict=True):
            if isinstance(r, OutboxFull):
                refused.append(i)
            elif isinstance(r, BaseException):
                raise r  # anything else is a bug: the person would see a crash, not "please retry"
            else:
                taken.append(r.id)
        return refused

    assert await take(range(0, 50)) == []
    await disk.fill(agent)
    refused: list[int] = []
    for start in range(50, 5050, 50):  # until the disk refuses a few (bounded)
        refused += await take(range(start, start + 50))
        if len(refused) >= 100:
            break
    assert len(refused) >= 100, f"the full disk ({'tmpfs' if disk.tmpfs else 'page limit'}) never refused a punch"
    await asyncio.sleep(1.5)  # a heartbeat or two on the full disk
    assert not task.done(), f"the agent stopped on a full disk: {task.exception() if task.done() else ''}"

    await disk.free(agent)
    assert await take(range(10_000, 10_050)) == [], "space came back but the outbox still refuses"
    await wait_for(lambda: agent.outbox.depth == 0, 60, "the outbox to drain after the disk recovered")
    rows = await stored(store, device)
    punched = [i for _, i, t in rows if t == "attendance.punch"]
    assert len(punched) == len(set(punched)), "a punch stored twice"
    assert set(punched) == set(taken), (
        f"{len(set(taken) - set(punched))} taken punches missing, {len(set(punched) - set(taken))} stored but refused"
    )
    assert len(punched) == len(taken)
    await wait_for(lambda: is_(store, device, "online"), 20, "online after the disk recovered")
    assert not task.done()
    assert agent.link.connects == 1, "a full disk must not cost the device its link"


# -- 5. the device's clock jumps ------------------------------------------------------------------------
@dataclass
class JumpingClock:
    """The device's wall clock, off by ``offset``; its monotonic clock (timers, keepalive) never jumps."""

    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


@SQLITE_ONLY
@pytest.mark.timeout(90)
async def test_device_clock_jumps_keep_order_exactly_once_and_do_not_fool_presence(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    running: Callable[[Agent | AgentConfig], Agent],
    tmp_path: Path,
) -> None:
    device, heartbeat = "att-1", 0.5
    synced = tmp_path / "synced"
    clock = JumpingClock()
    cfg = agent_config(tmp_path, mosquitto.port, device, tmp_path / "outbox.db", heartbeat_s=heartbeat)
    agent = running(Agent(cfg, clock=clock))
    await wait_for(lambda: is_(consumer.store, device, "online"), 20, "the birth")

    # (offset, NTP-synchronised): right; 6 h fast and unsynchronised; a jump back to 3 h slow; NTP fixes it.
    phases = [(timedelta(0), True), (timedelta(hours=6), False), (timedelta(hours=-3), False), (timedelta(0), True)]
    sent: list[tuple[str, int, datetime, bool]] = []
    for offset, is_synced in phases:
        clock.offset = offset
        if is_synced:
            synced.touch()
        else:
            synced.unlink(missing_ok=True)
        for i in range(10):
            env = await agent.emit("attendance.punch", punch(len(sent)))
            sent.append((env.id, env.seq, env.ts, env.clock_synced))
            assert env.clock_synced is is_synced and abs(env.ts - datetime.now(UTC) - offset) < timedelta(seconds=5)
            if i % 3 == 0:
                await asyncio.sleep(0.1)
        await asyncio.sleep(3 * heartbeat)  # heartbeats stamped with the jumped clock
        assert await is_(consumer.store, device, "online"), f"clock {offset}: presence fooled"

    await wait_for(lambda: agent.outbox.depth == 0, 30, "the outbox to drain")
    seqs = [s for _, s, _, _ in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seqs must follow the order punches were taken"
    rows = await consumer.store.fetch(
        sa.select(events.c.id, events.c.seq, events.c.ts, events.c.clock_synced, events.c.received_at).where(
            events.c.site == SITE, events.c.device == device, events.c.type == "attendance.punch"
        )
    )
    by_id = {r.id: r for r in rows}
    assert len(rows) == len(by_id) == len(sent), "each punch stored exactly once"
    now = datetime.now(UTC)
    for event_id, seq, ts, is_synced in sent:
        r = by_id[event_id]
        assert (r.seq, r.ts, r.clock_synced) == (seq, ts, is_synced), "the store keeps the device's own time and flag"
        assert abs(r.received_at - now) < timedelta(minutes=2), "received_at is the consumer's clock"
    assert set(await history(consumer.store, device)) == {"online"}, "no stale or offline through the jumps"
    assert agent.link.connects == 1, "a clock jump must not break the MQTT link"


# -- the proxy itself ----------------------------------------------------------------------------------
@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _roundtrip(port: int, data: bytes = b"ping", within_s: float = 2.0) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        t0 = time.monotonic()
        writer.write(data)
        got = await asyncio.wait_for(reader.readexactly(len(data)), within_s)
        return got, time.monotonic() - t0
    finally:
        writer.close()


@pytest.mark.timeout(30)
async def test_proxy_forwards_cuts_heals_and_delays(echo: int) -> None:
    async with TcpProxy(echo) as proxy:
        assert (await _roundtrip(proxy.port))[0] == b"ping"

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)  # the open connection is reset
        writer.close()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.port)  # and a new one refused
        assert proxy.refused == 1

        proxy.heal()
        proxy.delay(0.3)
        got, took = await _roundtrip(proxy.port)
        assert got == b"ping" and took >= 0.6, f"0.3 s each way, took {took:.2f} s"
        proxy.heal()
        assert (await _roundtrip(proxy.port))[1] < 0.6


@pytest.mark.timeout(30)
async def test_proxy_blackhole_keeps_sockets_open_and_delivers_nothing(echo: int) -> None:
    async with TcpProxy(echo) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.blackhole()
        writer.write(b"lost")
        await writer.drain()  # the write succeeds: nobody is told
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        with pytest.raises(TimeoutError):
            await _roundtrip(proxy.port, within_s=0.5)  # new connections are accepted into the void
        proxy.heal()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # the old link stays dead
        writer.close()
        assert (await _roundtrip(proxy.port))[0] == b"ping"  # a new one works


@pytest.mark.timeout(30)
async def test_proxy_bandwidth_limit(echo: int) -> None:
    async with TcpProxy(echo) as proxy:
        proxy.limit(100_000)
        _, took = await _roundtrip(proxy.port, b"x" * 50_000, within_s=10)
        assert took >= 0.4, f"50 kB at 100 kB/s took {took:.2f} s"


async def _stored_at_least(store: Store, device: str, n: int) -> bool:
    return len(await stored(store, device)) >= n
