"""The attendance terminal's camera: OpenCV's VideoCapture, as an async stream of BGR frames.

``Camera.frames()`` yields at most ``fps`` frames a second, each scaled down (aspect kept) to fit
``width`` x ``height``. Two kinds of source behave differently, on purpose:

- A live source (a device index, an RTSP/HTTP URL) is read by a thread of its own that drains the
  stream at the camera's rate and keeps only the newest frame. Reading a 25 fps stream 5 times a
  second instead would hand out frames seconds old, from FFmpeg's and the driver's buffers. When
  the stream drops (an IP camera rebooting, a cable, Wi-Fi), the thread reopens it with capped,
  jittered exponential backoff, forever; ``drops`` counts it.
- A video file or image sequence (``frames/%04d.jpg``) is the camera's twin on machines without
  one (tests, the demo). It is read in ``asyncio.to_thread``, every frame on the ``fps`` grid of
  the file's own timeline, played in real time; the end of the file ends ``frames()``, unless
  ``loop``.

CameraError, at the start only: the source cannot be opened at all (a wrong path, index or URL,
a camera that is not there or not ours). An IP camera that boots slower than the terminal after
a power cut fails the first open too: the role restarts the camera (its TaskGroup) rather than
this driver retrying a source that may be wrong forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from config.base import Section

if TYPE_CHECKING:  # numpy (and OpenCV) load only when a camera is opened: an agent without one stays lean
    import numpy as np

log = logging.getLogger(__name__)


class CameraError(Exception):
    """The source cannot be opened; ``source`` names it, the message says what to check."""

    def __init__(self, source: int | str, reason: str) -> None:
        super().__init__(f"camera {source!r}: {reason}")
        self.source = source
        self.reason = reason


class CameraConfig(Section):
    source: int | str = Field(
        description="Device index (0 = /dev/video0), an RTSP/HTTP URL, or a video file / image sequence path"
    )
    fps: float = Field(default=5.0, gt=0, le=60, description="Frames analysed per second, at most")
    width: int = Field(default=640, ge=64, le=4096, description="Frames are scaled down to fit this width")
    height: int = Field(default=480, ge=48, le=4096, description="Frames are scaled down to fit this height")
    loop: bool = Field(default=False, description="Replay a file source forever (the demo); live sources reopen")
    timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="A stream that delivers nothing for this long has dropped (URLs)"
    )
    reopen_initial_s: float = Field(default=1.0, gt=0, description="First delay before reopening a dropped stream")
    reopen_max_s: float = Field(default=30.0, gt=0, description="Reopen delay cap")

    @field_validator("source", mode="before")
    @classmethod
    def _index(cls, value: object) -> object:
        """A string of digits (TOML, the environment) is a device index, not a file called "0"."""
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @model_validator(mode="after")
    def _backoff(self) -> CameraConfig:
        if self.reopen_max_s < self.reopen_initial_s:
            raise ValueError("reopen_max_s must be at least reopen_initial_s")
        return self

    @property
    def live(self) -> bool:
        """A device or a stream (read continuously), as opposed to a file (read on demand)."""
        return isinstance(self.source, int) or "://" in self.source


class Camera:
    """Frames from one source. ``frames()`` may be iterated once at a time; stopping the iteration
    (break, cancel) releases the device."""

    def __init__(self, cfg: CameraConfig) -> None:
        self._cfg = cfg
        self.drops = 0  # live stream lost and reopened (health)
        self.delivered = 0  # frames handed out by frames()

    async def frames(self) -> AsyncIterator[np.ndarray]:
        source = self._file_frames() if not self._cfg.live else self._live_frames()
        async for frame in source:
            self.delivered += 1
            yield _fit(frame, self._cfg.width, self._cfg.height)

    async def _file_frames(self) -> AsyncIterator[np.ndarray]:
        import cv2

        cfg = self._cfg
        capture, first = await asyncio.to_thread(_open, cfg)
        frame: np.ndarray | None = first  # the next frame to place on the timeline, once read
        try:
            rate = capture.get(cv2.CAP_PROP_FPS)
            rate = rate if 0 < rate < 1000 else cfg.fps  # FFmpeg plays image sequences at 25; other backends say 0
            loop = asyncio.get_running_loop()
            started, offset, index, due = loop.time(), 0.0, 0, 0.0
            while True:
                if frame is None:
                    ok, frame = await asyncio.to_thread(capture.read)
                    if not ok:
                        if not cfg.loop:
                            return
                        offset, index = offset + index / rate, 0
                        capture, frame = await asyncio.to_thread(_rewind, capture, cfg)
                        continue
                at = offset + index / rate  # where this frame sits on the file's timeline
                index += 1
                current, frame = frame, None
                if at + 1e-6 < due:
                    continue  # between two analysed frames
                due = max(due + 1.0 / cfg.fps, at)
                await asyncio.sleep(max(0.0, started + at - loop.time()))
                yield current
        finally:
            await asyncio.to_thread(capture.release)

    async def _live_frames(self) -> AsyncIterator[np.ndarray]:
        cfg = self._cfg
        reader = _LiveReader(cfg, *await asyncio.to_thread(_open, cfg), camera=self)
        reader.start()
        loop = asyncio.get_running_loop()
        try:
            seen, next_at = 0, loop.time()
            while True:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                frame, seen = await reader.newer_than(seen)
                next_at = max(next_at + 1.0 / cfg.fps, loop.time())
                yield frame
        finally:
            reader.stop()
            await asyncio.to_thread(reader.join)  # at most one read: timeout_s on a stalled stream


class _LiveReader(threading.Thread):
    """Owns the VideoCapture of a live source: reads every frame, keeps the newest, reopens on a drop."""

    def __init__(self, cfg: CameraConfig, capture: Any, first: np.ndarray, *, camera: Camera) -> None:
        super().__init__(name=f"camera {cfg.source}", daemon=True)
        self._cfg = cfg
        self._capture: Any = capture
        self._camera = camera
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._frame = first
        self._seq = 1
        self._loop = asyncio.get_running_loop()
        self._fresh = asyncio.Event()
        self._failed: BaseException | None = None

    async def newer_than(self, seq: int) -> tuple[np.ndarray, int]:
        """The newest frame once there is one newer than ``seq``, and its number."""
        while True:
            with self._lock:
                if self._failed is not None:
                    raise CameraError(self._cfg.source, f"reader thread failed: {self._failed!r}")
                if self._seq > seq:
                    return self._frame, self._seq
                self._fresh.clear()
            await self._fresh.wait()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._read_forever()
        except Exception as exc:  # an OpenCV error we did not foresee: frames() raises it, not hangs
            log.exception("camera %r: reader thread failed", self._cfg.source)
            with self._lock:
                self._failed = exc
            self._wake()
        finally:
            if self._capture is not None:
                self._capture.release()

    def _wake(self) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._fresh.set)
        except RuntimeError:  # the event loop is gone (closed without closing frames())
            return False
        return True

    def _read_forever(self) -> None:
        failures = 0
        while not self._stop_event.is_set():
            if self._capture is None:
                self._capture = self._reopen(failures)
                failures = 0 if self._capture is not None else failures + 1
                continue
            ok, frame = self._capture.read()
            if not ok:
                self._capture.release()
                self._capture = None
                self._camera.drops += 1
                log.warning("camera %r: stream dropped (%d so far); reopening", self._cfg.source, self._camera.drops)
                continue
            with self._lock:
                self._frame, self._seq = frame, self._seq + 1
            if not self._wake():
                return

    def _reopen(self, failures: int) -> Any:
        cfg = self._cfg
        delay = min(cfg.reopen_max_s, cfg.reopen_initial_s * 2**failures) * random.uniform(0.5, 1.0)
        if self._stop_event.wait(delay):
            return None
        try:
            capture, first = _open(cfg)
        except CameraError as exc:
            log.warning("%s (attempt %d; next in up to %.1f s)", exc, failures + 1, delay * 2)
            return None
        with self._lock:
            self._frame, self._seq = first, self._seq + 1
        return capture


def _open(cfg: CameraConfig) -> tuple[Any, np.ndarray]:
    """An opened VideoCapture and its first frame, or CameraError saying what to check."""
    import cv2  # here, not at import: agents without the face extra load this module's config

    source = cfg.source
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        hint = f"is /dev/video{source} there (v4l2-ctl --list-devices) and may this user open it (group video)?"
    elif "://" in source:
        timeout_ms = int(cfg.timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        hint = "check the URL, the camera's user and password, and that it is reachable (ffprobe URL)"
    else:
        if "%" not in source and not Path(source).is_file():
            raise CameraError(source, "no such file: set source to a video file, an image sequence, a URL or an index")
        capture = cv2.VideoCapture(source)
        hint = "OpenCV cannot decode it: is it a video (or frame%04d.jpg sequence) FFmpeg can read?"
    if not capture.isOpened():
        raise CameraError(source, f"cannot be opened: {hint}")
    ok, first = capture.read()
    if not ok:  # some sources open fine and never deliver (a wrong RTSP path, an empty file)
        capture.release()
        raise CameraError(source, f"opened but delivers no frames: {hint}")
    return capture, first


def _rewind(capture: Any, cfg: CameraConfig) -> tuple[Any, np.ndarray | None]:
    """Back to the first frame of a file; reopened where seeking is not supported (image sequences)."""
    import cv2  # here, not at import: agents without the face extra load this module's config

    if capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
        return capture, None
    capture.release()
    return _open(cfg)


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scaled down, aspect kept, to fit width x height; never scaled up (that adds nothing)."""
    import cv2  # here, not at import: agents without the face extra load this module's config

    scale = min(width / frame.shape[1], height / frame.shape[0])
    if scale >= 1.0:
        return frame
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
