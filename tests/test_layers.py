"""The layers keep their imports: protocol/ is the wire contract and imports no MQTT client, no config loading and
none of the packages that use it; config/base.py (what every config model builds on) imports pydantic alone; and
drivers/ know nothing of MQTT, the running process, roles or the centre.

Imports are read from the source wherever they stand (top, inside a function, under TYPE_CHECKING): a lazy import
of paho is still a driver that knows MQTT. A second check imports the contract in a fresh interpreter and reads
what it loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
# The contract's models and bounds are pydantic; signatures are cryptography's Ed25519; the face gallery's
# encodings are numpy arrays (imported by the functions that pack them, never at import time).
PROTOCOL_MAY_USE = STDLIB | {"pydantic", "pydantic_core", "annotated_types", "cryptography", "numpy", "protocol"}
CONFIG_BASE_MAY_USE = STDLIB | {"pydantic"}
# What a driver must not know: the MQTT client, the running process (transport, settings loader, sd_notify),
# the settings loader's library, roles and the agent, the centre, provisioning, the CLI.
DRIVERS_MUST_NOT_USE = {"paho", "runtime", "pydantic_settings", "agent", "broker", "provisioning", "hallfleet"}


def imported_packages(source: str) -> set[str]:
    """The top-level package of every absolute import in ``source``, wherever the statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def packages_by_file(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_packages(p.read_text()) for p in sorted((ROOT / folder).rglob("*.py"))}


def test_the_import_reader_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from runtime.transport import TlsFiles\n"
        "def f():\n    import paho.mqtt.client\n"
        "from . import sibling\n"
    )
    assert imported_packages(source) == {"typing", "runtime", "paho"}


def test_protocol_imports_only_the_contracts_own_libraries() -> None:
    found = packages_by_file("protocol")
    assert "protocol/topics.py" in found and "protocol/envelope.py" in found
    wrong = {path: sorted(pkgs - PROTOCOL_MAY_USE) for path, pkgs in found.items() if pkgs - PROTOCOL_MAY_USE}
    assert wrong == {}, f"protocol/ is the wire contract only; these modules import more: {wrong}"


def test_the_config_base_imports_pydantic_and_the_standard_library_only() -> None:
    found = packages_by_file("config")
    assert "config/base.py" in found
    wrong = {path: sorted(pkgs - CONFIG_BASE_MAY_USE) for path, pkgs in found.items() if pkgs - CONFIG_BASE_MAY_USE}
    assert wrong == {}, f"drivers build on config/: it may not load more than pydantic: {wrong}"


def test_no_driver_imports_mqtt_the_runtime_roles_or_the_centre() -> None:
    found = packages_by_file("drivers")
    assert len(found) > 30 and "drivers/keypad.py" in found
    wrong = {path: sorted(pkgs & DRIVERS_MUST_NOT_USE) for path, pkgs in found.items() if pkgs & DRIVERS_MUST_NOT_USE}
    assert wrong == {}, f"drivers know nothing of MQTT, the running process, roles or the centre: {wrong}"


def test_importing_the_contract_and_the_config_base_loads_no_mqtt_client_and_no_settings_loader() -> None:
    """Every module under protocol/ and config/, imported in one fresh interpreter."""
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for folder in ("protocol", "config")
        for p in sorted((ROOT / folder).rglob("*.py"))
    ]
    probe = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"protocol", "config", "pydantic"} <= loaded, "the probe did not import the modules"
    assert loaded.isdisjoint({"paho", "pydantic_settings", "runtime"}), sorted(
        loaded & {"paho", "pydantic_settings", "runtime"}
    )
