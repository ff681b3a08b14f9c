"""``hallfleet``: one CLI; each subcommand starts code that lives in its own folder.

Rule: arguments are parsed before anything heavy is imported. ``hallfleet --help`` lists every command
from the table below without importing a single command module (it took 2 s when it imported the whole
centre); ``hallfleet X ...`` imports only the module that defines X. tests/test_cli_lazy.py checks the
table against the modules, so a help text cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from datetime import date, time
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Commands defined elsewhere: "module:function(subparsers)" -> the (name, help) of each command it adds.
LAZY: dict[str, tuple[tuple[str, str], ...]] = {
    "broker.cli:add_parsers": (
        ("cmd", "send a command to a device and follow it"),
        ("cfg", "desired configuration of a device"),
        ("audit", "the audit log (who, what, why, when, result)"),
    ),
    "broker.incidents_cli:add_parsers": (
        ("incident", "kiosk and device incidents: list, show, ack, note, report"),
        ("dispatch", "on-site dispatches"),
        ("alerts", "notifications: what was sent, what failed"),
        ("task", "site staff tasks: restock, cleaning, inspection"),
        ("refill", "record a consumable refill: hallfleet refill SITE/DEVICE thermal_paper"),
        ("service", "record cleaning or a joint inspection: hallfleet service SITE/DEVICE clean"),
        ("report", "reports"),
    ),
    "broker.gallery_cli:add_parsers": (("gallery", "face galleries of the attendance terminals"),),
    "broker.attendance_cli:add_parsers": (
        ("staff", "the staff roster (花名册) of the halls"),
        ("leave", "register attendance exceptions: leave, evidence, meetings, duty ..."),
    ),
    "broker.attendance.reports_cli:add_parsers": (
        ("attendance", "attendance reports: daily exceptions, weekly, monthly, terminal faults"),
    ),
    "provisioning.cli:add_parsers": (
        ("provision", "device identities, credentials, install bundles and broker files (IT)"),
    ),
    "provisioning.updates_cli:add_parsers": (
        ("update", "update agents to a hallfleet version (canaries first) and see versions"),
    ),
    "broker.ratings.cli:add_parsers": (
        ("ratings", "好差评: ratings, proxy-rating flags, negative-rating follow-ups, report"),
    ),
    "broker.queueing.cli:add_parsers": (("queue", "排队叫号: tickets waiting now, the monthly 10/30/60 report"),),
    "broker.duties.cli:add_parsers": (
        ("duties", "日常值守: the monthly network check, power-on/off, patrol and access workbook"),
    ),
    "broker.api.cli:add_parsers": (
        ("api", "run the REST API and the web dashboard (uvicorn)"),
        ("user", "people who log in to the API and dashboard"),
    ),
    "hallfleet.config_cli:add_parsers": (
        ("config", "check a config file, show the effective config, generate the examples"),
    ),
    "hallfleet.cli:add_fleet_parser": (
        ("fleet", "thousands of simulated devices of every role, in several processes, playing a scenario"),
    ),
}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    try:
        import uvloop  # the consumer's per-message overhead is the event loop's (platform-notes.md)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.agent import Agent, run_until_signal
    from agent.config import AgentConfig
    from runtime.settings import load_settings

    cfg = load_settings(AgentConfig, args.config)
    cfg.check_files()  # TLS files, password, outbox directory: one line each, before anything opens
    return _run(run_until_signal(Agent(cfg)))


def cmd_consumer(args: argparse.Namespace) -> int:
    from broker.config import ConsumerConfig
    from broker.consumer import StartupError, run_consumer
    from runtime.settings import load_settings

    cfg = load_settings(ConsumerConfig, args.config)
    try:
        _run(run_consumer(cfg))
    except StartupError as exc:  # expected: one line saying what is wrong; the traceback only with -v
        import logging

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


def add_fleet_parser(sub: Any) -> None:
    from hallfleet.fleet.run import add_arguments

    name, help_ = LAZY["hallfleet.cli:add_fleet_parser"][0]
    f = sub.add_parser(name, help=help_)
    add_arguments(f)
    f.set_defaults(func=cmd_fleet)


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the chosen command's module is imported and adds its real parser; every
    other command is listed by name and help only. ``argv`` None: every module (the full parser)."""
    chosen = chosen_command(argv) if argv is not None else None
    p = argparse.ArgumentParser(prog="hallfleet", description="Device fleet for government service halls")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("agent", help="run the edge agent on a device")
    a.add_argument("--config", type=Path, required=True, help="agent TOML file")
    a.set_defaults(func=cmd_agent)

    c = sub.add_parser("consumer", help="run the central consumer (ingest -> store, presence)")
    c.add_argument("--config", type=Path, help="consumer TOML file (defaults + environment without it)")
    c.set_defaults(func=cmd_consumer)

    for loader, commands in LAZY.items():
        if argv is None or chosen in {name for name, _ in commands}:
            module, function = loader.split(":")
            getattr(import_module(module), function)(sub)
        else:
            for name, help_ in commands:
                sub.add_parser(name, help=help_, add_help=False)

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

    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    import logging  # after parsing: --help and a usage error import nothing they do not show

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 2


def _is_config_error(exc: Exception) -> bool:
    """A ConfigError can only come from config.base once something imported it: never import it here."""
    base = sys.modules.get("config.base")
    return base is not None and isinstance(exc, base.ConfigError)


if __name__ == "__main__":
    sys.exit(main())
