"""``hallfleet config check|show|generate``: is this file a configuration that starts, what does the process
really run with (secrets masked), and the example configs and key reference generated from the models.

The kinds are the three processes hallfleet runs: the consumer, the API (whose TOML names the consumer's) and
the agent (one example per role). ``check`` validates exactly as the process does at start (file, then the
HALLFLEET_* environment over it), so "ok" here means the process gets past its configuration.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from config.base import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path("docs/examples")
REFERENCE = Path("docs/configuration.md")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of configuration: its model, how the process loads it, and keys only it has."""

    name: str
    model: Callable[[], type[BaseModel]]
    load: Callable[[Path], BaseModel]
    marks: frozenset[str]  # a top-level key in this set makes a file this kind


def _consumer_model() -> type[BaseModel]:
    from broker.config import ConsumerConfig

    return ConsumerConfig


def _api_model() -> type[BaseModel]:
    from broker.api.config import ApiConfig

    return ApiConfig


def _agent_model() -> type[BaseModel]:
    from agent.config import AgentConfig

    return AgentConfig


def _load_consumer(path: Path) -> BaseModel:
    from runtime.settings import load_settings

    return load_settings(_consumer_model(), path)  # type: ignore[type-var]


def _load_api(path: Path) -> BaseModel:
    from broker.api.config import load_api_config

    return load_api_config(path)  # also loads (and so checks) the consumer's TOML it names


def _load_agent(path: Path) -> BaseModel:
    from runtime.settings import load_settings

    return load_settings(_agent_model(), path)  # type: ignore[type-var]


KINDS = {
    k.name: k
    for k in (
        Kind("consumer", _consumer_model, _load_consumer, frozenset({"store", "ingest", "rules", "sites", "alerts"})),
        Kind("api", _api_model, _load_api, frozenset({"centre_config", "listen", "session_ttl_h", "cookie_secure"})),
        Kind("agent", _agent_model, _load_agent, frozenset({"site", "device", "role", "outbox", "heartbeat_s"})),
    )
}


def detect_kind(path: Path) -> str:
    """The kind whose own keys the file uses; a file that names none (or two kinds') needs --kind."""
    try:
        keys = set(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    found = sorted(name for name, kind in KINDS.items() if keys & kind.marks)
    if len(found) != 1:
        what = " and ".join(found) if found else "none"
        raise ConfigError(f"{path}: cannot tell which config this is (keys of {what}): give --kind consumer|api|agent")
    return found[0]


def load(path: Path, kind: str | None) -> tuple[str, BaseModel]:
    name = kind or detect_kind(path)
    return name, KINDS[name].load(path)


def problem_lines(path: Path, exc: ConfigError) -> list[str]:
    """One line per problem, each naming the file and the field."""
    if exc.problems:
        return [f"{path}: {loc}: {msg}" for loc, msg in exc.problems]
    return [" ".join(str(exc).split())]


# -- the subcommands ---------------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    p = sub.add_parser("config", help="check a config file, show the effective config, generate the examples")
    csub = p.add_subparsers(dest="config_action", required=True)
    c = csub.add_parser("check", help="validate FILE as its process would at start: prints ok or each bad field")
    c.add_argument("file", type=Path, help="a consumer, API or agent TOML")
    c.add_argument("--kind", choices=sorted(KINDS), default=None, help="default: told by the file's keys")
    c.set_defaults(func=cmd_check)
    s = csub.add_parser("show", help="the effective configuration (file, environment, defaults), secrets masked")
    s.add_argument("file", type=Path, help="a consumer, API or agent TOML")
    s.add_argument("--kind", choices=sorted(KINDS), default=None, help="default: told by the file's keys")
    s.set_defaults(func=cmd_show)
    g = csub.add_parser("generate", help="write docs/examples/*.toml and docs/configuration.md from the models")
    g.add_argument("--root", type=Path, default=REPO, help="the repository (default: this checkout)")
    g.set_defaults(func=cmd_generate)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        name, _ = load(args.file, args.kind)
    except ConfigError as exc:
        for line in problem_lines(args.file, exc):
            print(line, file=sys.stderr)
        return 1
    print(f"ok ({name})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from hallfleet.configdoc import render_toml

    try:
        name, cfg = load(args.file, args.kind)
    except ConfigError as exc:
        for line in problem_lines(args.file, exc):
            print(line, file=sys.stderr)
        return 1
    # The API's copy of the consumer's config is shown by `config show` on that file, not twice here.
    print(f"# effective {name} configuration of {args.file} (defaults, file, HALLFLEET_* environment); secrets masked")
    print(render_toml(cfg, mask=True, skip=frozenset({"centre"})), end="")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from hallfleet.config_examples import generate

    for rel, text in generate().items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    return 0
