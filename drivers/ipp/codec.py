"""IPP/1.1 binary encoding (RFC 8010), stdlib only.

Enough of the protocol to ask a printer for its attributes and read the answer: a message is a
header (version, operation or status code, request id), attribute groups, then document data.
Every value tag that printers send in Get-Printer-Attributes answers decodes to a Python value;
an unknown tag keeps its raw bytes, so a new tag from a newer printer never breaks the parse.

Decoding is strict about structure and lenient about text: lengths that run past the end, fixed
size values of the wrong size, a value with no attribute to belong to, unbalanced collections
all raise IppError naming the byte offset and the attribute; text that is not UTF-8 is decoded
with replacement characters (printers send Latin-1 descriptions).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import TypeAlias


class IppError(Exception):
    """Bytes that are not a well-formed IPP message, or a value that cannot be encoded."""


class Tag(IntEnum):
    # Delimiters (begin-attribute-group-tag values and end-of-attributes)
    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED_GROUP = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    DOCUMENT = 0x09
    SYSTEM = 0x0A
    # Out-of-band values
    UNSUPPORTED = 0x10
    DEFAULT = 0x11
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    # Integer types
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    # Octet-string types
    OCTET_STRING = 0x30
    DATE_TIME = 0x31
    RESOLUTION = 0x32
    RANGE_OF_INTEGER = 0x33
    BEGIN_COLLECTION = 0x34
    TEXT_WITH_LANGUAGE = 0x35
    NAME_WITH_LANGUAGE = 0x36
    END_COLLECTION = 0x37
    # Character-string types
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    NATURAL_LANGUAGE = 0x48
    MIME_MEDIA_TYPE = 0x49
    MEMBER_ATTR_NAME = 0x4A
    EXTENSION = 0x7F


PRINT_JOB = 0x0002
GET_JOB_ATTRIBUTES = 0x0009
GET_PRINTER_ATTRIBUTES = 0x000B
MAX_COLLECTION_DEPTH = 16  # media-col-database nests 2 deep; a hostile 10,000 would blow the stack

_INT = struct.Struct(">i")
_DATE = struct.Struct(">HBBBBBBcBB")
_RESOLUTION = struct.Struct(">iib")
_RANGE = struct.Struct(">ii")
_FIXED_SIZE: dict[int, int] = {
    Tag.INTEGER: 4, Tag.ENUM: 4, Tag.BOOLEAN: 1, Tag.DATE_TIME: 11, Tag.RESOLUTION: 9, Tag.RANGE_OF_INTEGER: 8
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutOfBand:
    """unknown, no-value, unsupported...: the attribute is there but has no ordinary value."""

    tag: int

    @property
    def name(self) -> str:
        try:
            return Tag(self.tag).name.lower().replace("_", "-")
        except ValueError:
            return f"out-of-band-0x{self.tag:02x}"


@dataclass(frozen=True, slots=True)
class TextWithLanguage:
    language: str
    text: str


@dataclass(frozen=True, slots=True)
class Resolution:
    x: int
    y: int
    units: int  # 3 = dots per inch, 4 = dots per centimetre


@dataclass(frozen=True, slots=True)
class RangeOfInteger:
    lower: int
    upper: int


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection value: its member attributes, in order."""

    members: tuple[Attribute, ...] = ()

    def get(self, name: str) -> Attribute | None:
        return next((m for m in self.members if m.name == name), None)


