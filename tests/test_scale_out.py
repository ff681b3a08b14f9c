"""Scale-out past one process: several `hallfleet consumer` processes in one shared group on PostgreSQL.

The rule (docs/ingest.md, "Where the next step is"): the broker hands each event of the group's shared
subscription to one member, each member acknowledges only what it committed, and the store's unique key takes
an event once whoever delivers it. So two members share a load exactly once (each stores some, together all,
none twice), and a member killed with SIGKILL mid-load loses nothing: what it held unacknowledged, or what the
broker still queues for it, is sent again by the agents (they keep every event until the store confirms it) and
taken by the member that lives.

In that test both members are configured as docs/ingest.md advises for shared-group members in scale-out: a short
session expiry (here 1 s, to stay short; in a hall a few minutes, enough for systemd's restart). Mosquitto 2.0
keeps a dead member in the group while its session lasts and queues it its share of every message, the
agents' re-sends included; once the session expires it leaves the group and the next re-send round reaches the
survivor whole. With the shipped default (`mqtt.session_expiry_s`, a week) a member that stays dead takes half
of each round, and the agents double their wait per silent round (from `confirm_timeout_s`, 120 s shipped, 1 s
here), so the last events would wait hours for it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import events
from tests.support.procs import Proc, agent_proc, consumer_proc, outbox_state, stored_seqs, wait_for

pytestmark = pytest.mark.postgres

DEVICES = [f"att-{i}" for i in range(1, 5)]
EVENTS = 400  # per device
MEMBER_SESSION_EXPIRY_S = 1  # a dead member leaves the shared group this long after it died


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    s = await Store.open(pg_url)  # migrated before the consumers start
    yield s
    await s.close()


def agents(tmp_path: Path, port: int, confirm_timeout_s: float = 120.0) -> list[Proc]:
    return [
        agent_proc(
            tmp_path, port, device=d, events_n=EVENTS, rate=200, heartbeat_s=600, confirm_timeout_s=confirm_timeout_s
        )
        for d in DEVICES
    ]


async def all_drained(tmp_path: Path) -> bool:
    states = [outbox_state(tmp_path / f"agent-qp-{d}.db") for d in DEVICES]
    return all(st["sim"] >= EVENTS and st["depth"] == 0 for st in states)


async def assert_each_once(store: Store, tmp_path: Path) -> None:
    """Every seq each agent took is in the store, once, and nothing else is."""
    for d in DEVICES:
        st = outbox_state(tmp_path / f"agent-qp-{d}.db")
        seqs = await stored_seqs(store, "qp", d)
        assert st["sim"] == EVENTS
        assert len(seqs) == len(set(seqs)), f"an event of {d} was stored twice"
        assert seqs == list(range(st["next_seq"])), f"the store misses seqs {d} took"


def stored_by(consumer: Proc) -> int:
    """The events new to the store this member committed (a re-delivered one is not counted), from its own
    stop line."""
    found = re.search(r"stopped: received \d+, stored (\d+)", consumer.log())
    assert found, consumer.log()[-2000:]
    return int(found.group(1))


async def total(store: Store) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(events)))


async def test_two_consumer_processes_share_a_load_exactly_once(
    mosquitto: LocalMosquitto, store: Store, pg_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    consumers = [consumer_proc(tmp_path, mosquitto.port, pg_url, f"m{i}") for i in (1, 2)]
    procs += [c.start() for c in consumers]
    procs += [a.start() for a in agents(tmp_path, mosquitto.port)]

    await wait_for(lambda: all_drained(tmp_path), 120, "every agent to drain")
    await assert_each_once(store, tmp_path)
    shares = []
    for c in consumers:
        assert c.terminate() == 0
        shares.append(stored_by(c))
    assert all(s > 0 for s in shares), f"each member takes a share of the group's load: {shares}"
    assert sum(shares) == await total(store), f"together the members stored every row once: {shares}"


async def test_a_member_killed_mid_load_loses_nothing(
    mosquitto: LocalMosquitto, store: Store, pg_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    survivor, victim = (
        consumer_proc(tmp_path, mosquitto.port, pg_url, f"k{i}", session_expiry_s=MEMBER_SESSION_EXPIRY_S)
        for i in (1, 2)
    )
    procs += [survivor.start(), victim.start()]
    procs += [a.start() for a in agents(tmp_path, mosquitto.port, confirm_timeout_s=1)]

    quarter = EVENTS * len(DEVICES) // 4
    await wait_for(lambda: _at_least(store, quarter), 90, "a quarter of the load stored")
    victim.kill()  # SIGKILL: its uncommitted batch and whatever the broker queued for it are not acknowledged
    stored_at_kill = await total(store)
    assert stored_at_kill < EVENTS * len(DEVICES), "the load was over before the kill: make it longer"

    await wait_for(lambda: all_drained(tmp_path), 180, "every agent to drain through the survivor")
    await assert_each_once(store, tmp_path)
    assert survivor.terminate() == 0
    assert stored_by(survivor) >= await total(store) - stored_at_kill, "the survivor took the rest"


async def _at_least(store: Store, n: int) -> bool:
    return await total(store) >= n
