"""The simulated board: a pty pair whose master side a thread serves, so the real driver opens a real tty
(the slave, ``path``) and speaks the real framing to it. A subclass answers requests (``answer``); ``mute``
stands for a board without power or a cut bus: requests go unanswered and the driver times out.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from pathlib import Path

from drivers.rs485.frame import Frame, FrameError, decode, frame_length


class PtyTwin:
    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.mute = False
        self.lock = threading.Lock()  # the model's state: the serving thread and the test/demo share it
        self._master, slave = os.openpty()
        tty.setraw(self._master)
        self.path = Path(os.ttyname(slave))
        self._slave = slave  # kept open so the pty survives between the driver's opens
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"twin {self.path}", daemon=True)
        self._thread.start()

    def answer(self, request: Frame) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            os.close(fd)

    def _serve(self) -> None:
        buf = b""
        # poll(), not select(): select() refuses a descriptor past FD_SETSIZE (1024), and a fleet simulator holding
        # a thousand agents' connections opens its twins' ptys well past it.
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                buf += os.read(self._master, 512)
            except OSError:
                return
            buf = self._frames(buf)

    def _frames(self, buf: bytes) -> bytes:
        while buf:
            try:
                need = frame_length(buf)
            except FrameError:
                buf = buf[1:]  # resynchronise on the next STX, as a board does
                continue
            if need is None or len(buf) < need:
                return buf
            raw, buf = buf[:need], buf[need:]
            try:
                request = decode(raw)
            except FrameError:
                continue  # a board ignores a frame that does not check out
            if request.addr != self.addr or self.mute:
                continue
            with self.lock:
                reply = self.answer(request)
            if reply is not None:
                os.write(self._master, reply.encode())
        return buf