Value: TypeAlias = (
    int | str | bytes | datetime | Resolution | RangeOfInteger | TextWithLanguage | OutOfBand | Collection
)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute with all its values (1setOf); each value carries its own tag."""

    name: str
    values: tuple[Value, ...]
    tags: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.tags) or not self.values:
            raise IppError(f"attribute {self.name!r} needs one tag per value and at least one value")

    @classmethod
    def of(cls, name: str, tag: int, *values: Value) -> Attribute:
        return cls(name, tuple(values), (tag,) * len(values))

    @property
    def tag(self) -> int:
        return self.tags[0]

    @property
    def value(self) -> Value:
        return self.values[0]


@dataclass(frozen=True, slots=True)
class AttributeGroup:
    tag: int
    attributes: tuple[Attribute, ...]

    def get(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass(frozen=True, slots=True)
class IppMessage:
    """A request (code = operation-id) or a response (code = status-code)."""

    code: int
    request_id: int
    groups: tuple[AttributeGroup, ...] = ()
    version: tuple[int, int] = (1, 1)
    data: bytes = field(default=b"", repr=False)

    def group(self, tag: int) -> AttributeGroup | None:
        return next((g for g in self.groups if g.tag == tag), None)

    def attributes(self, tag: int) -> dict[str, Attribute]:
        """The attributes of the first group with ``tag`` by name (empty if there is none)."""
        g = self.group(tag)
        return {a.name: a for a in g.attributes} if g else {}


# ------------------------------------------------------------------------------------ encoding


def encode_get_printer_attributes(
    printer_uri: str, requested: list[str] | tuple[str, ...], request_id: int = 1, language: str = "en"
) -> bytes:
    """Get-Printer-Attributes (0x000B) asking for ``requested`` (all when empty)."""
    op = [
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, language),
        Attribute.of("printer-uri", Tag.URI, printer_uri),
    ]
    if requested:
        op.append(Attribute.of("requested-attributes", Tag.KEYWORD, *requested))
    return encode(IppMessage(GET_PRINTER_ATTRIBUTES, request_id, (AttributeGroup(Tag.OPERATION, tuple(op)),)))


def encode_print_job(
    printer_uri: str, document: bytes, document_format: str, request_id: int = 1, *, job_name: str = "", user: str = ""
) -> bytes:
    """Print-Job (0x0002): the operation attributes, then the document as the message's data."""
    op = [
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
        Attribute.of("printer-uri", Tag.URI, printer_uri),
    ]
    if user:
        op.append(Attribute.of("requesting-user-name", Tag.NAME, user))
    if job_name:
        op.append(Attribute.of("job-name", Tag.NAME, job_name))
    op.append(Attribute.of("document-format", Tag.MIME_MEDIA_TYPE, document_format))
    return encode(IppMessage(PRINT_JOB, request_id, (AttributeGroup(Tag.OPERATION, tuple(op)),), data=document))


def encode(msg: IppMessage) -> bytes:
    major, minor = msg.version
    out = bytearray(struct.pack(">BBHI", major, minor, msg.code, msg.request_id))
    for group in msg.groups:
        if not 0x01 <= group.tag <= 0x0F or group.tag == Tag.END:
            raise IppError(f"0x{group.tag:02x} is not a group tag")
        out.append(group.tag)
        for attr in group.attributes:
            _encode_attribute(out, attr, attr.name)
    out.append(Tag.END)
    out += msg.data
    return bytes(out)


def _encode_attribute(out: bytearray, attr: Attribute, name: str) -> None:
    for i, (tag, value) in enumerate(zip(attr.tags, attr.values, strict=True)):
        _encode_value(out, tag, name if i == 0 else "", value, attr.name)


def _encode_value(out: bytearray, tag: int, name: str, value: Value, attr_name: str) -> None:
    if not 0x10 <= tag <= 0xFF:
        raise IppError(f"attribute {attr_name!r}: 0x{tag:02x} is not a value tag")
    raw_name = name.encode("utf-8")
    out.append(tag)
    out += _length(len(raw_name), attr_name) + raw_name
    if tag == Tag.BEGIN_COLLECTION:
        if not isinstance(value, Collection):
            raise IppError(f"attribute {attr_name!r}: begCollection needs a Collection, not {type(value).__name__}")
        out += b"\x00\x00"
        for member in value.members:
            _encode_value(out, Tag.MEMBER_ATTR_NAME, "", member.name, attr_name)
            _encode_attribute(out, member, "")
        out += bytes([Tag.END_COLLECTION]) + b"\x00\x00\x00\x00"
        return
    raw = _value_bytes(tag, value, attr_name)
    out += _length(len(raw), attr_name) + raw


