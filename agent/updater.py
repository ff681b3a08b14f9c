"""The updater: moves a device's agent to another hallfleet version, and back when the new one is not healthy.

``python -m agent.updater REQUEST.json`` runs as its own process, from the venv of the version that runs when
the update starts (the agent starts it with that venv's resolved python; under systemd it is
``hallfleet-update.service``, root and outside the agent's sandbox and cgroup, so the agent's restart does not
kill it). A broken new version therefore cannot break its own rollback.

Versions live side by side, one venv each, and the agent's unit runs them through one symlink, the current
version. It keeps the name the unit has always run (``ExecStart=/opt/hallfleet/venv/bin/hallfleet``), so units
already installed need no change; first-boot.sh lays this out::

    /opt/hallfleet/versions/1.4.2/   a venv with hallfleet==1.4.2 (".hallfleet-complete" once installed)
    /opt/hallfleet/versions/1.5.0/
    /opt/hallfleet/venv -> versions/1.5.0

Steps: install (pip, only from the centre's package store) -> check the venv reports the version -> switch the
symlink atomically -> restart the agent -> wait until the new agent writes ``health.json`` with its version,
connected to the broker -> ``result.json``. Before the switch a failure changes nothing (outcome ``failed``; the
running agent reports it). After it, the symlink goes back and ``result.json`` (``rolled_back`` and why) is
written *before* the old agent is restarted, so the agent that comes up reports it. Each step is logged to
``updater.log`` beside the request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("hallfleet.updater")

REQUEST = "request.json"
RESULT = "result.json"
HEALTH = "health.json"
LAST_RESULT = "last-result.json"
COMPLETE = ".hallfleet-complete"
PTH = "_hallfleet_shared.pth"


class UpdateError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Request:
    """What the agent asks for; written by agent/commands/update.py, read here."""

    command_id: str
    from_version: str
    to_version: str
    store: str
    health_timeout_s: float
    root: str
    state_dir: str
    previous: str  # the version directory the current link pointed at when the update started
    restart_command: list[str]
    shared_site_packages: str | None = None
    install_timeout_s: float = 900.0
    keep_versions: int = 3
    started_at: float = field(default_factory=time.time)

    @property
    def deadline(self) -> float:
        """After this the agent stops waiting for a result: install, two restarts and two health checks."""
        return self.started_at + self.install_timeout_s + 2 * self.health_timeout_s + 180

    @classmethod
    def load(cls, path: Path) -> Request | None:
        data = read_json(path)
        if data is None:
            return None
        try:
            req = cls(**data)
            float(req.deadline)  # numbers are numbers
        except (TypeError, ValueError):
            return None
        return req

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def versions_dir(root: Path) -> Path:
    return root / "versions"


def current_link(root: Path) -> Path:
    """The symlink the agent's unit runs (see the module docstring for why it is called venv)."""
    return root / "venv"


def store_args(store: str) -> list[str]:
    """The centre's package store and nothing else: an index URL, or a directory of wheels."""
    if store.startswith(("http://", "https://")):
        return ["--index-url", store]
    return ["--no-index", "--find-links", store]


