"""Stand-ins for the device's application, for the self-healing tests.

Run as a script (``python tests/support/apps.py MODE ...``) it is a small but real application
process: one that crashes once, an HTTP server with a /health page, one that ignores SIGTERM and has
a child of its own. Imported, it offers FakeSystemctl: this machine has no systemd as PID 1, so a
script answers ``is-active`` from a state file and records every call, standing in for the service
manager.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

APPS = Path(__file__).resolve()


def app_command(mode: str, *args: str | int | Path) -> list[str]:
    """The argv that starts this file as the application ``mode``."""
    return [sys.executable, str(APPS), mode, *(str(a) for a in args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs. A zombie counts as gone: it runs nothing, and here PID 1 (not an
    init) may never reap the grandchildren it inherits."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class FakeSystemctl:
    """A ``systemctl`` executable for one unit: ``is-active`` answers from ``state``; ``restart`` makes the
    unit active only while ``restart_fixes`` is set. Every call is logged with its time."""

    path: Path
    state_file: Path
    log_file: Path
    fixes_file: Path

    @classmethod
    def create(cls, directory: Path, state: str = "active", restart_fixes: bool = True) -> FakeSystemctl:
        fake = cls(
            directory / "systemctl",
            directory / "unit-state",
            directory / "systemctl-calls",
            directory / "restart-fixes",
        )
        fake.path.write_text(
            "#!/bin/sh\n"
            f'echo "$(date +%s.%N) $*" >> "{fake.log_file}"\n'
            'case "$1" in\n'
            "  is-active)\n"
            f'    state=$(cat "{fake.state_file}" 2>/dev/null || echo inactive)\n'
            '    echo "$state"\n'
            '    [ "$state" = active ] && exit 0\n'
            "    exit 3 ;;\n"
            "  restart)\n"
            f'    [ -e "{fake.fixes_file}" ] && echo active > "{fake.state_file}"\n'
            "    exit 0 ;;\n"
            "esac\n"
            "exit 1\n"
        )
        fake.path.chmod(0o755)
        fake.set_state(state)
        fake.set_restart_fixes(restart_fixes)
        return fake

    def set_state(self, state: str) -> None:
        self.state_file.write_text(state + "\n")

    def set_restart_fixes(self, fixes: bool) -> None:
        if fixes:
            self.fixes_file.touch()
        else:
            self.fixes_file.unlink(missing_ok=True)

    def calls(self) -> list[tuple[float, list[str]]]:
        """(wall time, arguments) of every call so far."""
        if not self.log_file.exists():
            return []
        out = []
        for line in self.log_file.read_text().splitlines():
            stamp, *args = line.split()
            out.append((float(stamp), args))
        return out

    def restarts(self) -> list[float]:
        return [t for t, args in self.calls() if args[:1] == ["restart"]]


# -- the applications -------------------------------------------------------------------------------
def crash_once(marker: Path) -> None:
    """First start: crash after 0.3 s (leaving ``marker``). Every later start: run until stopped."""
    if not marker.exists():
        marker.touch()
        time.sleep(0.3)
        sys.exit(3)
    while True:
        time.sleep(3600)


def serve_health(port: int, fail_file: Path | None) -> None:
    """/health answers 200 with this process's pid, or 500 while ``fail_file`` exists."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            failing = fail_file is not None and fail_file.exists()
            body = f"pid={os.getpid()}\n".encode()
            self.send_response(500 if failing or self.path != "/health" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def stubborn(pid_file: Path) -> None:
    """Ignores SIGTERM (so only SIGKILL stops it) and starts a child of its own that does the same."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pid_file.write_text(str(child.pid))
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "crash-once":
        crash_once(Path(args[0]))
    elif mode == "http":
        serve_health(int(args[0]), Path(args[1]) if len(args) > 1 else None)
    elif mode == "stubborn":
        stubborn(Path(args[0]))
    elif mode == "sleep":
        while True:
            time.sleep(3600)
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
