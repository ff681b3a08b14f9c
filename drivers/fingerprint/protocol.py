"""Packet codec of the ZhianTec ZFM / R30x family (R305, R307, R503, AS608): bytes in, bytes out, no I/O.

    EF 01 | address (4) | packet id (1) | length (2) | payload | checksum (2)

All numbers are big-endian. ``length`` counts the payload and the checksum (len(payload) + 2). The
checksum is the sum of the packet id, the two length bytes and every payload byte, mod 65536: the
header and the address are outside it. A command's payload is an instruction byte and its
parameters; an ack's payload is a confirmation code and the data the instruction returns.
The reader and the simulated module both use this codec; the tests pin it to hand-computed vectors
and to a reply captured from a real module, so the two cannot agree on a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.fingerprint.errors import ChecksumError, ProtocolError

HEADER = b"\xef\x01"
DEFAULT_ADDRESS = 0xFFFFFFFF
HEAD_SIZE = 9  # header, address, packet id, length: enough to know the whole packet's size
MAX_PAYLOAD = 256  # the largest data packet (packet size setting 3); anything longer is garbage


class PacketId(IntEnum):
    COMMAND = 0x01
    DATA = 0x02
    ACK = 0x07
    END_DATA = 0x08


_PACKET_IDS = frozenset(int(p) for p in PacketId)


class Instruction(IntEnum):
    GEN_IMG = 0x01  # capture an image into ImageBuffer
    IMG2TZ = 0x02  # + buffer id: features of the image into CharBuffer1|2
    MATCH = 0x03  # compare CharBuffer1 and CharBuffer2 -> score (2)
    SEARCH = 0x04  # + buffer id, start page (2), page count (2) -> page id (2), score (2)
    REG_MODEL = 0x05  # merge CharBuffer1 and CharBuffer2 into a template (left in both)
    STORE = 0x06  # + buffer id, page id (2)
    LOAD_CHAR = 0x07  # + buffer id, page id (2)
    UP_CHAR = 0x08  # + buffer id: template to the host in data packets
    DOWN_CHAR = 0x09  # + buffer id: template from the host in data packets
    DELETE_CHAR = 0x0C  # + page id (2), count (2)
    EMPTY = 0x0D  # delete every template
    READ_SYS_PARA = 0x0F  # -> 16 bytes, see SystemParameters
    VFY_PWD = 0x13  # + password (4)
    TEMPLATE_NUM = 0x1D  # -> count (2)


class Code(IntEnum):
    """Confirmation codes, the first payload byte of an ack."""

    OK = 0x00
    PACKET_ERROR = 0x01
    NO_FINGER = 0x02
    IMAGE_FAILED = 0x03
    IMAGE_MESSY = 0x06
    TOO_FEW_FEATURES = 0x07
    NOT_MATCHING = 0x08
    NOT_FOUND = 0x09
    MERGE_FAILED = 0x0A
    PAGE_OUT_OF_RANGE = 0x0B
    READ_TEMPLATE_FAILED = 0x0C
    UPLOAD_FAILED = 0x0D
    DELETE_FAILED = 0x10
    CLEAR_FAILED = 0x11
    WRONG_PASSWORD = 0x13
    NO_VALID_IMAGE = 0x15
    FLASH_WRITE_FAILED = 0x18
    LIBRARY_FULL = 0x1F
    WRONG_ADDRESS = 0x20
    PASSWORD_REQUIRED = 0x21


CODE_TEXT: dict[int, str] = {
    Code.OK: "done",
    Code.PACKET_ERROR: "the module received a garbled packet",
    Code.NO_FINGER: "no finger on the sensor",
    Code.IMAGE_FAILED: "the image could not be captured",
    Code.IMAGE_MESSY: "the image is too messy to take features from",
    Code.TOO_FEW_FEATURES: "the image has too few feature points",
    Code.NOT_MATCHING: "the two templates do not match",
    Code.NOT_FOUND: "no matching template in the library",
    Code.MERGE_FAILED: "the captures could not be merged (not the same finger)",
    Code.PAGE_OUT_OF_RANGE: "the page id is beyond the library",
    Code.READ_TEMPLATE_FAILED: "reading the template failed or the template is invalid",
    Code.UPLOAD_FAILED: "uploading the template failed",
    Code.DELETE_FAILED: "deleting the template failed",
    Code.CLEAR_FAILED: "clearing the library failed",
    Code.WRONG_PASSWORD: "wrong password",
    Code.NO_VALID_IMAGE: "no valid image in the image buffer",
    Code.FLASH_WRITE_FAILED: "writing the flash failed",
    Code.LIBRARY_FULL: "the library is full",
    Code.WRONG_ADDRESS: "wrong address",
    Code.PASSWORD_REQUIRED: "the password must be verified first",
}


def describe(code: int) -> str:
    return CODE_TEXT.get(code, f"unknown confirmation code {code:#04x}")


@dataclass(frozen=True, slots=True)
class Packet:
    pid: int
    payload: bytes
    address: int = DEFAULT_ADDRESS

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes is over the protocol's {MAX_PAYLOAD}")
        length = len(self.payload) + 2
        return (
            HEADER
            + self.address.to_bytes(4, "big")
            + bytes([self.pid])
            + length.to_bytes(2, "big")
            + self.payload
            + checksum(self.pid, self.payload).to_bytes(2, "big")
        )


@dataclass(frozen=True, slots=True)
class SystemParameters:
    """ReadSysPara's 16 bytes. ``library_size`` is how many pages the module really has."""

    status: int
    system_id: int
    library_size: int
    security_level: int
    address: int
    packet_bytes: int  # 32, 64, 128 or 256
    baud: int

    @classmethod
    def parse(cls, data: bytes) -> SystemParameters:
        if len(data) != 16:
            raise ValueError(f"ReadSysPara returns 16 bytes, not {len(data)}")

        def word(i: int) -> int:
            return int.from_bytes(data[i : i + 2], "big")

        return cls(
            word(0), word(2), word(4), word(6), int.from_bytes(data[8:12], "big"), 32 << word(12), word(14) * 9600
        )

    def encode(self) -> bytes:
        words = (self.status, self.system_id, self.library_size, self.security_level)
        return (
            b"".join(w.to_bytes(2, "big") for w in words)
            + self.address.to_bytes(4, "big")
            + ((self.packet_bytes // 32).bit_length() - 1).to_bytes(2, "big")
            + (self.baud // 9600).to_bytes(2, "big")
        )


def checksum(pid: int, payload: bytes) -> int:
    length = len(payload) + 2
    return (pid + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def command(instruction: int, params: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    """The bytes of a command packet."""
    return Packet(PacketId.COMMAND, bytes([instruction]) + params, address).encode()


def packet_size(head: bytes, device: str = "zfm") -> int:
    """The whole size of the packet that starts with ``head`` (at least HEAD_SIZE bytes). Rejects a bad
    header or an impossible length at once, instead of waiting for up to 64 KiB that never come."""
    if head[:2] != HEADER:
        raise ProtocolError(device, f"packet starts with {head[:2].hex(' ')}, not ef 01")
    length = int.from_bytes(head[7:9], "big")
    if not 2 <= length <= MAX_PAYLOAD + 2:
        raise ProtocolError(device, f"packet length {length} is outside 2..{MAX_PAYLOAD + 2}")
    return HEAD_SIZE + length


def decode(data: bytes, device: str = "zfm") -> Packet:
    """One complete packet; raises ProtocolError (ChecksumError for a checksum mismatch)."""
    if len(data) < HEAD_SIZE:
        raise ProtocolError(device, f"{len(data)} bytes are too short for a packet")
    size = packet_size(data, device)
    if len(data) != size:
        raise ProtocolError(device, f"packet of {len(data)} bytes, its length field says {size}")
    pid, payload = data[6], bytes(data[HEAD_SIZE:-2])
    if pid not in _PACKET_IDS:
        raise ProtocolError(device, f"unknown packet id {pid:#04x}")
    expected, received = checksum(pid, payload), int.from_bytes(data[-2:], "big")
    if expected != received:
        raise ChecksumError(device, f"checksum {received:#06x}, the bytes sum to {expected:#06x}")
    return Packet(pid, payload, int.from_bytes(data[2:6], "big"))
