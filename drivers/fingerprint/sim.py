"""The simulated twin: a ZFM / R30x fingerprint module on USB, written as a pyusb backend on
drivers/usbsim.py (pyusb's own find/write/read run unchanged against it, as against libusb). Used by the
tests, the demo and the simulator.

The module, kept to what the reader must handle:
- fingers are names: ``place("alice")`` puts one on the sensor until ``lift()``;
  ``press("alice", times=2)`` / ``presses("alice", "bob")`` script presses with lifts between
  (one GenImg sees each step), for enrolment;
- a template is the finger's name; two char buffers; a library ``{page: finger}`` of
  ``library_size`` pages that survives a replug (flash), buffers and the password check do not (RAM);
- RegModel merges two captures of the same finger, else 0x0A; Search finds the lowest page holding
  the buffer's finger with ``score``, else 0x09; Store beyond the library answers 0x0B;
- command packets with a bad checksum are answered 0x01, packets to another address are ignored
  (no reply, as a real module does), a set ``password`` must be verified first (0x21);
- faults: ``corrupt_next_reply()`` (checksum, or header), ``stall_next_reply()`` (the reply comes
  only after the reader's read timed out: a late reply), either for the next reply or the next one
  to a given instruction; ``chunk_size`` (replies split over several bulk reads), ``messy``
  (Img2Tz answers 0x06), ``unplug()`` / ``plug()``.
A read with nothing to return blocks for its timeout, as libusb does, so timeouts can be measured.
"""

from __future__ import annotations

import time
from typing import Any

import usb.core

from drivers.fingerprint.protocol import (
    DEFAULT_ADDRESS,
    HEAD_SIZE,
    HEADER,
    Code,
    Instruction,
    Packet,
    PacketId,
    SystemParameters,
    checksum,
)
from drivers.usbsim import TIMEOUT, Handle, SimulatedUsbDevice

VENDOR_ID = 0x2109  # placeholder ids for the sim; a real module's come from `lsusb`
PRODUCT_ID = 0x7638
OUT_EP = 0x02
IN_EP = 0x81
SCORE = 120


