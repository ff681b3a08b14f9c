"""systemd's notify protocol (READY, WATCHDOG, STOPPING, STATUS): a datagram to $NOTIFY_SOCKET.

About twenty lines of stdlib rather than a dependency; without systemd (tests, the demo) every call is
a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send one notification; returns False when not run under systemd (or it cannot be reached)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec (systemd's advice), when systemd set a watchdog for this very process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def watchdog_loop() -> None:
    """Pet the watchdog from the event loop itself: a loop that hangs stops petting, and systemd
    restarts the process. Returns at once when there is no watchdog."""
    interval = watchdog_interval_s()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
