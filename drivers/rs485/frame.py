"""One frame on the bus: ``STX addr cmd len data... BCC ETX``, BCC the XOR of addr..data.

The rule: a frame that does not check out is an error the caller sees (FrameError), never a reading: a
corrupted status byte must not open an alarm or close one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

STX, ETX = 0x02, 0x03
MAX_DATA = 255


class FrameError(ValueError):
    """Bytes that are not a valid frame (bad start, length, checksum or end)."""


@dataclass(frozen=True, slots=True)
class Frame:
    addr: int
    cmd: int
    data: bytes = b""

    def encode(self) -> bytes:
        if not (0 <= self.addr <= 255 and 0 <= self.cmd <= 255) or len(self.data) > MAX_DATA:
            raise FrameError(f"address {self.addr}, command {self.cmd} or {len(self.data)} data bytes out of range")
        body = bytes([self.addr, self.cmd, len(self.data)]) + self.data
        return bytes([STX]) + body + bytes([bcc(body), ETX])


def bcc(body: bytes) -> int:
    return reduce(lambda a, b: a ^ b, body, 0)


def frame_length(head: bytes) -> int | None:
    """The whole frame's length once its first four bytes (STX addr cmd len) are in, else None."""
    if len(head) < 4:
        return None
    if head[0] != STX:
        raise FrameError(f"frame starts with 0x{head[0]:02x}, not STX")
    return 4 + head[3] + 2


def decode(raw: bytes) -> Frame:
    n = frame_length(raw)
    if n is None or len(raw) != n:
        raise FrameError(f"{len(raw)} bytes is not a whole frame")
    body = raw[1:-2]
    if raw[-1] != ETX:
        raise FrameError("frame does not end with ETX")
    if bcc(body) != raw[-2]:
        raise FrameError(f"checksum 0x{raw[-2]:02x}, expected 0x{bcc(body):02x}")
    return Frame(addr=body[0], cmd=body[1], data=bytes(body[3:]))