def _value_bytes(tag: int, value: Value, attr_name: str) -> bytes:
    try:
        if 0x10 <= tag <= 0x1F:
            return b""
        if tag in (Tag.INTEGER, Tag.ENUM) and isinstance(value, int) and not isinstance(value, bool):
            return _INT.pack(value)
        if tag == Tag.BOOLEAN and isinstance(value, bool):
            return b"\x01" if value else b"\x00"
        if tag == Tag.DATE_TIME and isinstance(value, datetime):
            return _encode_date(value)
        if tag == Tag.RESOLUTION and isinstance(value, Resolution):
            return _RESOLUTION.pack(value.x, value.y, value.units)
        if tag == Tag.RANGE_OF_INTEGER and isinstance(value, RangeOfInteger):
            return _RANGE.pack(value.lower, value.upper)
        if tag in (Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE) and isinstance(value, TextWithLanguage):
            lang, text = value.language.encode("utf-8"), value.text.encode("utf-8")
            return _length(len(lang), attr_name) + lang + _length(len(text), attr_name) + text
        if isinstance(value, bytes):
            return value
        if isinstance(value, str) and tag not in _FIXED_SIZE:
            return value.encode("utf-8")
    except struct.error as exc:
        raise IppError(f"attribute {attr_name!r}: cannot encode {value!r}: {exc}") from None
    raise IppError(f"attribute {attr_name!r}: cannot encode {type(value).__name__} with tag 0x{tag:02x}")


def _length(n: int, attr_name: str) -> bytes:
    if n > 0xFFFF:
        raise IppError(f"attribute {attr_name!r}: {n} bytes is longer than IPP's 65535 limit")
    return n.to_bytes(2, "big")


def _encode_date(value: datetime) -> bytes:
    offset = value.utcoffset() or timedelta(0)
    sign = b"-" if offset < timedelta(0) else b"+"
    minutes = abs(int(offset.total_seconds())) // 60
    return _DATE.pack(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond // 100_000, sign, minutes // 60, minutes % 60,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            left = len(self.data) - self.pos
            raise IppError(f"truncated at byte {self.pos}: {what} needs {n} bytes, {left} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")


def decode(data: bytes) -> IppMessage:
    """Parse a whole IPP message; IppError says what is wrong and where."""
    r = _Reader(data)
    header = r.take(8, "the IPP header")
    major, minor = header[0], header[1]
    if major not in (1, 2):
        raise IppError(f"not an IPP message: version {major}.{minor} (first bytes {data[:8]!r})")
    code, request_id = struct.unpack(">HI", header[2:])
    groups: list[AttributeGroup] = []
    group_tag: int | None = None
    attrs: list[_Building] = []
    while True:
        start = r.pos
        tag = r.u8("the next tag (no end-of-attributes tag)")
        if tag < 0x10:
            if group_tag is not None:
                groups.append(AttributeGroup(group_tag, tuple(a.build() for a in attrs)))
            if tag == Tag.END:
                break
            if tag == 0x00:
                raise IppError(f"byte {start}: 0x00 is a reserved delimiter tag")
            group_tag, attrs = tag, []
            continue
        if group_tag is None:
            raise IppError(f"byte {start}: value tag 0x{tag:02x} before any attribute group")
        name = _text(r.take(r.u16("a name length"), "an attribute name"))
        if not name and not attrs:
            raise IppError(f"byte {start}: additional value (empty name) with no attribute before it")
        value = _read_value(r, tag, name or attrs[-1].name, depth=0)
        if name:
            attrs.append(_Building(name))
        attrs[-1].add(tag, value)
    return IppMessage(code, request_id, tuple(groups), (major, minor), data[r.pos :])


@dataclass
class _Building:
    name: str
    values: list[Value] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)

    def add(self, tag: int, value: Value) -> None:
        self.tags.append(tag)
        self.values.append(value)

    def build(self) -> Attribute:
        return Attribute(self.name, tuple(self.values), tuple(self.tags))


