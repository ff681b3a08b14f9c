"""A serial port opened raw with termios: the USB RS-485 adapter of a door controller or locker board, or the
slave side of a pty pair where the simulated twin answers (platform-notes.md: serial devices are pty pairs).

The rule: one request, one answer, within ``timeout_s``; silence, garbage or a reply from another address is a
BusError naming the port, and the port is reopened on the next request (an adapter unplugged and plugged back
comes back without restarting the agent).
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from pathlib import Path
from typing import Literal

from pydantic import Field

from config.base import Section
from drivers.rs485.frame import Frame, FrameError, decode, frame_length

BAUDS = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600,
         115200: termios.B115200}  # fmt: skip


class SerialPortConfig(Section):
    path: Path = Field(description="The serial device, e.g. /dev/ttyUSB0 (a udev symlink is steadier)")
    baud: Literal[9600, 19200, 38400, 57600, 115200] = Field(default=9600, description="Line speed")
    timeout_s: float = Field(default=0.5, gt=0, le=10, description="An answer must be complete within this")


class BusError(OSError):
    """The board did not answer properly: names the port and what to check."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why} (check the RS-485 wiring, the adapter and the board's address)")
        self.path = path
        self.why = why


class SerialPort:
    def __init__(self, cfg: SerialPortConfig) -> None:
        self.cfg = cfg
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            try:
                fd = os.open(self.cfg.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                raise BusError(self.cfg.path, f"cannot open: {exc.strerror}") from None
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = BAUDS[self.cfg.baud]  # ispeed, ospeed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            self._fd = fd
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def request(self, frame: Frame) -> Frame:
        """Send ``frame`` and return the answer from the same address (blocking: call it in a thread)."""
        fd = self._open()
        try:
            termios.tcflush(fd, termios.TCIFLUSH)  # a late answer to an earlier request is not this one's
            os.write(fd, frame.encode())
            answer = self._read_frame(fd)
        except BusError:
            raise
        except OSError as exc:  # the adapter went away: reopen next time
            self.close()
            raise BusError(self.cfg.path, f"I/O error: {exc.strerror}") from None
        if answer.addr != frame.addr or answer.cmd != frame.cmd:
            raise BusError(self.cfg.path, f"answer from address {answer.addr} cmd 0x{answer.cmd:02x}, not ours")
        return answer

    def _read_frame(self, fd: int) -> Frame:
        deadline = time.monotonic() + self.cfg.timeout_s
        buf = b""
        while True:
            try:
                need = frame_length(buf)
                if need is not None and len(buf) >= need:
                    return decode(buf[:need])
            except FrameError as exc:
                raise BusError(self.cfg.path, f"bad frame: {exc}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusError(self.cfg.path, "no answer" if not buf else f"answer cut short after {len(buf)} bytes")
            if _readable(fd, left):
                chunk = os.read(fd, 512)
                if not chunk:
                    raise BusError(self.cfg.path, "the port closed")
                buf += chunk


def _readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` has bytes within ``timeout_s``. poll(), not select(): select() refuses a descriptor past
    FD_SETSIZE (1024), which a process holding many connections (the fleet simulator's thousand agents) reaches."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000) + 1)))
