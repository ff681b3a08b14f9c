"""docs/deployment.md followed step by step on this machine: every ```sh block of the guide is run by bash in
order, with the guide's own variables pointed at temporary directories and free loopback ports. What systemd,
apt and the device would do (blocks marked ``sh on-host``) the test does itself, with the files the guide
produced: Mosquitto on the rendered conf as is (centre and hall, bridged), the consumer and the API with their
credentials as LoadCredential= hands them over, on a private PostgreSQL, and an agent from its bundle. The guide
and the test cannot drift: the commands run are the ones in the guide."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.mosquitto.local import find_mosquitto, free_port
from broker.store.db import Store
from provisioning.bundle import CREDENTIALS_RUN, STATE_DIR
from tests.support.postgres import LocalPostgres
from tests.test_monitoring import metric_names_used

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "deployment.md"
_BLOCK = re.compile(r"^```(\S+)(?:[ \t]+(\S+))?\n(.*?)^```", re.S | re.M)
VARIABLES_MARK = "# --- deployment variables ---"
WAIT_S = 60.0


def sections() -> list[tuple[str, list[str]]]:
    """(heading, the ``sh`` blocks the test runs) per ``##`` section; ``sh on-host`` blocks are left out."""
    out = []
    for part in re.split(r"^## ", GUIDE.read_text(encoding="utf-8"), flags=re.M)[1:]:
        heading = part.splitlines()[0]
        blocks = [m.group(3) for m in _BLOCK.finditer(part) if m.group(1) == "sh" and m.group(2) is None]
        out.append((heading, blocks))
    return out


def guide_variables() -> list[str]:
    block = next(b for _, bs in sections() for b in bs if VARIABLES_MARK in b)
    return re.findall(r"^([A-Z_]+)=", block, re.M)