def _read_value(r: _Reader, tag: int, name: str, depth: int) -> Value:
    start = r.pos
    raw = r.take(r.u16(f"the value length of {name!r}"), f"the value of {name!r}")
    if tag == Tag.BEGIN_COLLECTION:
        return _read_collection(r, name, depth + 1)
    if tag in (Tag.END_COLLECTION, Tag.MEMBER_ATTR_NAME):
        raise IppError(f"byte {start}: {Tag(tag).name} in {name!r} outside a collection")
    size = _FIXED_SIZE.get(tag)
    if size is not None and len(raw) != size:
        raise IppError(f"byte {start}: {name!r} {Tag(tag).name.lower()} value is {len(raw)} bytes, expected {size}")
    if 0x10 <= tag <= 0x1F:
        return OutOfBand(tag)  # RFC 8010 3.8: any value bytes are ignored
    if tag in (Tag.INTEGER, Tag.ENUM):
        return int(_INT.unpack(raw)[0])
    if tag == Tag.BOOLEAN:
        if raw[0] > 1:
            raise IppError(f"byte {start}: {name!r} boolean is 0x{raw[0]:02x}, expected 0x00 or 0x01")
        return raw[0] == 1
    if tag == Tag.DATE_TIME:
        return _decode_date(raw)
    if tag == Tag.RESOLUTION:
        return Resolution(*_RESOLUTION.unpack(raw))
    if tag == Tag.RANGE_OF_INTEGER:
        return RangeOfInteger(*_RANGE.unpack(raw))
    if tag in (Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE):
        return _decode_with_language(raw, name, start)
    if 0x40 <= tag <= 0x5F:
        return _text(raw)
    return raw  # octetString, and tags this codec does not know: the bytes as sent


def _read_collection(r: _Reader, name: str, depth: int) -> Collection:
    if depth > MAX_COLLECTION_DEPTH:
        raise IppError(f"byte {r.pos}: collections in {name!r} nest deeper than {MAX_COLLECTION_DEPTH}")
    members: list[_Building] = []
    while True:
        start = r.pos
        tag = r.u8(f"the next member of collection {name!r} (no endCollection)")
        if r.u16(f"a name length in collection {name!r}") != 0:
            raise IppError(f"byte {start}: a value inside collection {name!r} has a name (must be empty)")
        if tag == Tag.END_COLLECTION:
            r.take(r.u16(f"the endCollection length of {name!r}"), f"the endCollection of {name!r}")
            return Collection(tuple(m.build() for m in members))
        if tag < 0x10:
            raise IppError(f"byte {start}: delimiter 0x{tag:02x} inside collection {name!r}")
        if tag == Tag.MEMBER_ATTR_NAME:
            member = _text(r.take(r.u16(f"a member name length in {name!r}"), f"a member name in {name!r}"))
            if not member:
                raise IppError(f"byte {start}: empty member name in collection {name!r}")
            members.append(_Building(member))
            continue
        if not members:
            raise IppError(f"byte {start}: value in collection {name!r} before any member name")
        members[-1].add(tag, _read_value(r, tag, f"{name}.{members[-1].name}", depth))


def _decode_with_language(raw: bytes, name: str, start: int) -> TextWithLanguage:
    if len(raw) < 4:
        raise IppError(f"byte {start}: {name!r} text-with-language value is {len(raw)} bytes, too short")
    n_lang = int.from_bytes(raw[:2], "big")
    if 2 + n_lang + 2 > len(raw):
        raise IppError(f"byte {start}: {name!r} language length {n_lang} runs past its value")
    n_text = int.from_bytes(raw[2 + n_lang : 4 + n_lang], "big")
    if 4 + n_lang + n_text != len(raw):
        raise IppError(f"byte {start}: {name!r} text length {n_text} does not match its value length {len(raw)}")
    return TextWithLanguage(_text(raw[2 : 2 + n_lang]), _text(raw[4 + n_lang :]))


def _decode_date(raw: bytes) -> datetime | bytes:
    year, month, day, hour, minute, second, deci, sign, off_h, off_m = _DATE.unpack(raw)
    try:
        offset = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-offset if sign == b"-" else offset)
        return datetime(year, month, day, hour, minute, second, deci * 100_000, tzinfo=tz)
    except ValueError:
        # Well-formed but not a date (printers with an unset clock send zeros): keep the bytes
        # rather than lose the whole answer over one timestamp.
        return raw


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