class SimulatedZfm(SimulatedUsbDevice):
    """A ZFM / R30x module. Call the staging methods or set the public attributes to stage a condition."""

    def __init__(
        self,
        *,
        vendor_id: int = VENDOR_ID,
        product_id: int = PRODUCT_ID,
        address: int = DEFAULT_ADDRESS,
        password: int = 0,
        library_size: int = 300,
        score: int = SCORE,
        chunk_size: int | None = None,
    ) -> None:
        # A vendor-class interface: no kernel driver binds it.
        super().__init__(vendor_id=vendor_id, product_id=product_id, out_ep=OUT_EP, in_ep=IN_EP, kernel_driver=False)
        self.address = address
        self.password = password
        self.library_size = library_size
        self.score = score
        self.chunk_size = chunk_size  # at most this many reply bytes per bulk read
        self.messy = False
        self.library: dict[int, str] = {}  # page -> finger (flash)
        self.commands: list[Instruction | int] = []  # every instruction received, for assertions
        self._finger: str | None = None
        self._frames: list[str | None] = []
        self._faults: list[tuple[str, Instruction | None]] = []  # (checksum|header|stall, for which instruction)
        self._reset_ram()

    # -- staging -------------------------------------------------------------------------------

    def place(self, finger: str) -> None:
        """Put ``finger`` on the sensor until lift(); drops any scripted presses."""
        self._finger, self._frames = finger, []

    def lift(self) -> None:
        self._finger, self._frames = None, []

    def press(self, finger: str, times: int = 2) -> None:
        """Script ``times`` presses of ``finger``, lifted in between (what an enrolment asks for)."""
        self.presses(*[finger] * times)

    def presses(self, *fingers: str) -> None:
        """Script one press of each finger, lifted in between: one GenImg sees each step. Afterwards the
        sensor is empty."""
        self._finger, self._frames = None, []
        for i, finger in enumerate(fingers):
            self._frames += [None, finger] if i else [finger]

    def corrupt_next_reply(self, part: str = "checksum", on: Instruction | None = None) -> None:
        """Flip a byte of the next reply's checksum (or header: ``part="header"``), or of the next reply
        to ``on``. Calls add up: two calls corrupt two replies."""
        if part not in ("checksum", "header"):
            raise ValueError(part)
        self._faults.append((part, on))

    def stall_next_reply(self, on: Instruction | None = None) -> None:
        """Hold the next reply (to ``on``) back until a read has timed out: the reader times out, and the
        reply arrives late, as from a module that was busy."""
        self._faults.append(("stall", on))

    def unplug(self) -> None:
        super().unplug()
        self._reset_ram()

    def plug(self) -> None:
        """Reconnect: a new device on the bus, its RAM cleared, its flash (library) kept."""
        super().plug()
        self._reset_ram()

    def _reset_ram(self) -> None:
        self._inbox = bytearray()
        self._replies = bytearray()
        self._late = bytearray()
        self._image: str | None = None
        self._buffers: dict[int, str | None] = {1: None, 2: None}
        self._verified = False

    # -- IBackend: transfers -------------------------------------------------------------------

    def bulk_write(self, dev_handle: Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        self._claimed_or_raise(dev_handle, intf)
        self._inbox += bytes(data)
        while (packet := self._next_packet()) is not None:
            self._execute(packet)
        return len(data)

    def bulk_read(self, dev_handle: Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        self._claimed_or_raise(dev_handle, intf)
        if not self._replies:
            time.sleep(timeout / 1000)
            self._replies += self._late  # a held-back reply arrives after the reader gave up on it
            self._late.clear()
            raise usb.core.USBTimeoutError(*TIMEOUT)
        n = min(len(buff), len(self._replies), self.chunk_size or len(self._replies))
        memoryview(buff)[:n] = self._replies[:n]
        del self._replies[:n]
        return n

    # -- the module ----------------------------------------------------------------------------

    def _next_packet(self) -> tuple[int, int, bytes, bool] | None:
        """(address, packet id, payload, checksum ok) of the next complete packet in the inbox, skipping
        bytes up to a header as the module's receiver does."""
        start = self._inbox.find(HEADER)
        if start < 0:
            del self._inbox[: max(0, len(self._inbox) - 1)]
            return None
        del self._inbox[:start]
        if len(self._inbox) < HEAD_SIZE:
            return None
        size = HEAD_SIZE + int.from_bytes(self._inbox[7:9], "big")
        if len(self._inbox) < size:
            return None
        raw = bytes(self._inbox[:size])
        del self._inbox[:size]
        pid, payload = raw[6], raw[HEAD_SIZE:-2]
        return int.from_bytes(raw[2:6], "big"), pid, payload, checksum(pid, payload) == int.from_bytes(raw[-2:], "big")

    def _execute(self, packet: tuple[int, int, bytes, bool]) -> None:
        address, pid, payload, intact = packet
        if address != self.address:
            return  # not for this module: no answer at all
        if not intact or pid != PacketId.COMMAND or not payload:
            self._reply(None, Code.PACKET_ERROR)
            return
        instruction, params = payload[0], payload[1:]
        if instruction not in _HANDLERS:
            self.commands.append(instruction)
            self._reply(None, Code.PACKET_ERROR)
            return
        known = Instruction(instruction)
        self.commands.append(known)
        if self.password and not self._verified and known != Instruction.VFY_PWD:
            self._reply(known, Code.PASSWORD_REQUIRED)
            return
        code, data = _HANDLERS[known](self, params)
        self._reply(known, code, data)

    def _reply(self, instruction: Instruction | None, code: int, data: bytes = b"") -> None:
        frame = bytearray(Packet(PacketId.ACK, bytes([code]) + data, self.address).encode())
        fault = self._take_fault(instruction)
        if fault == "header":
            frame[0] ^= 0xFF
        elif fault == "checksum":
            frame[-1] ^= 0xFF
        (self._late if fault == "stall" else self._replies).extend(frame)

    def _take_fault(self, instruction: Instruction | None) -> str | None:
        for i, (fault, on) in enumerate(self._faults):
            if on is None or on == instruction:
                del self._faults[i]
                return fault
        return None

    # -- instructions: each takes the parameters, returns (code, data) --------------------------

    def _gen_img(self, params: bytes) -> tuple[int, bytes]:
        finger = self._frames.pop(0) if self._frames else self._finger
        if finger is None:
            return Code.NO_FINGER, b""
        self._image = finger
        return Code.OK, b""

    def _img2tz(self, params: bytes) -> tuple[int, bytes]:
        if len(params) != 1 or params[0] not in self._buffers:
            return Code.PACKET_ERROR, b""
        if self._image is None:
            return Code.NO_VALID_IMAGE, b""
        if self.messy:
            return Code.IMAGE_MESSY, b""
        self._buffers[params[0]] = self._image
        return Code.OK, b""

    def _match(self, params: bytes) -> tuple[int, bytes]:
        one, two = self._buffers[1], self._buffers[2]
        if one is not None and one == two:
            return Code.OK, self.score.to_bytes(2, "big")
        return Code.NOT_MATCHING, b"\x00\x00"

    def _search(self, params: bytes) -> tuple[int, bytes]:
        if len(params) != 5 or params[0] not in self._buffers:
            return Code.PACKET_ERROR, b""
        finger, start, count = self._buffers[params[0]], _word(params, 1), _word(params, 3)
        for page in sorted(self.library):
            if start <= page < start + count and finger is not None and self.library[page] == finger:
                return Code.OK, page.to_bytes(2, "big") + self.score.to_bytes(2, "big")
        return Code.NOT_FOUND, b"\x00\x00\x00\x00"

    def _reg_model(self, params: bytes) -> tuple[int, bytes]:
        one, two = self._buffers[1], self._buffers[2]
        if one is None or one != two:
            return Code.MERGE_FAILED, b""
        return Code.OK, b""  # the template (the finger) is now in both buffers

    def _store(self, params: bytes) -> tuple[int, bytes]:
        if len(params) != 3 or params[0] not in self._buffers:
            return Code.PACKET_ERROR, b""
        page, template = _word(params, 1), self._buffers[params[0]]
        if page >= self.library_size:
            return Code.PAGE_OUT_OF_RANGE, b""
        if template is None:
            return Code.READ_TEMPLATE_FAILED, b""
        self.library[page] = template
        return Code.OK, b""

    def _delete_char(self, params: bytes) -> tuple[int, bytes]:
        if len(params) != 4:
            return Code.PACKET_ERROR, b""
        start, count = _word(params, 0), _word(params, 2)
        if start + count > self.library_size:
            return Code.DELETE_FAILED, b""
        for page in range(start, start + count):
            self.library.pop(page, None)
        return Code.OK, b""

    def _empty(self, params: bytes) -> tuple[int, bytes]:
        self.library.clear()
        return Code.OK, b""

    def _read_sys_para(self, params: bytes) -> tuple[int, bytes]:
        system = SystemParameters(0, 0x0009, self.library_size, 3, self.address, 128, 57600)
        return Code.OK, system.encode()

    def _vfy_pwd(self, params: bytes) -> tuple[int, bytes]:
        self._verified = len(params) == 4 and int.from_bytes(params, "big") == self.password
        return (Code.OK if self._verified else Code.WRONG_PASSWORD), b""

    def _template_num(self, params: bytes) -> tuple[int, bytes]:
        return Code.OK, len(self.library).to_bytes(2, "big")


def _word(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


_HANDLERS = {
    Instruction.GEN_IMG: SimulatedZfm._gen_img,
    Instruction.IMG2TZ: SimulatedZfm._img2tz,
    Instruction.MATCH: SimulatedZfm._match,
    Instruction.SEARCH: SimulatedZfm._search,
    Instruction.REG_MODEL: SimulatedZfm._reg_model,
    Instruction.STORE: SimulatedZfm._store,
    Instruction.DELETE_CHAR: SimulatedZfm._delete_char,
    Instruction.EMPTY: SimulatedZfm._empty,
    Instruction.READ_SYS_PARA: SimulatedZfm._read_sys_para,
    Instruction.VFY_PWD: SimulatedZfm._vfy_pwd,
    Instruction.TEMPLATE_NUM: SimulatedZfm._template_num,
}
