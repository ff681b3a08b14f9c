"""Real hallfleet wheels of this checkout under other version numbers, for the update tests.

Written directly as a wheel (a zip with a dist-info, RECORD with hashes, the console script), because the
project's build backend would need network access for an isolated build and takes seconds per wheel. pip then
installs them for real. No Requires-Dist: the test venvs see the dependencies through
``update.shared_site_packages``. ``patch`` replaces the text of some modules (a version whose agent cannot
start).
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The top-level packages the real build ships, read from pyproject.toml so a new package (runtime/) cannot be
# left out of the test wheels while the real ones carry it.
PACKAGES = tuple(
    pattern.rstrip("*")
    for pattern in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
)
DATA_SUFFIXES = {".py", ".conf", ".ini", ".mako", ".toml", ".html"}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out: Path, version: str, patch: dict[str, str] | None = None) -> Path:
    """``out/hallfleet-{version}-py3-none-any.whl`` from this checkout's packages."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*")):
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                files[path.relative_to(REPO).as_posix()] = path.read_bytes()
    for name, text in (patch or {}).items():
        if name not in files:
            raise KeyError(f"patch names {name}, which is not in the wheel")
        files[name] = text.encode()
    info = f"hallfleet-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: hallfleet\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests.support.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nhallfleet = hallfleet.cli:main\n"
    files[f"{info}/top_level.txt"] = ("\n".join(PACKAGES) + "\n").encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = out / f"hallfleet-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


def broken_cli() -> dict[str, str]:
    """A hallfleet whose agent exits at start (a release that cannot read its config, say)."""
    cli = (REPO / "hallfleet" / "cli.py").read_text()
    marker = "    return _run(run_until_signal(Agent(cfg)))\n"  # the agent's start, whatever checks come before it
    if marker not in cli:
        raise AssertionError("hallfleet/cli.py changed: update tests/support/wheels.py broken_cli()")
    broken = '    raise SystemExit("this build is broken: the agent exits at start")\n'
    return {"hallfleet/cli.py": cli.replace(marker, broken)}