class Deployment:
    """The guide's variables on this machine, the shell that runs its blocks, and the processes systemd would run."""

    def __init__(self, tmp: Path, pg: LocalPostgres) -> None:
        self.tmp = tmp
        db = f"guide_{uuid.uuid4().hex[:8]}"
        self.vars = {
            "IT": "zhao.min",
            "SITE": "qingpu",
            "CENTRE": "127.0.0.1",
            "HALL": "127.0.0.1",
            "CENTRE_TLS_PORT": str(free_port()),
            "CENTRE_MTLS_PORT": str(free_port()),
            "CENTRE_LOCAL_PORT": str(free_port()),
            "HALL_TLS_PORT": str(free_port()),
            "HALL_MTLS_PORT": str(free_port()),
            "API_PORT": str(free_port()),
            "CONSUMER_METRICS_PORT": str(free_port()),
            "STORE_URL": pg.create_database(db),
            "PG_DSN": f"postgresql://postgres@{pg.host}:{pg.port}/{db}",
            "PROV": str(tmp / "provisioning"),
            "ETC": str(tmp / "etc-hallfleet"),
            "CENTRE_MQ": str(tmp / "centre-mosquitto"),
            "CENTRE_MQ_STATE": str(tmp / "centre-mosquitto-state"),
            "HALL_MQ": str(tmp / "hall-qingpu"),
            "HALL_MQ_STATE": str(tmp / "hall-mosquitto-state"),
            "MQ_USER": "root",  # pytest's temporary directories are root's only: Mosquitto keeps root here
            "BUNDLES": str(tmp / "bundles"),
            "BACKUPS": str(tmp / "backups"),
            "SQLITE_DB": str(tmp / "sqlite" / "hallfleet.db"),
        }
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.bin = tmp / "bin"
        self.bin.mkdir()
        shim = self.bin / "hallfleet"  # `hallfleet` as installed: this checkout's code
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m hallfleet.cli "$@"\n')
        shim.chmod(0o755)
        for d in ("CENTRE_MQ_STATE", "HALL_MQ_STATE"):
            Path(self.vars[d]).mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLFLEET_", "PG", "CREDENTIALS_"))}
        path = f"{self.bin}:{env['PATH']}:/usr/sbin"
        return {**env, **self.vars, "PATH": path, "PYTHONPATH": str(REPO), **extra}

    def run_block(self, heading: str, block: str) -> str:
        if VARIABLES_MARK in block:
            return ""  # the values are ours (self.vars), the names are checked against the guide's
        script = "set -euo pipefail\n" + block
        done = subprocess.run(
            ["bash", "-c", script], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"## {heading}: the block failed ({done.returncode})\n{block}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, args: list[str], **env: str) -> None:
        log = self.tmp / f"{name}.log"
        popen = subprocess.Popen(
            args, cwd=REPO, env=self.env(**env), stdout=log.open("ab"), stderr=subprocess.STDOUT
        )  # fmt: skip
        self.procs.append((name, popen, log))

    def hallfleet(self, name: str, args: list[str], **env: str) -> None:
        self.start(name, [sys.executable, "-m", "hallfleet.cli", *args], **env)

    def stop_all(self) -> None:
        for _, popen, _ in reversed(self.procs):
            popen.terminate()
        for _, popen, _ in reversed(self.procs):
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{log.read_text(errors='replace')[-3000:]}" for n, _, log in self.procs)

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for name, popen, _ in self.procs:
                assert popen.poll() is None, f"{name} exited ({popen.returncode}) waiting for {what}\n{self.logs()}"
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def credentials(self, name: str, files: dict[str, Path]) -> str:
        """What LoadCredential= does: a private directory with the files under the names the unit gives them."""
        d = self.tmp / f"credentials-{name}"
        d.mkdir(mode=0o700)
        for target, source in files.items():
            shutil.copy(source, d / target)
        return str(d)


def scrape(port: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def metric_names(exposition: str) -> set[str]:
    """Names PromQL can use: samples, and families declared with no sample yet (a counter as NAME_total)."""
    names = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and line[0] != "#"}
    for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        name, kind = kind_line
        names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


# -- what systemd, Debian and the device do between the guide's blocks ---------------------------------------
def start_centre_broker(d: Deployment) -> None:
    d.start("centre-mosquitto", [str(find_mosquitto()), "-c", f"{d.vars['CENTRE_MQ']}/hallfleet.conf"])


def start_hall_broker(d: Deployment) -> None:
    d.start("hall-mosquitto", [str(find_mosquitto()), "-c", f"{d.vars['HALL_MQ']}/hallfleet.conf"])


def unit_env(unit: str, instance: str = "") -> dict[str, str]:
    """The Environment= lines of the repository's unit, as systemd sets them (%i: the instance)."""
    text = (REPO / "systemd" / unit).read_text()
    pairs = re.findall(r"^Environment=([A-Z0-9_]+)=(.*)$", text, re.M)
    return {k: v.replace("%i", instance) for k, v in pairs}


def start_consumer(d: Deployment) -> None:
    creds = d.credentials("consumer", {"mqtt-password": Path(d.vars["ETC"]) / "credentials/consumer-mqtt-password"})
    env = unit_env("hallfleet-consumer@.service", "centre-1")
    d.hallfleet(
        "consumer", ["consumer", "--config", f"{d.vars['ETC']}/consumer.toml"], CREDENTIALS_DIRECTORY=creds, **env
    )
    d.wait("the consumer's metrics", lambda: "hallfleet_consumer_received" in scrape(d.vars["CONSUMER_METRICS_PORT"]))


def start_api(d: Deployment) -> None:
    creds = d.credentials("api", {"mqtt-password": Path(d.vars["ETC"]) / "credentials/api-mqtt-password"})
    env = unit_env("hallfleet-api.service")
    d.hallfleet("api", ["api", "--config", f"{d.vars['ETC']}/api.toml"], CREDENTIALS_DIRECTORY=creds, **env)
    d.wait("the API", lambda: "hallfleet_devices" in scrape(d.vars["API_PORT"]))


def start_device(d: Deployment) -> None:
    """first-boot.sh's result: the bundle's credentials where LoadCredential= puts them, its agent.toml."""
    bundle = Path(d.vars["BUNDLES"]) / "qingpu.sim-1"
    creds = d.credentials("agent", {p.name: p for p in (bundle / "credentials").iterdir()})
    state = d.tmp / "device-state"
    text = (bundle / "agent.toml").read_text().replace(str(CREDENTIALS_RUN), creds).replace(str(STATE_DIR), str(state))
    cfg = d.tmp / "device-agent.toml"
    cfg.write_text(text)
    d.agent_metrics = str(free_port())  # type: ignore[attr-defined]
    d.hallfleet(
        "agent",
        ["agent", "--config", str(cfg)],
        CREDENTIALS_DIRECTORY=creds,
        HALLFLEET_METRICS_PORT=d.agent_metrics,  # type: ignore[attr-defined]
        HALLFLEET_UPDATE__ROOT=str(d.tmp / "device-opt"),
    )
    online = 'hallfleet_devices{presence="online",site="qingpu"}'
    seen: list[str] = [""]

    def is_online() -> bool:
        seen[0] = scrape(d.vars["API_PORT"])
        return online in seen[0]

    try:
        d.wait("the device online at the centre, through the hall's bridge", is_online)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- the API's /metrics ---\n{seen[0]}") from None
    d.wait("its events stored", lambda: _stored(scrape(d.vars["CONSUMER_METRICS_PORT"])) > 0)


def _stored(exposition: str) -> float:
    m = re.search(r"^hallfleet_consumer_stored_total (\S+)$", exposition, re.M)
    return float(m.group(1)) if m else 0.0


def sqlite_centre(d: Deployment) -> None:
    """A centre on SQLite for the SQLite backup step: the real schema, made as the consumer makes it."""
    Path(d.vars["SQLITE_DB"]).parent.mkdir()

    async def make() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{d.vars['SQLITE_DB']}")
        await store.close()

    asyncio.run(make())


AFTER = {
    "3.": [start_hall_broker],
    "4.": [start_centre_broker],
    "5.": [start_consumer],
    "6.": [start_api],
    "7.": [start_device],
    "9.": [sqlite_centre],
}


@pytest.fixture
def deployment(tmp_path: Path, postgres_server: LocalPostgres) -> Iterator[Deployment]:
    d = Deployment(tmp_path, postgres_server)
    try:
        yield d
    finally:
        d.stop_all()


def test_the_guide_names_the_variables_this_test_sets(tmp_path: Path) -> None:
    expected = {
        "IT", "SITE", "CENTRE", "HALL", "CENTRE_TLS_PORT", "CENTRE_MTLS_PORT", "CENTRE_LOCAL_PORT", "HALL_TLS_PORT",
        "HALL_MTLS_PORT", "API_PORT", "CONSUMER_METRICS_PORT", "STORE_URL", "PG_DSN", "PROV", "ETC", "CENTRE_MQ",
        "CENTRE_MQ_STATE", "HALL_MQ", "HALL_MQ_STATE", "MQ_USER", "BUNDLES", "BACKUPS", "SQLITE_DB",
    }  # fmt: skip
    assert set(guide_variables()) == expected
    assert len([b for _, bs in sections() for b in bs]) >= 9, "the guide lost its runnable steps"


def test_a_centre_a_bridged_hall_broker_and_a_device_stand_up_from_the_guide_alone(deployment: Deployment) -> None:
    d = deployment
    assert set(guide_variables()) == set(d.vars)
    outputs: dict[str, str] = {}
    for heading, blocks in sections():
        outputs[heading] = "".join(d.run_block(heading, b) for b in blocks)
        for step in AFTER.get(heading.split(" ", 1)[0], []):
            step(d)

    assert "ok (consumer)" in outputs["5. The consumer"] and "ok (api)" in outputs["6. The API and dashboard"]
    check = outputs["8. Check the path end to end"]
    assert (
        'hallfleet_devices{presence="online",site="qingpu"} 1.0' in check and "hallfleet_consumer_stored_total" in check
    )
    assert (Path(d.vars["BACKUPS"]) / "hallfleet.dump").stat().st_size > 0
    assert (Path(d.vars["BACKUPS"]) / "hallfleet.db").stat().st_size > 0

    # The dashboard and the alert rules name only metrics these processes serve.
    served = set()
    for port in (d.vars["CONSUMER_METRICS_PORT"], d.vars["API_PORT"], d.agent_metrics):  # type: ignore[attr-defined]
        served |= metric_names(scrape(port))
    assert metric_names_used() <= served, sorted(metric_names_used() - served)
