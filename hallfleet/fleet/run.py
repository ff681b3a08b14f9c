"""``hallfleet fleet``: run N simulated devices against a broker, playing a scenario.

With ``--mqtt host:port`` the agents connect there and nothing else runs here (point a consumer at the same
broker). Without it, a private Mosquitto and an in-process consumer on SQLite (with the demo halls' site
configs, so incidents and rules run) start in ``--dir`` and a summary is printed every 10 s and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import tempfile
from pathlib import Path

from broker.mosquitto.local import LocalMosquitto
from config.base import ConfigError
from hallfleet.fleet.scenario import builtin, load_scenario
from runtime.settings import MqttConfig

# 10,000 clients: Mosquitto's own cap off (it is -1 already in 2.x, said here so an older default does not bite).
MOSQUITTO_EXTRA = "max_connections -1\nautosave_interval 60\n"


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: every agent holds a socket (and its SQLite outbox three files);
    the broker started from here inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def parse_mqtt(value: str) -> MqttConfig:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--mqtt {value!r}: expected host:port")
    return MqttConfig(host=host, port=int(port), keepalive_s=30)


def run_fleet(args: argparse.Namespace) -> int:
    scenario = load_scenario(builtin(args.scenario))
    if args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if args.speed <= 0:
        raise ConfigError("--speed must be above 0")
    soft, _ = raise_nofile()
    need = args.devices * (1 if args.memory_outbox else 4) + 100
    if need > soft:
        hint = "" if args.memory_outbox else " (--memory-outbox needs one per device, not four)"
        print(f"warning: {args.devices} devices need about {need} file descriptors, the limit is {soft}{hint}")
    logging.getLogger().setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallfleet-fleet-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.mqtt:
            mqtt, broker = parse_mqtt(args.mqtt), None
        else:
            broker = stack.enter_context(LocalMosquitto(workdir / "mosquitto", extra_conf=MOSQUITTO_EXTRA))
            mqtt = MqttConfig(host=broker.host, port=broker.port, keepalive_s=30)
        print(f"MQTT {mqtt.host}:{mqtt.port}; files in {workdir}; scenario {scenario.name}, speed x{args.speed:g}")
        from hallfleet.fleet.play import play

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(play(args, scenario, mqtt, workdir, with_consumer=broker is not None))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=200, help="simulated devices, all halls together")
    p.add_argument("--scenario", default="workday", help="scenario TOML (a path, or workday | heartbeats)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--mqtt", default="", help="host:port of a broker (default: a private one and a consumer)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    p.add_argument("--dir", type=Path, default=None, help="keep outboxes, logs and the store here")
    p.add_argument("--memory-outbox", action="store_true", help="in-memory SQLite outboxes (scale, not durability)")
    p.add_argument(
        "--processes", type=int, default=0, help="simulator processes (0: one per core, at most one per 50 devices)"
    )
