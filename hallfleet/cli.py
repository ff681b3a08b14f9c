"""``hallfleet``: one CLI; each subcommand starts code that lives in its own folder."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from datetime import date, time
from pathlib import Path
from typing import Any, TypeVar

from protocol.settings import ConfigError, load_settings

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # the consumer's per-message overhead is the event loop's (platform-notes.md)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.agent import Agent, run_until_signal
    from agent.config import AgentConfig

    cfg = load_settings(AgentConfig, args.config)
    return _run(run_until_signal(Agent(cfg)))


def cmd_consumer(args: argparse.Namespace) -> int:
    from broker.config import ConsumerConfig
    from broker.consumer import StartupError, run_consumer

    cfg = load_settings(ConsumerConfig, args.config)
    try:
        _run(run_consumer(cfg))
    except StartupError as exc:  # expected: one line saying what is wrong; the traceback only with -v
        logging.getLogger("hallfleet").debug("start-up failed", exc_info=True)
        print(f"hallfleet consumer: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hallfleet.demo import run_demo

    return run_demo(args)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be above 0")
    return value


def cmd_fleet(args: argparse.Namespace) -> int:
    from hallfleet.fleet.run import run_fleet

    return run_fleet(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hallfleet", description="Device fleet for government service halls")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("agent", help="run the edge agent on a device")
    a.add_argument("--config", type=Path, required=True, help="agent TOML file")
    a.set_defaults(func=cmd_agent)

    c = sub.add_parser("consumer", help="run the central consumer (ingest -> store, presence)")
    c.add_argument("--config", type=Path, help="consumer TOML file (defaults + environment without it)")
    c.set_defaults(func=cmd_consumer)

    from broker.api.cli import add_parsers as add_api_parsers
    from broker.attendance.reports_cli import add_parsers as add_attendance_report_parsers
    from broker.attendance_cli import add_parsers as add_attendance_parsers
    from broker.cli import add_parsers as add_centre_parsers
    from broker.gallery_cli import add_parsers as add_gallery_parsers
    from broker.incidents_cli import add_parsers as add_incident_parsers
    from broker.ratings.cli import add_parsers as add_rating_parsers
    from provisioning.cli import add_parsers as add_provisioning_parsers
    from provisioning.updates_cli import add_parsers as add_update_parsers
    from hallfleet.config_cli import add_parsers as add_config_parsers

    add_centre_parsers(sub)
    add_incident_parsers(sub)
    add_gallery_parsers(sub)
    add_attendance_parsers(sub)
    add_attendance_report_parsers(sub)
    add_provisioning_parsers(sub)
    add_update_parsers(sub)
    add_rating_parsers(sub)
    add_api_parsers(sub)
    add_config_parsers(sub)

    d = sub.add_parser(
        "demo", help="two demo halls on simulated hardware: broker, consumer, API and dashboard, alerts, reports"
    )
    d.add_argument("--devices", type=int, default=20, help="devices per hall (about 20: terminals, kiosks, pads)")
    d.add_argument("--speed", type=_positive, default=120.0, help="hall time runs this many times faster (120)")
    d.add_argument("--day-start", type=time.fromisoformat, default=None, help="hall time the day starts (08:00)")
    d.add_argument("--date", type=date.fromisoformat, default=None, help="the working day played (latest)")
    d.add_argument("--scenario", type=Path, default=None, help="the day's script (hallfleet/scenarios/demo-day.toml)")
    d.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at the day's end)")
    d.add_argument("--dir", type=Path, default=None, help="keep the demo's files here (default: a temp dir)")
    d.set_defaults(func=cmd_demo)

    from hallfleet.fleet.run import add_arguments as add_fleet_arguments

    f = sub.add_parser("fleet", help="thousands of simulated devices of every role in one process, playing a scenario")
    add_fleet_arguments(f)
    f.set_defaults(func=cmd_fleet)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
