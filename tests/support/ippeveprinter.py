"""A real emulated IPP printer for the IPP driver tests: CUPS's ``ippeveprinter`` (Debian
``cups-ipp-utils``) on a free loopback port, with its supply levels and paper trays driven
through its own web forms, the way a technician would at /supplies and /media.

What running it here takes (found by trying, Debian 12, CUPS 2.4.2):

- It links Avahi and refuses to start without the system D-Bus ("Unable to initialize DNS-SD"),
  even with ``-r off``. With D-Bus up and ``-r off`` (no DNS-SD registration) it runs without
  avahi-daemon (it logs "Ignored Avahi state 101", still connecting); we start avahi-daemon
  anyway when it is installed, as other CUPS builds may need it, but do not fail without it.
- There is no systemd here, so ``ensure_system_daemons`` starts them by hand, as root:
  ``mkdir /run/dbus; dbus-daemon --system --fork`` (after removing a stale pid file) and
  ``avahi-daemon --daemonize --no-chroot``. Idempotent: a bus that answers on
  /run/dbus/system_bus_socket, or ``avahi-daemon --check`` = 0, means already running. They are
  system services shared by every test and left running on purpose; only ippeveprinter is ours.
- ``-n localhost`` (the name in its URIs and its certificate); it listens on 127.0.0.1 and ::1.
- ``-K DIR`` is needed for ipps: without it TLS fails ("Unable to create server credentials");
  with it, it makes a self-signed localhost certificate in DIR on first use.
- The forms are GETs with the values in the query (the form's own method; a POST body is not
  read) and no %-decoding: /supplies?supply0=N&supply1=N (index in printer-supply order; a
  supply left out is DROPPED from printer-supply, so always send all of them). It raises
  toner-low below 10, toner-empty at 0, marker-waste-almost-full above 90 and
  marker-waste-full at 100 (index 0 is the waste tank). /media?sizeI=&typeI=&levelI= per
  media-source index I (auto and manual have none): 0 sheets raises media-empty, under 25
  media-low; a tray left out counts as empty, so again send all.
- It keeps no page counters (printer-impressions-completed is absent).
- ``-a FILE`` (ippserver attribute lines, e.g. ``ATTR integer marker-levels 3,-3``) adds or
  replaces printer attributes; without a printer-supply line it serves none, which makes a
  marker-* only printer. It refuses -a together with -M/-m.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

SETUP_HINT = "run scripts/setup (it installs cups-ipp-utils, dbus and avahi-daemon)"
BUS_SOCKET = Path("/run/dbus/system_bus_socket")


class IppEveError(RuntimeError):
    """The emulated printer could not be started or driven; the message says what to do."""


def find_binary(name: str) -> str:
    candidates = (f"/usr/sbin/{name}", f"/usr/bin/{name}")  # sbin is not on a normal user's PATH
    found = shutil.which(name) or next((p for p in candidates if os.access(p, os.X_OK)), None)
    if found is None:
        raise IppEveError(f"{name} not found: {SETUP_HINT}")
    return found


def ensure_system_daemons() -> list[str]:
    """Start the system D-Bus and avahi-daemon unless they run; returns what it did, for logs."""
    done = []
    if not _bus_answers():
        _start_dbus()
        done.append("started dbus-daemon --system")
    avahi = shutil.which("avahi-daemon") or "/usr/sbin/avahi-daemon"
    if os.access(avahi, os.X_OK) and subprocess.run([avahi, "--check"], capture_output=True, timeout=10).returncode:
        r = subprocess.run([avahi, "--daemonize", "--no-chroot"], capture_output=True, text=True, timeout=10)
        done.append("started avahi-daemon" if r.returncode == 0 else f"avahi-daemon did not start: {r.stderr.strip()}")
    return done


def _bus_answers() -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        try:
            s.connect(str(BUS_SOCKET))
        except OSError:
            return False
    return True


def _start_dbus() -> None:
    dbus = find_binary("dbus-daemon")
    if os.geteuid() != 0:
        raise IppEveError("ippeveprinter needs the system D-Bus, which is not running and only root can start")
    BUS_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    for stale in (BUS_SOCKET.parent / "pid", BUS_SOCKET):  # left by a bus that died: dbus-daemon refuses to start
        stale.unlink(missing_ok=True)
    r = subprocess.run([dbus, "--system", "--fork"], capture_output=True, text=True, timeout=10)
    deadline = time.monotonic() + 5
    while not _bus_answers():
        if time.monotonic() > deadline:
            raise IppEveError(f"dbus-daemon --system did not come up: {r.stderr.strip() or r.returncode}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IppEvePrinter:
    """One ippeveprinter process in ``workdir``; ``start()``, drive it, ``stop()``."""

    def __init__(self, workdir: Path, name: str = "Kiosk A4", attributes: Path | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.attributes = attributes  # an ippserver attributes file (-a) instead of the built-in printer
        self.port = 0
        self.log_path = workdir / "ippeveprinter.log"
        self.popen: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 10.0) -> IppEvePrinter:
        exe = find_binary("ippeveprinter")
        notes = ensure_system_daemons()
        (self.workdir / "spool").mkdir(parents=True, exist_ok=True)
        (self.workdir / "keys").mkdir(exist_ok=True)
        for _ in range(3):  # free_port() can race another process for the port
            self.port = free_port()
            args = [exe, "-n", "localhost", "-p", str(self.port), "-r", "off", "-v"]
            args += ["-d", str(self.workdir / "spool"), "-K", str(self.workdir / "keys")]
            if self.attributes:  # -a refuses the "legacy" options -M/-m (it prints its usage)
                args += ["-a", str(self.attributes)]
            else:
                args += ["-M", "HallFleet", "-m", "Kiosk A4", "-l", "test hall"]
            with self.log_path.open("ab") as log:
                log.write(f"# {' '.join(args)}\n# {'; '.join(notes) or 'dbus/avahi already running'}\n".encode())
                log.flush()
                # Own session: a Ctrl-C to pytest does not reach it first; stop() ends it.
                self.popen = subprocess.Popen(
                    [*args, self.name], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            if self._wait_ready(timeout_s):
                return self
        raise IppEveError(f"ippeveprinter did not start; its log:\n{self.log()[-2000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.popen is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.web}/", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; always waited for, so nothing is left behind."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> IppEvePrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    @property
    def ipps_url(self) -> str:
        return f"ipps://localhost:{self.port}/ipp/print"  # the certificate names localhost

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fetch_certificate(self) -> Path:
        """Save the printer's self-signed certificate, as one would to pin it (it is made on first use)."""
        pem = ssl.get_server_certificate(("127.0.0.1", self.port), timeout=5)
        path = self.workdir / "printer.pem"
        path.write_text(pem)
        return path

    # ------------------------------------------------------------------ web forms

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.web}{path}", timeout=5) as r:
            return str(r.read().decode("utf-8", errors="replace"))

    def supplies(self) -> dict[str, int]:
        """Supply description -> level as the /supplies form shows it, in form order."""
        html = self._get("/supplies")
        found = re.findall(r'<th>([^<]*):</th><td><input name="supply(\d+)"[^>]*value="(-?\d+)"', html)
        if not found:
            raise IppEveError(f"no supply fields on /supplies (--no-web-forms, or a new page layout?):\n{html[-800:]}")
        return {desc: int(level) for desc, _, level in sorted(found, key=lambda f: int(f[1]))}

    def set_supply(self, description: str, level: int) -> dict[str, int]:
        """Set one supply (by its printer-supply-description, e.g. "Black Toner") and resend the rest."""
        current = self.supplies()
        if description not in current:
            raise IppEveError(f"no supply {description!r}; the printer has {list(current)}")
        current[description] = level
        query = urlencode({f"supply{i}": v for i, v in enumerate(current.values())})
        self._get(f"/supplies?{query}")
        return current

    def trays(self) -> dict[str, dict[str, str]]:
        """Tray (media-source) -> its form fields {index, size, type, level} as now selected."""
        html = self._get("/media")
        trays: dict[str, dict[str, str]] = {}
        for row in re.findall(r"<tr><th>([^<]*):</th><td>(.*?)</td></tr>", html, re.S):
            tray, cells = row
            fields: dict[str, str] = {}
            for field, index, options in re.findall(r'<select name="(size|type|level)(\d+)">(.*?)</select>', cells):
                fields["index"] = index
                fields[field] = _selected(options)
            if fields:
                trays[tray] = fields
        if not trays:
            raise IppEveError(f"no tray fields on /media:\n{html[-800:]}")
        return trays

    def set_tray(
        self, tray: str = "main", sheets: int = 250, size: str = "iso_a4_210x297mm", media_type: str = "stationery"
    ) -> None:
        """Load ``sheets`` of ``size`` in ``tray`` (0 = empty); the other trays keep what they hold."""
        trays = self.trays()
        if tray not in trays:
            raise IppEveError(f"no tray {tray!r}; the printer has {list(trays)}")
        trays[tray].update(size=size, type=media_type, level=str(sheets))
        query: dict[str, str] = {}
        for fields in trays.values():
            i = fields["index"]
            query[f"size{i}"] = fields.get("size", "")
            query[f"type{i}"] = fields.get("type", "")
            query[f"level{i}"] = fields.get("level", "0")
        self._get(f"/media?{urlencode(query)}")


def _selected(options_html: str) -> str:
    """The value a browser would submit for a <select>: the selected option, else the first."""
    options = re.findall(r'<option( value="[^"]*")?( selected)?>([^<]*)</option>', options_html)
    chosen = next((o for o in options if o[1]), options[0] if options else None)
    if chosen is None:
        return ""
    value_attr, _, text = chosen
    return value_attr[len(' value="') : -1] if value_attr else text  # no value attribute: the text is the value
