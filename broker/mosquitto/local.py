"""A private Mosquitto broker on a free loopback port, for `hallfleet demo` and the tests.

The system broker (if any) is never used: each LocalMosquitto owns its config, persistence and
log in its own work directory, so a demo or a test can kill and restart "the broker" without
touching anything else on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it; there is a small race until the broker binds it, which is acceptable
    for a private broker (a clash shows up as a clear start() failure, not a silent misroute).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> Path:
    """Locate the mosquitto binary; Debian puts it in /usr/sbin, which is not on every PATH."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if FALLBACK_BINARY.is_file():
        return FALLBACK_BINARY
    raise RuntimeError("mosquitto binary not found: run scripts/setup to install it")


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _port_is_free(host: str, port: int) -> bool:
    """True when nobody listens on the port (TIME_WAIT leftovers of a previous run do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option Mosquitto sets, so a restart right after stop() is not refused.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _death_signal_hook() -> Callable[[], None] | None:
    """Build a preexec_fn that makes the child die with its parent (Linux only).

    Without it a crashed or SIGKILLed demo would leave a broker holding its port. libc is loaded
    here, in the parent, so the child after fork() only makes one plain system call.
    Caveat of PR_SET_PDEATHSIG: it fires when the *thread* that spawned the child exits, so call
    start() from a long-lived thread (the main thread, or the event loop's thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


class LocalMosquitto:
    """A Mosquitto process owned by this object, listening on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.workdir = Path(workdir)
        self._port = port if port is not None else free_port()
        self._extra_conf = extra_conf
        self._binary = find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None
        self.conf_path = self.workdir / "mosquitto.conf"
        self.persistence_dir = self.workdir / "persistence"
        self.stderr_path = self.workdir / "mosquitto.stderr"

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config_text(self) -> str:
        """The broker config; the limits mirror hallfleet.conf so tests see production behaviour."""
        lines = [
            f"listener {self._port} {HOST}",
            # Anonymous until the provisioning work brings per-device passwords and ACLs.
            "allow_anonymous true",
            "persistence true",
            # Trailing slash: Mosquitto 1.x appends the file name to this prefix without adding one.
            f"persistence_location {self.persistence_dir}/",
            # Persistence is a periodic snapshot, not a journal: save every second so that a
            # test restarting the broker finds the sessions and retained messages it just made.
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            # Stock limits (1000 queued, 20 in flight) silently drop a slow consumer's backlog.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "persistent_client_expiration 1d",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root, Mosquitto switches to the "mosquitto" user, which cannot reach a private
            # work dir (pytest's are mode 0700); "root" tells it to keep the current user.
            lines.append("user root")
        return "\n".join(lines) + "\n" + self._extra_conf + "\n"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        return self.conf_path

    def start(self) -> None:
        """Spawn the broker and return once its port accepts TCP connections."""
        if self.is_running:
            raise RuntimeError(f"mosquitto already running on {HOST}:{self._port}")
        # Checked first because the readiness probe cannot tell our broker from another listener.
        if not _port_is_free(HOST, self._port):
            raise RuntimeError(f"{HOST}:{self._port} is already in use; cannot start mosquitto there")
        self.write_config()
        self._proc = self._spawn()
        self._wait_until_listening()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Config errors are printed to stderr before the log file is opened: keep them.
        with self.stderr_path.open("ab") as stderr:
            return subprocess.Popen(
                [str(self._binary), "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Own session: a terminal's Ctrl-C reaches only the demo, which then stops the
                # broker in order (and a clean stop is what writes the persistence file).
                start_new_session=True,
                preexec_fn=_death_signal_hook(),
            )

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise self._start_error("exited during start-up")
            if _port_accepts(HOST, self._port) and self._proc.poll() is None:
                return
            time.sleep(0.02)
        self.kill()
        raise self._start_error(f"did not accept connections within {START_TIMEOUT_S:.0f} s")

    def _start_error(self, what: str) -> RuntimeError:
        code = self._proc.returncode if self._proc is not None else None
        return RuntimeError(
            f"mosquitto on {HOST}:{self._port} {what} (exit code {code}).\n"
            f"--- {self.stderr_path} ---\n{_tail(self.stderr_path)}\n"
            f"--- {self.log_path} ---\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM and wait: on a clean exit Mosquitto writes its persistence file."""
        self._signal_and_wait(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: simulates a crash; anything since the last autosave is lost."""
        self._signal_and_wait(signal.SIGKILL)

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Start again on the same port with the same persistence (stopping first if running)."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalMosquitto:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort if the owner forgot stop(): never leave an orphan broker on the port.
        with contextlib.suppress(Exception):
            self.kill()