def _run(argv: list[str], timeout_s: float, what: str) -> str:
    log.info("%s: %s", what, " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise UpdateError(f"{what} timed out after {timeout_s:.0f} s") from None
    except OSError as exc:
        raise UpdateError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UpdateError(f"{what} exited {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout


def install(
    root: Path,
    version: str,
    store: str,
    *,
    shared_site_packages: Path | None = None,
    timeout_s: float = 900.0,
    python: str = sys.executable,
) -> Path:
    """A venv with ``hallfleet==version`` from the store under ``root/versions/version``; kept if complete.

    The venv is created where it stays (venv scripts hold absolute paths) and marked complete last, so a
    half-installed one is removed and made again. ``shared_site_packages`` (a directory the venv also sees, after
    its own) lets a device with a thin link reuse the dependencies it has; pip then fetches only what is
    missing or of another version."""
    target = versions_dir(root) / version
    if (target / COMPLETE).exists():
        log.info("%s is already installed", target)
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _run([python, "-m", "venv", "--without-pip", str(target)], 120, "creating the venv")
    new_python = target / "bin" / "python"
    if shared_site_packages is not None:
        site = target / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        (site / PTH).write_text(f"{shared_site_packages}\n")
    pip = [python, "-m", "pip", "--isolated", "--disable-pip-version-check", "--no-input", "--python"]
    pip += [str(new_python), "install", "--quiet", *store_args(store), f"hallfleet=={version}"]
    try:
        _run(pip, timeout_s, f"installing hallfleet=={version} from {store}")
        got = _run(
            [str(new_python), "-I", "-c", "import importlib.metadata as m; print(m.version('hallfleet'))"],
            60,
            "checking the installed version",
        ).strip()
        if got != version:
            raise UpdateError(f"the new venv reports hallfleet {got}, not {version}")
    except UpdateError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    (target / COMPLETE).write_text(f"{time.time()}\n")
    return target


def switch(root: Path, target: Path) -> None:
    """Point the current link at ``target`` in one rename (relative, so a mounted image still works)."""
    tmp = root / ".venv.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, root), tmp)
    os.replace(tmp, current_link(root))
    log.info("%s -> %s", current_link(root), target)


def prune(root: Path, keep: int, protect: list[Path]) -> list[Path]:
    """Remove the oldest installed versions beyond ``keep`` (by install time), never one in ``protect``."""
    installed = [p for p in versions_dir(root).iterdir() if (p / COMPLETE).exists()]
    installed.sort(key=lambda p: (p / COMPLETE).stat().st_mtime)
    kept = {p.resolve() for p in protect}
    removable = [p for p in installed if p.resolve() not in kept]
    removed = removable[: max(0, len(installed) - keep)]
    for p in removed:
        if p.is_symlink():
            p.unlink()
        else:
            shutil.rmtree(p)
        log.info("removed the old version %s", p.name)
    return removed


def wait_healthy(state_dir: Path, version: str, since: float, timeout_s: float) -> tuple[bool, str]:
    """Until an agent of ``version`` started after ``since`` says it is connected (health.json)."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        data = read_json(state_dir / HEALTH)
        if data is not None and float(data.get("at", 0)) >= since:
            seen = data
            if data.get("version") == version and data.get("connected"):
                return True, f"{version} connected (pid {data.get('pid')})"
        time.sleep(0.2)
    if seen is None:
        return False, f"no agent reported healthy within {timeout_s:.0f} s after the restart"
    return False, f"the agent reported version {seen.get('version')}, not {version}, within {timeout_s:.0f} s"


def restart(argv: list[str]) -> None:
    _run(argv, 120, "restarting the agent")


def result(req: Request, outcome: str, reason: str = "") -> dict[str, Any]:
    return {
        "command_id": req.command_id,
        "from_version": req.from_version,
        "to_version": req.to_version,
        "outcome": outcome,
        "reason": reason[:1000],
        "at": time.time(),
    }


def update(req: Request) -> int:
    """Do it; returns the exit code (0 updated, 1 failed, 2 rolled back)."""
    root, state = Path(req.root), Path(req.state_dir)
    shared = Path(req.shared_site_packages) if req.shared_site_packages else None
    try:
        target = install(root, req.to_version, req.store, shared_site_packages=shared, timeout_s=req.install_timeout_s)
    except (UpdateError, OSError) as exc:
        log.error("install failed, nothing switched: %s", exc)
        write_json(state / RESULT, result(req, "failed", f"install failed: {exc}"))
        return 1
    since = time.time()
    (state / HEALTH).unlink(missing_ok=True)
    switch(root, target)
    try:
        restart(req.restart_command)
        ok, detail = wait_healthy(state, req.to_version, since, req.health_timeout_s)
    except UpdateError as exc:
        ok, detail = False, str(exc)
    if ok:
        log.info("updated to %s: %s", req.to_version, detail)
        write_json(state / RESULT, result(req, "updated", detail))
        try:
            prune(root, req.keep_versions, [target, Path(req.previous)])
        except OSError as exc:  # disk space is worth a line in the log, not a failed update
            log.warning("could not remove old versions: %s", exc)
        return 0
    log.error("%s is not healthy (%s): rolling back to %s", req.to_version, detail, req.previous)
    switch(root, Path(req.previous))
    write_json(state / RESULT, result(req, "rolled_back", f"{req.to_version} failed its health check: {detail}"))
    since = time.time()
    try:
        restart(req.restart_command)
        ok, detail = wait_healthy(state, req.from_version, since, req.health_timeout_s)
    except UpdateError as exc:
        ok, detail = False, str(exc)
    if ok:
        log.info("rolled back to %s: %s", req.from_version, detail)
    else:
        log.error("the old version %s did not come back either: %s", req.from_version, detail)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m agent.updater REQUEST.json", file=sys.stderr)
        return 64
    path = Path(args[0])
    req = Request.load(path)
    if req is None:
        print(f"agent.updater: {path} is missing or not an update request", file=sys.stderr)
        return 65
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s updater: %(message)s",
        handlers=[logging.FileHandler(Path(req.state_dir) / "updater.log"), logging.StreamHandler()],
    )
    log.info("update %s -> %s (command %s)", req.from_version, req.to_version, req.command_id)
    try:
        return update(req)
    except Exception as exc:  # never leave the agent without an answer
        log.exception("updater crashed")
        if read_json(Path(req.state_dir) / RESULT) is None:
            write_json(Path(req.state_dir) / RESULT, result(req, "failed", f"updater crashed: {exc!r}"))
        return 70


if __name__ == "__main__":
    sys.exit(main())
