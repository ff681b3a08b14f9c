"""A ZhianTec ZFM / R30x fingerprint module (R305, R307, R503, AS608) on USB bulk endpoints, via pyusb.

The module does the biometrics itself: it captures, extracts features, keeps the templates in its
flash and searches them. The host sends command packets and reads acks (protocol.py); every
operation is built on one primitive, ``_call(instruction, params) -> (code, data)``.

What the link survives, and why:
- A garbled reply (header, address, checksum, size) or the module's own "garbled packet" code is
  sent again once, but only for commands that are safe to repeat (GenImg, Search, TemplateNum,
  ReadSysPara): Store, DeleteChar and Empty are never sent twice behind the caller's back.
- A timeout raises FingerTimeout. The module may still answer late, and an ack does not name its
  command, so the input is drained before the next command instead of being read as its answer.
- A reply may come split over several bulk reads: bytes accumulate until the length field's count
  is there, all within one ``timeout_ms``.
- Any other USB error means the device is gone: FingerDisconnected, the handle is closed, and the
  next call finds the device again by VID:PID (a replugged device is a new device).
- One lock serialises the calls: the agent calls from worker threads, and two threads' commands
  interleaved on one pipe would read each other's acks. ``touched()``, the idle poll, does not wait for
  it: a reader held by another call is busy, not idle.
- An enrolment can be called off (``cancel``) only while it waits for the finger: a thread cannot be
  killed, and a caller that stops waiting for it must not take the reader while it still writes the
  library (agent/roles/attendance.py waits for it to end).

pyusb is imported where a device is opened or read, never at module level: every agent's config names this
model, and an agent without a USB device must not load pyusb (tests/test_lean_roles.py).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from config.base import Section
from drivers.fingerprint.errors import (
    CaptureError,
    EnrollCancelled,
    EnrollMismatch,
    FingerAccessDenied,
    FingerDisconnected,
    FingerError,
    FingerNotFound,
    FingerTimeout,
    LibraryFull,
    ModuleError,
    ProtocolError,
    WrongPassword,
)
from drivers.fingerprint.protocol import (
    DEFAULT_ADDRESS,
    HEAD_SIZE,
    Code,
    Instruction,
    Packet,
    PacketId,
    SystemParameters,
    command,
    decode,
    describe,
    packet_size,
)
from drivers.usbdev import dispose, hex_id

if TYPE_CHECKING:
    import usb.core
    import usb.util

log = logging.getLogger(__name__)

_DENIED = {errno.EACCES, errno.EPERM, errno.EBUSY}
_IDEMPOTENT = frozenset({Instruction.GEN_IMG, Instruction.SEARCH, Instruction.TEMPLATE_NUM, Instruction.READ_SYS_PARA})
# Data bytes after the confirmation code of a successful ack; a different size is a garbled reply.
_DATA_SIZE = {Instruction.SEARCH: 4, Instruction.MATCH: 2, Instruction.TEMPLATE_NUM: 2, Instruction.READ_SYS_PARA: 16}
_DRAIN_MS = 20  # a late reply is already on its way when we drain; this only waits for its last bulk packet
_DRAIN_READS = 64  # bound: a device that never stops talking must not hang the drain
_ERRORS: dict[int, type[ModuleError]] = {
    Code.NO_FINGER: CaptureError,
    Code.IMAGE_FAILED: CaptureError,
    Code.IMAGE_MESSY: CaptureError,
    Code.TOO_FEW_FEATURES: CaptureError,
    Code.NO_VALID_IMAGE: CaptureError,
    Code.NOT_MATCHING: EnrollMismatch,
    Code.MERGE_FAILED: EnrollMismatch,
    Code.PAGE_OUT_OF_RANGE: LibraryFull,
    Code.LIBRARY_FULL: LibraryFull,
    Code.WRONG_PASSWORD: WrongPassword,
    Code.PASSWORD_REQUIRED: WrongPassword,
}


def failure(device: str, code: int, doing: str) -> FingerError:
    """The typed error for a failure confirmation code, saying what we were doing."""
    if code == Code.PACKET_ERROR:
        return ProtocolError(device, f"{doing}: {describe(code)}", code)
    return _ERRORS.get(code, ModuleError)(device, f"{doing}: {describe(code)}", code)


def _hex_if_prefixed(value: object) -> object:
    """Addresses and passwords are written 0xFFFFFFFF in the datasheets; a bare string stays decimal."""
    if isinstance(value, str) and value.strip().lower().startswith("0x"):
        return int(value.strip(), 16)
    return value


class ZfmConfig(Section):
    type: Literal["zfm"] = Field(default="zfm", description="Driver selector: a ZhianTec ZFM/R30x module on USB")
    vendor_id: int = Field(ge=0, le=0xFFFF, description='USB vendor id as `lsusb` shows it; strings are hex ("0x2109")')
    product_id: int = Field(ge=0, le=0xFFFF, description="USB product id as `lsusb` shows it; strings are hex")
    address: int = Field(
        default=DEFAULT_ADDRESS, ge=0, le=0xFFFFFFFF, description="Module address; 0xFFFFFFFF unless someone changed it"
    )
    password: int = Field(
        default=0, ge=0, le=0xFFFFFFFF, description="Module password, checked with VfyPwd on open; 0 unless changed"
    )
    timeout_ms: int = Field(
        default=2000, ge=10, le=60_000, description="How long one reply may take (a GenImg takes up to about 0.5 s)"
    )
    capacity: int = Field(
        default=300, ge=1, le=0xFFFF, description="Library pages used, 0..capacity-1; lowered to the module's own size"
    )
    min_score: int = Field(default=50, ge=0, le=0xFFFF, description="A Search match scoring below this is no match")

    @field_validator("vendor_id", "product_id", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        return hex_id(value)

    @field_validator("address", "password", mode="before")
    @classmethod
    def _prefixed(cls, value: object) -> object:
        return _hex_if_prefixed(value)

    @property
    def device_name(self) -> str:
        return f"zfm {self.vendor_id:04x}:{self.product_id:04x}"


@dataclass(frozen=True, slots=True)
class EnrolStep:
    """What an enrolment waits for next: capture ``capture`` (1-based) pressed, or the finger lifted before it."""

    capture: int
    wait_for: Literal["press", "lift"]


@dataclass(frozen=True, slots=True)
class FingerMatch:
    page_id: int
    score: int


@dataclass(frozen=True, slots=True)
class NoMatch:
    """A finger was read and matches no template: Search answered "not found" (0x09, ``score`` None), or its best
    page scored under min_score (``score`` is that score). Not "no finger": the person pressed and must be told."""

    score: int | None = None


class ZfmReader:
    """A fingerprint module. ``backend`` is a pyusb backend; None lets pyusb pick libusb. Blocking."""

    poll_s = 0.1  # pause between GenImg polls while waiting for a finger to come or go

    def __init__(self, cfg: ZfmConfig, backend: Any = None) -> None:
        self.cfg = cfg
        self._name = cfg.device_name  # formatted once: every packet's decoding names the device, for its errors
        self.system: SystemParameters | None = None  # what ReadSysPara said at the last open
        self._backend = backend
        self._lock = threading.RLock()
        self._dev: Any = None
        self._out: Any = None
        self._in: Any = None
        self._rx = bytearray()
        self._stale = False  # a reply may still be on its way: drain before the next command
        self._taken = False  # touched() took an image of the finger and no command came since: scan() reads it

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_open(self) -> bool:
        return self._dev is not None

    @property
    def capacity(self) -> int:
        """Pages in use: the configured capacity, or the module's library if that is smaller."""
        return self.cfg.capacity if self.system is None else min(self.cfg.capacity, self.system.library_size)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Find the module by VID:PID, claim its bulk interface, verify the password, read its library size."""
        import usb.core
        import usb.util

        with self._lock:
            if self._dev is not None:
                return
            dev = self._find()
            try:
                self._out, self._in = self._claim(dev)
            except usb.core.USBError as exc:
                usb.util.dispose_resources(dev)
                raise self._open_error(exc) from exc
            except FingerNotFound:
                usb.util.dispose_resources(dev)
                raise
            self._dev, self._stale = dev, False
            self._rx.clear()
            try:
                self._handshake()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Release the interface and the handle. Safe to call twice and after an unplug."""
        with self._lock:
            dev, self._dev, self._out, self._in = self._dev, None, None, None
            self._taken = False
            if dev is not None:
                dispose(dev, self.name, log)

    def __enter__(self) -> ZfmReader:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- operations ----------------------------------------------------------------------------

    def touched(self) -> bool | None:
        """One GenImg: whether a finger is on the sensor, its image then taken for the next scan(); None, without
        asking, while another thread's call holds the reader (an enrolment owns the sensor). The cheap check an
        idle terminal polls (drivers/fingerprint/watch.py)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self.open()
            self._taken = self._image()
            return self._taken
        finally:
            self._lock.release()

    def scan(self) -> FingerMatch | NoMatch | None:
        """One attempt, told apart by the module's codes: None when GenImg says no finger is on the sensor (0x02),
        NoMatch when a finger was read and Search finds no template for it (0x09) or none well enough, else the
        match. A finger whose image is unusable raises CaptureError (ask the person to press again). An image
        touched() just took is read instead of taking another: the finger it found is the one to answer."""
        with self._lock:
            self.open()
            if not (self._taken or self._image()):
                return None
            self._expect(Instruction.IMG2TZ, b"\x01", "extracting features")
            return self._search(1)

    def enroll(
        self,
        page_id: int,
        captures: int = 2,
        wait_s: float = 10,
        *,
        prompt: Callable[[EnrolStep], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Capture the finger ``captures`` times, lifted in between, and store it at ``page_id`` (replacing
        what was there). The first two captures are merged (RegModel); each further one must match the
        merged template, which catches a person who switched fingers. Waits up to ``wait_s`` for each
        press and each lift. ``prompt`` is told each step as the reader starts waiting for it (what the
        terminal's screen asks the person), from this thread; a set ``cancel`` ends a wait with
        EnrollCancelled, so nothing is stored after the caller gave up."""
        if captures < 2:
            raise ValueError(f"captures={captures}: the module merges two captures, so at least 2")
        with self._lock:
            self.open()
            self._check_page(page_id)
            for i in range(captures):
                if i:
                    self._step(EnrolStep(i + 1, "lift"), prompt, cancel, page_id)
                    self._await(finger=False, wait_s=wait_s, cancel=cancel, page_id=page_id)
                self._step(EnrolStep(i + 1, "press"), prompt, cancel, page_id)
                self._await(finger=True, wait_s=wait_s, cancel=cancel, page_id=page_id)
                self._expect(Instruction.IMG2TZ, bytes([1 if i == 0 else 2]), f"extracting features of capture {i + 1}")
                if i == 1:
                    self._expect(Instruction.REG_MODEL, b"", "merging the captures")
                elif i > 1:
                    self._expect(Instruction.MATCH, b"", f"checking capture {i + 1} against the merged template")
            if cancel is not None and cancel.is_set():  # the last chance: after Store the page is written
                raise EnrollCancelled(self.name, page_id)
            self._expect(Instruction.STORE, b"\x01" + page_id.to_bytes(2, "big"), f"storing page {page_id}")

    def delete(self, page_id: int) -> None:
        with self._lock:
            self.open()
            if not 0 <= page_id < self.capacity:
                raise ValueError(f"page_id {page_id} is outside the library's pages 0..{self.capacity - 1}")
            self._expect(Instruction.DELETE_CHAR, page_id.to_bytes(2, "big") + b"\x00\x01", f"deleting page {page_id}")

    def empty(self) -> None:
        """Delete every template in the module."""
        with self._lock:
            self.open()
            self._expect(Instruction.EMPTY, b"", "emptying the library")

    def count(self) -> int:
        """How many templates the module holds."""
        with self._lock:
            self.open()
            return int.from_bytes(self._expect(Instruction.TEMPLATE_NUM, b"", "counting templates"), "big")

    # -- steps ---------------------------------------------------------------------------------

    def _handshake(self) -> None:
        self._expect(Instruction.VFY_PWD, self.cfg.password.to_bytes(4, "big"), "verifying the password")
        self.system = SystemParameters.parse(self._expect(Instruction.READ_SYS_PARA, b"", "reading its parameters"))
        if self.system.library_size < self.cfg.capacity:
            log.warning(
                "%s has a library of %d pages, fewer than capacity=%d: using %d",
                self.name,
                self.system.library_size,
                self.cfg.capacity,
                self.capacity,
            )
        log.info("opened fingerprint reader %s (library of %d pages)", self.name, self.system.library_size)

    def _check_page(self, page_id: int) -> None:
        if page_id < 0:
            raise ValueError(f"page_id {page_id} is negative")
        if page_id >= self.capacity:
            raise LibraryFull(self.name, f"page {page_id} is beyond the library's {self.capacity} pages", None)

    def _image(self) -> bool:
        """GenImg: True when an image was taken, False when no finger is on the sensor."""
        code, _ = self._call(Instruction.GEN_IMG)
        if code == Code.NO_FINGER:
            return False
        if code != Code.OK:
            raise failure(self.name, code, "capturing an image")
        return True

    def _step(
        self, step: EnrolStep, prompt: Callable[[EnrolStep], None] | None, cancel: threading.Event | None, page: int
    ) -> None:
        if cancel is not None and cancel.is_set():
            raise EnrollCancelled(self.name, page)
        if prompt is not None:
            prompt(step)

    def _await(self, *, finger: bool, wait_s: float, cancel: threading.Event | None = None, page_id: int = 0) -> None:
        """Poll GenImg until a finger is on the sensor (``finger``) or off it, or ``cancel`` is set."""
        deadline = time.monotonic() + wait_s
        while self._image() != finger:
            if cancel is not None and cancel.is_set():
                raise EnrollCancelled(self.name, page_id)
            if time.monotonic() >= deadline:
                if finger:
                    raise CaptureError(self.name, f"no finger on the sensor within {wait_s:g} s", Code.NO_FINGER)
                raise CaptureError(self.name, f"the finger was not lifted within {wait_s:g} s", None)
            time.sleep(self.poll_s)

    def _search(self, buffer: int) -> FingerMatch | NoMatch:
        params = bytes([buffer]) + (0).to_bytes(2, "big") + self.capacity.to_bytes(2, "big")
        code, data = self._call(Instruction.SEARCH, params)
        if code == Code.NOT_FOUND:
            return NoMatch()
        if code != Code.OK:
            raise failure(self.name, code, "searching the library")
        match = FingerMatch(int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big"))
        if match.score < self.cfg.min_score:
            log.info("%s: page %d scored %d, under min_score: no match", self.name, match.page_id, match.score)
            return NoMatch(match.score)
        return match

    def _expect(self, instruction: Instruction, params: bytes, doing: str) -> bytes:
        """Run a command that must succeed; its data, or the typed error for its code."""
        code, data = self._call(instruction, params)
        if code != Code.OK:
            raise failure(self.name, code, doing)
        return data

    # -- the primitive -------------------------------------------------------------------------

    def _call(self, instruction: Instruction, params: bytes = b"") -> tuple[int, bytes]:
        """Send one command, return (confirmation code, data); a garbled exchange of an idempotent
        command is tried once more."""
        tries = 2 if instruction in _IDEMPOTENT else 1
        for attempt in range(1, tries + 1):
            try:
                return self._exchange(instruction, params)
            except ProtocolError as exc:
                self._stale = True  # the rest of a garbled reply may still be in the pipe
                if attempt == tries:
                    raise
                log.warning("%s: %s; sending %s again", self.name, exc.reason, instruction.name)
        raise AssertionError("unreachable")

    def _exchange(self, instruction: Instruction, params: bytes) -> tuple[int, bytes]:
        self._taken = False  # any command may overwrite the module's image buffer
        if self._stale:
            self._drain()
        self._write(command(instruction, params, self.cfg.address))
        packet = self._receive()
        if packet.pid != PacketId.ACK or not packet.payload or packet.address != self.cfg.address:
            raise ProtocolError(self.name, f"expected an ack from {self.cfg.address:#010x}, got {_show(packet)}")
        code, data = packet.payload[0], packet.payload[1:]
        if code == Code.PACKET_ERROR:
            raise failure(self.name, code, f"sending {instruction.name}")
        size = _DATA_SIZE.get(instruction)
        if code == Code.OK and size is not None and len(data) != size:
            raise ProtocolError(self.name, f"{instruction.name} ack has {len(data)} data bytes, not {size}")
        return code, data

    def _receive(self) -> Packet:
        """Read until one whole packet is there, within timeout_ms however many bulk reads it takes."""
        deadline = time.monotonic() + self.cfg.timeout_ms / 1000
        while True:
            if len(self._rx) >= HEAD_SIZE:
                size = packet_size(bytes(self._rx[:HEAD_SIZE]), self.name)
                if len(self._rx) >= size:
                    frame = bytes(self._rx[:size])
                    del self._rx[:size]
                    return decode(frame, self.name)
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise self._timed_out(f"{len(self._rx)} bytes of a reply within {self.cfg.timeout_ms} ms")
            self._rx += self._read(remaining_ms)

    def _write(self, data: bytes) -> None:
        import usb.core

        sent = 0
        while sent < len(data):
            try:
                n = self._dev.write(self._out, data[sent:], self.cfg.timeout_ms)
            except usb.core.USBTimeoutError as exc:
                raise self._timed_out(f"the module took no command within {self.cfg.timeout_ms} ms") from exc
            except usb.core.USBError as exc:
                raise self._lost(exc) from exc
            if n <= 0:
                raise self._timed_out("the module accepted 0 bytes")
            sent += n

    def _read(self, timeout_ms: int) -> bytes:
        # Ask for a whole bulk packet: a shorter request overflows when the device sends one.
        import usb.core

        try:
            return bytes(self._dev.read(self._in, self._in.wMaxPacketSize, timeout_ms))
        except usb.core.USBTimeoutError as exc:
            raise self._timed_out(f"no reply within {self.cfg.timeout_ms} ms") from exc
        except usb.core.USBError as exc:
            raise self._lost(exc) from exc

    def _drain(self) -> None:
        """Throw away a late or half-read reply, so it is not taken for the next command's answer."""
        import usb.core

        self._rx.clear()
        for _ in range(_DRAIN_READS):
            try:
                data = self._dev.read(self._in, self._in.wMaxPacketSize, _DRAIN_MS)
            except usb.core.USBTimeoutError:
                break
            except usb.core.USBError as exc:
                raise self._lost(exc) from exc
            if not data:
                break
            log.debug("%s: drained %d stale bytes", self.name, len(data))
        self._stale = False

    # -- USB -----------------------------------------------------------------------------------

    def _find(self) -> Any:
        import usb.core

        cfg = self.cfg
        try:
            dev = usb.core.find(idVendor=cfg.vendor_id, idProduct=cfg.product_id, backend=self._backend)
        except usb.core.NoBackendError:
            raise FingerNotFound(self.name, "pyusb has no backend: install Debian's libusb-1.0-0") from None
        except usb.core.USBError as exc:
            raise FingerNotFound(self.name, f"USB enumeration failed: {exc}") from exc
        if dev is None:
            raise FingerNotFound(self.name)
        return dev

    def _claim(self, dev: Any) -> tuple[Any, Any]:
        """Set a configuration if none is, take the first interface with a bulk OUT and a bulk IN, claim it."""
        import usb.core
        import usb.util

        try:
            config = dev.get_active_configuration()
        except usb.core.USBError:
            dev.set_configuration()
            config = dev.get_active_configuration()
        for intf in config:
            out_ep, in_ep = _bulk(intf, usb.util.ENDPOINT_OUT), _bulk(intf, usb.util.ENDPOINT_IN)
            if out_ep is not None and in_ep is not None:
                break
        else:
            raise FingerNotFound(self.name, "the device has no interface with a bulk OUT and a bulk IN endpoint")
        number = intf.bInterfaceNumber
        try:
            if dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
        except NotImplementedError:  # backends without kernel drivers (macOS, Windows, the sim)
            pass
        usb.util.claim_interface(dev, number)
        return out_ep, in_ep

    def _open_error(self, exc: usb.core.USBError) -> FingerError:
        if exc.errno in _DENIED:
            return FingerAccessDenied(self.name, str(exc))
        if exc.errno == errno.ENODEV:
            return FingerDisconnected(self.name, str(exc))
        return FingerNotFound(self.name, str(exc))

    def _timed_out(self, reason: str) -> FingerTimeout:
        self._stale = True
        return FingerTimeout(self.name, reason)

    def _lost(self, exc: usb.core.USBError) -> FingerDisconnected:
        log.warning("fingerprint reader %s lost: %s", self.name, exc)
        self.close()
        return FingerDisconnected(self.name, str(exc))


def _bulk(intf: Any, direction: int) -> Any:
    import usb.util

    def match(ep: Any) -> bool:
        return bool(
            usb.util.endpoint_direction(ep.bEndpointAddress) == direction
            and usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
        )

    return usb.util.find_descriptor(intf, custom_match=match)


def _show(packet: Packet) -> str:
    return f"packet id {packet.pid:#04x} from {packet.address:#010x} with {len(packet.payload)} payload bytes"
