"""PWG Raster (PWG 5102.4), the document format every IPP Everywhere printer takes: enough to write pages and to
count them. Stdlib only.

The rule: a page is counted only once its whole image has been decoded. The simulated printer
(drivers/ipp/sim.py) charges toner and paper per page from this count, so a truncated or malformed
document is a ``RasterError`` naming the page and byte offset, never a page count that guesses.

A file is the sync word ``RaS2`` then, per page, a 1796-byte big-endian header and the image, each line
compressed as: one line-repeat byte (the line is used 1-256 times), then runs until the line is full:
a count byte 0-127 repeats the next pixel count+1 times, 128-255 is 257-count literal pixels. A "pixel"
is ``bits_per_pixel / 8`` bytes, or one byte below 8 bits per pixel.
"""

from __future__ import annotations

import struct

SYNC = b"RaS2"
HEADER_SIZE = 1796
MAX_PAGES = 10_000  # a kiosk job is a few pages; a "document" of more is not a print job
MAX_LINE_BYTES = 1 << 20

_U32 = struct.Struct(">I")
# Offsets of the header fields read and written here (the CUPS page header v2 layout PWG Raster reuses).
_MEDIA_CLASS, _HW_RESOLUTION, _NUM_COPIES, _PAGE_SIZE = 0, 276, 340, 352
_WIDTH, _HEIGHT, _BITS_PER_COLOR, _BITS_PER_PIXEL, _BYTES_PER_LINE = 372, 376, 384, 388, 392
_COLOR_SPACE, _NUM_COLORS, _TOTAL_PAGES = 400, 420, 452
SGRAY = 18  # PWG's cupsColorSpace for sGray
A4_POINTS = (595, 842)
A4_MM = (210.0, 297.0)


class RasterError(ValueError):
    """Bytes that are not a whole PWG Raster document; the message says where and what."""


def a4_pages(n: int, dpi: int = 75, ink_lines: int = 40) -> bytes:
    """``n`` A4 pages in 8-bit grey: white, with ``ink_lines`` black lines across the top (some text)."""
    if not 1 <= n <= MAX_PAGES:
        raise ValueError(f"pages must be 1..{MAX_PAGES}, not {n}")
    width, height = (round(mm / 25.4 * dpi) for mm in A4_MM)
    ink_lines = min(ink_lines, height)
    page = _header(width, height, dpi, n) + _lines(0x00, width, ink_lines) + _lines(0xFF, width, height - ink_lines)
    return SYNC + page * n


def _header(width: int, height: int, dpi: int, total: int) -> bytes:
    h = bytearray(HEADER_SIZE)
    h[_MEDIA_CLASS : _MEDIA_CLASS + 9] = b"PwgRaster"
    struct.pack_into(">II", h, _HW_RESOLUTION, dpi, dpi)
    _U32.pack_into(h, _NUM_COPIES, 1)
    struct.pack_into(">II", h, _PAGE_SIZE, *A4_POINTS)
    for offset, value in (
        (_WIDTH, width),
        (_HEIGHT, height),
        (_BITS_PER_COLOR, 8),
        (_BITS_PER_PIXEL, 8),
        (_BYTES_PER_LINE, width),
        (_COLOR_SPACE, SGRAY),
        (_NUM_COLORS, 1),
        (_TOTAL_PAGES, total),
    ):
        _U32.pack_into(h, offset, value)
    return bytes(h)


def _lines(value: int, width: int, count: int) -> bytes:
    """``count`` identical lines of one grey ``value``: line-repeat bytes of at most 256 lines each."""
    runs = bytearray()
    left = width
    while left:
        n = min(left, 128)
        runs += bytes([n - 1, value])
        left -= n
    out = bytearray()
    while count > 0:
        n = min(count, 256)
        out += bytes([n - 1]) + runs
        count -= n
    return bytes(out)


def count_pages(data: bytes) -> int:
    """Pages in a whole PWG Raster document; RasterError for anything that is not one."""
    if data[:4] != SYNC:
        raise RasterError(f"not PWG Raster: starts with {data[:4]!r}, not {SYNC!r}")
    pos, pages = 4, 0
    while pos < len(data):
        if pages == MAX_PAGES:
            raise RasterError(f"more than {MAX_PAGES} pages")
        pages += 1
        pos = _skip_page(data, pos, pages)
    if pages == 0:
        raise RasterError("a PWG Raster document with no page")
    return pages


def _skip_page(data: bytes, pos: int, page: int) -> int:
    """The offset just past page ``page``, whose header starts at ``pos``."""
    if pos + HEADER_SIZE > len(data):
        raise RasterError(f"page {page}: header cut short at byte {pos} ({len(data) - pos} of {HEADER_SIZE} bytes)")
    height, bpp, bpl = (_U32.unpack_from(data, pos + o)[0] for o in (_HEIGHT, _BITS_PER_PIXEL, _BYTES_PER_LINE))
    unit = max(1, bpp // 8)
    if bpp == 0 or bpp > 128 or not 0 < bpl <= MAX_LINE_BYTES or bpl % unit:
        raise RasterError(f"page {page}: bad header ({bpp} bits per pixel, {bpl} bytes per line)")
    pos += HEADER_SIZE
    y = 0
    while y < height:
        if pos >= len(data):
            raise RasterError(f"page {page}: image cut short at line {y} of {height}")
        y += data[pos] + 1
        pos = _skip_line(data, pos + 1, bpl // unit, unit, page)
    return pos


def _skip_line(data: bytes, pos: int, pixels: int, unit: int, page: int) -> int:
    done = 0
    while done < pixels:
        if pos >= len(data):
            raise RasterError(f"page {page}: a line cut short at byte {pos}")
        count = data[pos]
        n, size = (count + 1, unit) if count < 128 else (257 - count, (257 - count) * unit)
        if done + n > pixels:
            raise RasterError(f"page {page}: a run at byte {pos} overflows its line ({done + n} > {pixels} pixels)")
        pos += 1 + size
        done += n
    if pos > len(data):
        raise RasterError(f"page {page}: the last run of a line is cut short")
    return pos
