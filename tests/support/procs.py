"""Real agent and consumer processes for the delivery and presence tests: started as `hallfleet ...`
would be under systemd, killed with real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from broker.store.db import Store
from broker.store.schema import devices, events


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, top: dict[str, Any], sections: dict[str, dict[str, Any]]) -> Path:
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Proc:
    """One `hallfleet` subprocess with its output in a log file."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = workdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "hallfleet.cli", *self.args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no Will cancelled."""
        self.signal(signal.SIGKILL)
        self.wait()

    def terminate(self, timeout: float = 15) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 15) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait(10)


def agent_proc(
    workdir: Path,
    port: int,
    site: str = "qp",
    device: str = "att-1",
    *,
    events_n: int = 0,
    rate: float = 100.0,
    heartbeat_s: float = 5.0,
    keepalive_s: int = 30,
    confirm_timeout_s: float = 120.0,
    app: dict[str, Any] | None = None,
) -> Proc:
    name = f"agent-{site}-{device}"
    cfg = write_toml(
        workdir / f"{name}.toml",
        {"site": site, "device": device, "role": "sim", "heartbeat_s": heartbeat_s},
        {
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "keepalive_s": keepalive_s,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 1.0,
            },
            "outbox": {"path": str(workdir / f"{name}.db"), "confirm_timeout_s": confirm_timeout_s},
            "sim": {"events": events_n, "rate_per_s": rate},
            **({"app": app} if app else {}),
        },
    )
    return Proc(name, ["agent", "--config", str(cfg)], workdir)


def consumer_proc(
    workdir: Path,
    port: int,
    url: str,
    instance: str = "c1",
    sweep_s: float = 0.2,
    *,
    session_expiry_s: int | None = None,
) -> Proc:
    """A consumer; ``session_expiry_s`` overrides the shipped week (a scale-out member's short session)."""
    mqtt: dict[str, Any] = {"host": "127.0.0.1", "port": port, "backoff_initial_s": 0.1, "backoff_max_s": 1.0}
    if session_expiry_s is not None:
        mqtt["session_expiry_s"] = session_expiry_s
    cfg = write_toml(
        workdir / f"consumer-{instance}.toml",
        {"instance": instance},
        {
            "mqtt": mqtt,
            "store": {"url": url},
            "ingest": {"sweep_s": sweep_s},
        },
    )
    return Proc(f"consumer-{instance}", ["consumer", "--config", str(cfg)], workdir)


def outbox_state(path: Path) -> dict[str, int]:
    """Read an agent's outbox from outside (WAL lets us while the agent writes)."""
    if not path.exists():
        return {"next_seq": 0, "sim": 0, "depth": 0}
    with sqlite3.connect(path, timeout=10) as db:
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:  # the agent is still creating its schema
            return {"next_seq": 0, "sim": 0, "depth": 0}
    return {"next_seq": meta.get("next_seq", 0), "sim": meta.get("counter:sim", 0), "depth": depth}


async def wait_for(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], limit_s: float, what: str, every: float = 0.05
) -> float:
    """Poll until ``check`` is true; returns the seconds it took, fails the test naming ``what``."""
    t0 = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit_s:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(every)


async def stored_seqs(store: Store, site: str, device: str) -> list[int]:
    rows = await store.fetch(
        sa.select(events.c.seq).where(events.c.site == site, events.c.device == device).order_by(events.c.seq)
    )
    return [int(r[0]) for r in rows]


async def presence(store: Store, key: str) -> str | None:
    value = await store.scalar(sa.select(devices.c.presence).where(devices.c.key == key))
    return None if value is None else str(value)
