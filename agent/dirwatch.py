"""Wake when a directory's files change, without polling: Linux inotify, read on the event loop.

Used by the update watch while an update is in progress: the updater (another process) writes its result
there. Where inotify is missing (not Linux, or the user's inotify instances are used up) the watch is None
and the caller falls back to looking now and then; it never fails the agent.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x8, 0x80, 0x100, 0x200
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1  # noqa: B018 - absent outside Linux
    except (OSError, AttributeError):
        return None
    return libc


class DirWatch:
    """``with DirWatch(path) as changed:`` ``changed`` is an asyncio.Event set on every change in ``path``
    (the caller clears it), or None where the directory cannot be watched. Changes to the files named in
    ``ignore`` (those the caller writes itself, and their temporary copies) do not count."""

    def __init__(self, path: Path, ignore: Collection[str] = ()) -> None:
        self.path = path
        self.ignore = tuple(ignore)
        self._fd: int | None = None
        self._event: asyncio.Event | None = None

    def __enter__(self) -> asyncio.Event | None:
        libc = _libc()
        if libc is None or not self.path.is_dir():
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable (%s): watching %s by looking", os.strerror(ctypes.get_errno()), self.path)
            return None
        if libc.inotify_add_watch(fd, os.fsencode(self.path), MASK) < 0:
            log.warning("cannot watch %s (%s): looking instead", self.path, os.strerror(ctypes.get_errno()))
            os.close(fd)
            return None
        self._fd, self._event = fd, asyncio.Event()
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return self._event

    def _readable(self) -> None:
        assert self._fd is not None and self._event is not None
        names: list[str] = []
        try:
            while data := os.read(self._fd, 65_536):
                names += _names(data)
        except BlockingIOError:
            pass
        if any(not name.startswith(self.ignore) for name in names) or not self.ignore:
            self._event.set()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def _names(data: bytes) -> list[str]:
    names, at = [], 0
    while at + EVENT.size <= len(data):
        _wd, _mask, _cookie, length = EVENT.unpack_from(data, at)
        at += EVENT.size
        names.append(data[at : at + length].rstrip(b"\0").decode(errors="replace"))
        at += length
    return names
