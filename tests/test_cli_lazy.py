"""The CLI parses before it imports: ``hallfleet --help`` loads no command module, a command loads only its own,
and the table of lazily loaded commands says exactly what their modules add."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import import_module

import pytest

from hallfleet import cli

HEAVY = ("broker", "agent", "provisioning", "protocol", "pydantic", "sqlalchemy", "fastapi", "paho", "asyncio")


def modules_after(code: str) -> list[str]:
    """Top-level packages imported by running ``code`` in a fresh interpreter."""
    probe = (
        f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
        "print(__import__('json').dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def loaded(mods: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in mods if m.split(".")[0] in names})


def test_help_imports_no_command_module() -> None:
    mods = modules_after("from hallfleet.cli import main; main(['--help'])")
    assert loaded(mods, HEAVY) == []


def test_help_lists_every_command() -> None:
    text = cli.build_parser([]).format_help()
    for commands in cli.LAZY.values():
        for name, _ in commands:
            assert name in text


def test_agent_command_loads_no_centre_code() -> None:
    mods = modules_after("from hallfleet.cli import build_parser; build_parser(['agent', '--config', 'x.toml'])")
    assert loaded(mods, HEAVY) == []
    mods = modules_after("import agent.agent, agent.config")
    assert loaded(mods, ("broker", "sqlalchemy", "fastapi", "provisioning", "aiosqlite", "cv2", "numpy")) == []


def test_a_lazily_loaded_command_gets_its_real_parser() -> None:
    args = cli.build_parser(["cmd", "show", "x"]).parse_args(["cmd", "show", "x"])
    assert args.command == "cmd" and callable(args.func)


@pytest.mark.parametrize("loader", list(cli.LAZY))
def test_the_table_matches_what_each_module_adds(loader: str) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    module, function = loader.split(":")
    getattr(import_module(module), function)(sub)
    added = tuple((a.dest, a.help) for a in sub._choices_actions)
    assert added == cli.LAZY[loader], f"update hallfleet/cli.py LAZY for {loader}"
