"""The kiosk's A4 printer over IPP: codec bytes, what printer-supply means, and get_status and print_job
against a real emulated printer (CUPS's ippeveprinter, driven through its own /supplies and /media pages) and,
with the same assertions, against the simulated twin (drivers/ipp/sim.py; its own model in test_ipp_sim.py).

Nothing here skips: without ippeveprinter the printer tests fail and say to run scripts/setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.ipp import A4PrinterConfig, A4Status, get_status
from drivers.ipp.client import print_job
from drivers.ipp.codec import (
    Attribute,
    AttributeGroup,
    Collection,
    IppError,
    IppMessage,
    OutOfBand,
    RangeOfInteger,
    Resolution,
    Tag,
    TextWithLanguage,
    decode,
    encode,
    encode_get_printer_attributes,
)
from drivers.ipp.raster import a4_pages
from drivers.ipp.status import parse_markers, parse_printer_supply, parse_status, split_reasons
from tests.support.a4printers import KINDS, A4Under, a4_printer
from tests.support.ippeveprinter import IppEveError, IppEvePrinter, ensure_system_daemons, find_binary

pytestmark = pytest.mark.timeout(30)

HDR = bytes([1, 1, 0, 0, 0, 0, 0, 1])  # IPP/1.1, successful-ok, request 1
PWG_EXAMPLE = (
    "type=toner;maxcapacity=100;level=45;index=1;markerindex=1;class=supplyThatIsConsumed;unit=percent;"
    "colorantindex=1;colorantrole=process;colorantname=black;coloranttonality=128;"
)
# What ippeveprinter sends for its monochrome printer (CUPS 2.4.2).
EVE_WASTE = (
    "index=1;class=receptacleThatIsFilled;type=wasteToner;unit=percent;maxcapacity=100;level=25;colorantname=unknown;"
)
EVE_BLACK = "index=2;class=supplyThatIsConsumed;type=toner;unit=percent;maxcapacity=100;level=75;colorantname=black;"


# --------------------------------------------------------------------------------------- codec


def rich_response() -> IppMessage:
    """A response with every value tag the codec handles, multi-valued attributes and collections."""
    x, y = Attribute.of("x-dimension", Tag.INTEGER, 21000), Attribute.of("y-dimension", Tag.INTEGER, 29700)
    size = Collection((x, y))
    media_col = Collection(
        (
            Attribute.of("media-size", Tag.BEGIN_COLLECTION, size),
            Attribute.of("media-source", Tag.KEYWORD, "main"),
            Attribute.of("media-type", Tag.KEYWORD, "stationery"),
        )
    )
    printer = (
        Attribute.of("printer-state", Tag.ENUM, 3),
        Attribute.of("printer-state-reasons", Tag.KEYWORD, "toner-low-report", "media-empty-error"),
        Attribute.of("printer-is-accepting-jobs", Tag.BOOLEAN, True),
        Attribute.of("color-supported", Tag.BOOLEAN, False),
        Attribute.of("queued-job-count", Tag.INTEGER, -7),
        Attribute.of("printer-supply", Tag.OCTET_STRING, EVE_WASTE.encode(), EVE_BLACK.encode()),
        Attribute.of("printer-supply-description", Tag.TEXT, "Toner Waste Tank", "Black Toner"),
        Attribute.of("printer-info", Tag.TEXT_WITH_LANGUAGE, TextWithLanguage("zh-cn", "自助打印机")),
        Attribute.of("printer-name", Tag.NAME_WITH_LANGUAGE, TextWithLanguage("en", "Kiosk A4")),
        Attribute.of("printer-location", Tag.TEXT, "Hall 2, window 7"),
        Attribute.of("printer-make-and-model", Tag.NAME, "HallFleet Kiosk A4"),
        Attribute.of("printer-uri-supported", Tag.URI, "ipp://h/ipp/print", "ipps://h/ipp/print"),
        Attribute.of("reference-uri-schemes-supported", Tag.URI_SCHEME, "http"),
        Attribute.of("charset-configured", Tag.CHARSET, "utf-8"),
        Attribute.of("natural-language-configured", Tag.NATURAL_LANGUAGE, "zh-cn"),
        Attribute.of("document-format-supported", Tag.MIME_MEDIA_TYPE, "application/pdf", "image/urf"),
        Attribute.of(
            "printer-current-time", Tag.DATE_TIME, datetime(2025, 3, 1, 8, 30, 5, 700_000, timezone(timedelta(hours=8)))
        ),
        Attribute.of("printer-resolution-default", Tag.RESOLUTION, Resolution(600, 600, 3)),
        Attribute.of("copies-supported", Tag.RANGE_OF_INTEGER, RangeOfInteger(1, 999)),
        Attribute.of("printer-geo-location", Tag.UNKNOWN, OutOfBand(Tag.UNKNOWN)),
        Attribute.of("printer-alert", Tag.NO_VALUE, OutOfBand(Tag.NO_VALUE)),
        Attribute.of("media-col-ready", Tag.BEGIN_COLLECTION, media_col, media_col),
        Attribute.of("x-vendor-extension", 0x7F, b"\x40\x00\x00\x01raw"),
        Attribute("job-sheets-supported", ("none", "standard"), (Tag.KEYWORD, Tag.NAME)),  # mixed tags in a 1setOf
        Attribute.of("printer-impressions-completed", Tag.INTEGER, 1234),
    )
    operation = (
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
    )
    groups = (AttributeGroup(Tag.OPERATION, operation), AttributeGroup(Tag.PRINTER, printer))
    return IppMessage(0x0000, 42, groups, (2, 0), b"trailing document data")


def test_get_printer_attributes_request_is_the_bytes_rfc_8010_describes() -> None:
    raw = encode_get_printer_attributes("ipp://kiosk/ipp/print", ["printer-state", "printer-supply"], request_id=7)
    assert raw[:8] == bytes([1, 1, 0x00, 0x0B, 0, 0, 0, 7])  # version 1.1, Get-Printer-Attributes, request 7
    assert raw[8] == 0x01  # operation-attributes-tag
    assert raw[9:37] == b"\x47\x00\x12attributes-charset\x00\x05utf-8"
    assert raw.endswith(b"\x44\x00\x00\x00\x0eprinter-supply\x03")  # additional value: empty name; then end
    op = decode(raw).attributes(Tag.OPERATION)
    assert list(op) == ["attributes-charset", "attributes-natural-language", "printer-uri", "requested-attributes"]
    assert op["printer-uri"].tag == Tag.URI
    assert op["requested-attributes"].values == ("printer-state", "printer-supply")


def test_every_value_tag_round_trips() -> None:
    msg = rich_response()
    again = decode(encode(msg))
    assert again == msg
    attrs = again.attributes(Tag.PRINTER)
    assert attrs["printer-is-accepting-jobs"].value is True
    assert attrs["queued-job-count"].value == -7
    when = attrs["printer-current-time"].value
    assert isinstance(when, datetime) and when.utcoffset() == timedelta(hours=8) and when.microsecond == 700_000
    media = attrs["media-col-ready"]
    assert len(media.values) == 2 and isinstance(media.value, Collection)
    size = media.value.get("media-size")
    assert size is not None and isinstance(size.value, Collection)
    assert size.value.get("y-dimension") == Attribute.of("y-dimension", Tag.INTEGER, 29700)
    assert attrs["printer-geo-location"].value == OutOfBand(Tag.UNKNOWN)
    assert OutOfBand(Tag.NO_VALUE).name == "no-value"
    assert again.data == b"trailing document data"


def test_a_date_that_is_not_a_date_keeps_its_bytes() -> None:
    zeros = b"\x00" * 8 + b"+\x00\x00"  # printers with an unset clock
    raw = HDR + b"\x04\x31\x00\x01t\x00\x0b" + zeros + b"\x03"
    assert decode(raw).attributes(Tag.PRINTER)["t"].value == zeros


def _nested(depth: int) -> bytes:
    inner = b"".join(b"\x4a\x00\x00\x00\x01m\x34\x00\x00\x00\x00" for _ in range(depth))
    return HDR + b"\x04\x34\x00\x01c\x00\x00" + inner + b"\x37\x00\x00\x00\x00" * (depth + 1) + b"\x03"


MALFORMED = {
    "empty": (b"", "truncated at byte 0: the IPP header needs 8 bytes, 0 left"),
    "an HTTP page": (b"HTTP/1.1 200 OK\r\n\r\n<html>", "not an IPP message: version 72.84"),
    "no end tag": (HDR + b"\x04", "no end-of-attributes tag"),
    "name past the end": (HDR + b"\x04\x21\x00\x10abc", "truncated at byte 12: an attribute name needs 16 bytes"),
    "value past the end": (HDR + b"\x04\x21\x00\x01n\x00\x04\x00", "the value of 'n' needs 4 bytes, 1 left"),
    "3-byte integer": (HDR + b"\x04\x21\x00\x01n\x00\x03\x00\x00\x01\x03", "'n' integer value is 3 bytes, expected 4"),
    "boolean 2": (HDR + b"\x04\x22\x00\x01b\x00\x01\x02\x03", "'b' boolean is 0x02"),
    "10-byte date": (HDR + b"\x04\x31\x00\x01t\x00\x0a" + bytes(10) + b"\x03", "date_time value is 10 bytes"),
    "extra value first": (HDR + b"\x04\x44\x00\x00\x00\x01a\x03", "additional value (empty name) with no attribute"),
    "value before any group": (HDR + b"\x44\x00\x01a\x00\x01b\x03", "before any attribute group"),
    "reserved delimiter": (HDR + b"\x00\x03", "0x00 is a reserved delimiter tag"),
    "endCollection outside": (HDR + b"\x04\x37\x00\x01a\x00\x00\x03", "END_COLLECTION in 'a' outside a collection"),
    "unterminated collection": (
        HDR + b"\x04\x34\x00\x01c\x00\x00\x4a\x00\x00\x00\x01m\x21\x00\x00\x00\x04\x00\x00\x00\x01",
        "no endCollection",
    ),
    "member value before its name": (
        HDR + b"\x04\x34\x00\x01c\x00\x00\x21\x00\x00\x00\x04\x00\x00\x00\x01\x37\x00\x00\x00\x00\x03",
        "before any member name",
    ),
    "named value in a collection": (HDR + b"\x04\x34\x00\x01c\x00\x00\x4a\x00\x01x\x00\x01m\x03", "has a name"),
    "text-with-language lengths disagree": (
        HDR + b"\x04\x35\x00\x01t\x00\x06\x00\x02en\x00\x05\x03",
        "text length 5 does not match its value length 6",
    ),
    "collections 40 deep": (_nested(40), "nest deeper than 16"),
}


@pytest.mark.parametrize("raw, what", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bytes_raise_ipp_error_saying_what_is_wrong(raw: bytes, what: str) -> None:
    with pytest.raises(IppError) as info:
        decode(raw)
    assert what in str(info.value)


def test_collections_16_deep_still_decode() -> None:
    assert decode(_nested(15)).attributes(Tag.PRINTER)["c"].tag == Tag.BEGIN_COLLECTION


def test_truncated_or_mutated_responses_raise_only_ipp_error_and_never_break_parse_status() -> None:
    good = encode(rich_response())
    end = good.index(b"trailing")
    for n in range(end):  # every cut before the end tag is an IppError, never an IndexError
        with pytest.raises(IppError):
            decode(good[:n])
    rng = random.Random(8011)
    decoded = 0
    for _ in range(3000):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        try:
            msg = decode(bytes(raw))
        except IppError:
            continue
        decoded += 1
        status = parse_status(msg.attributes(Tag.PRINTER))
        assert status.faults is not None and status.warnings is not None
    assert decoded > 100  # the fuzzing did reach parse_status


def test_values_that_cannot_be_encoded_raise_ipp_error() -> None:
    with pytest.raises(IppError, match="cannot encode"):
        encode(IppMessage(0, 1, (AttributeGroup(Tag.PRINTER, (Attribute.of("n", Tag.INTEGER, 2**40),)),)))
    with pytest.raises(IppError, match="cannot encode str"):
        encode(IppMessage(0, 1, (AttributeGroup(Tag.PRINTER, (Attribute.of("n", Tag.INTEGER, "7"),)),)))
    with pytest.raises(IppError, match="65535"):
        encode(IppMessage(0, 1, (AttributeGroup(Tag.PRINTER, (Attribute.of("t", Tag.TEXT, "x" * 70000),)),)))


# ------------------------------------------------------------------------ supplies and reasons


def test_pwg_printer_supply_example_reads_as_black_toner_at_45_percent() -> None:
    (s,) = parse_printer_supply((PWG_EXAMPLE,))
    assert (s.kind, s.color, s.level_pct, s.raw_level, s.max_capacity) == ("toner", "black", 45.0, 45, 100)
    assert s.state == "ok"
    assert s.name == "black toner" and not s.receptacle


def test_ippeveprinter_supplies_read_as_a_waste_tank_and_black_toner() -> None:
    waste, black = parse_printer_supply((EVE_WASTE, EVE_BLACK), ("Toner Waste Tank", "Black Toner"))
    assert (waste.name, waste.kind, waste.receptacle, waste.color, waste.level_pct, waste.state) == (
        "Toner Waste Tank", "waste", True, None, 25.0, "ok",
    )  # fmt: skip
    assert (black.name, black.kind, black.color, black.level_pct) == ("Black Toner", "toner", "black", 75.0)
    assert black.state == "ok"


@pytest.mark.parametrize(
    "level, receptacle, state",
    [(-1, False, "unknown"), (-2, False, "unknown"), (-3, False, "ok"), (-1, True, "unknown"), (-3, True, "ok")],
    ids=["other", "unknown", "some-remaining", "waste-other", "waste-some-room"],
)
def test_sentinel_levels_are_states_never_numbers(level: int, receptacle: bool, state: str) -> None:
    cls = "receptacleThatIsFilled" if receptacle else "supplyThatIsConsumed"
    (s,) = parse_printer_supply((f"type=toner;class={cls};unit=percent;maxcapacity=100;level={level};",))
    assert s.level_pct is None and s.raw_level == level and s.state == state
    status = A4Status(reachable=True, supplies=(s,))
    assert status.faults == () and status.warnings == ()


@pytest.mark.parametrize(
    "entry, pct, state",
    [
        ("type=tonerCartridge;class=supplyThatIsConsumed;unit=impressions;maxcapacity=12000;level=600;", 5.0, "low"),
        ("type=toner;class=supplyThatIsConsumed;unit=percent;maxcapacity=100;level=10;", 10.0, "low"),
        ("type=toner;class=supplyThatIsConsumed;unit=percent;maxcapacity=100;level=0;", 0.0, "empty"),
        ("type=toner;class=supplyThatIsConsumed;unit=percent;maxcapacity=-2;level=45;", 45.0, "ok"),
        ("type=toner;class=supplyThatIsConsumed;unit=impressions;maxcapacity=-2;level=500;", None, "unknown"),
        ("type=toner;class=supplyThatIsConsumed;unit=impressions;maxcapacity=-2;level=0;", None, "empty"),
        ("type=toner;level=abc;maxcapacity=100;", None, "unknown"),
        ("type=inkCartridge;level=120;maxcapacity=100;colorantname=cyan;", 100.0, "ok"),
    ],
    ids=["capacity-12000", "at-threshold", "zero", "unknown-cap-percent", "unknown-cap", "zero-no-cap", "junk", "over"],
)
def test_level_percentages_and_states(entry: str, pct: float | None, state: str) -> None:
    (s,) = parse_printer_supply((entry,))
    assert (s.level_pct, s.state) == (pct, state)


@pytest.mark.parametrize(
    "entry",
    [
        "index=1;class=receptacleThatIsFilled;type=wasteToner;unit=percent;maxcapacity=100;level={};",
        "index=1;type=wasteToner;unit=percent;maxcapacity=100;level={};",  # no class: the type says waste
    ],
    ids=["class", "type-only"],
)
def test_waste_counts_up_and_full_is_a_fault_never_an_empty_supply(entry: str) -> None:
    states = {lvl: parse_printer_supply((entry.format(lvl),))[0] for lvl in (0, 25, 95, 100)}
    assert {lvl: s.state for lvl, s in states.items()} == {0: "ok", 25: "ok", 95: "almost-full", 100: "full"}
    assert A4Status(reachable=True, supplies=(states[95],)).warnings == ("marker-waste-almost-full",)
    assert A4Status(reachable=True, supplies=(states[100],)).faults == ("marker-waste-full",)
    assert A4Status(reachable=True, supplies=(states[0],)).faults == ()


def test_junk_supply_entries_are_skipped_not_fatal() -> None:
    supplies = parse_printer_supply(("", "garbage", ";;;", "=5;", EVE_BLACK))
    assert [s.kind for s in supplies] == ["toner"]


def test_reasons_lose_their_severity_suffix_into_a_map_and_classify_by_name() -> None:
    reasons, severity = split_reasons(
        ("toner-low-warning", "media-empty-error", "cover-open-report", "none", "media-jam", "media-jam-report")
    )
    assert reasons == ("toner-low", "media-empty", "cover-open", "media-jam")
    assert severity == {"toner-low": "warning", "media-empty": "error", "cover-open": "report", "media-jam": "error"}
    status = A4Status(reachable=True, state="idle", state_reasons=reasons, severity=severity)
    # ippeveprinter sends every reason as -report while idle: a -report cover-open still stops printing.
    assert status.faults == ("media-empty", "cover-open", "media-jam")
    assert status.warnings == ("toner-low",)
    assert A4Status(reachable=True, state="stopped").faults == ("stopped",)
    assert A4Status.unreachable("refused").faults == ("unreachable",)


def test_marker_attributes_are_the_fallback_with_the_printers_own_low_levels() -> None:
    attrs = {
        a.name: a
        for a in (
            Attribute.of("marker-names", Tag.NAME, "Black", "Cyan", "Waste", "Drum"),
            Attribute.of("marker-types", Tag.KEYWORD, "toner-cartridge", "toner", "waste-toner", "opc"),
            Attribute.of("marker-colors", Tag.NAME, "#000000", "#00FFFF", "none", "#000000"),
            Attribute.of("marker-levels", Tag.INTEGER, 14, -3, 92, -2),
            Attribute.of("marker-low-levels", Tag.INTEGER, 15, 5, 0, 10),
            Attribute.of("marker-high-levels", Tag.INTEGER, 100, 100, 90, 100),
        )
    }
    black, cyan, waste, drum = parse_markers(attrs)
    assert (black.kind, black.color, black.level_pct, black.state) == ("toner", "black", 14.0, "low")  # its 15 %
    assert (cyan.color, cyan.level_pct, cyan.state) == ("cyan", None, "ok")
    assert (waste.kind, waste.receptacle, waste.state) == ("waste", True, "almost-full")  # its high level 90
    assert (drum.kind, drum.level_pct, drum.state) == ("drum", None, "unknown")
    assert parse_status(attrs).supplies == (black, cyan, waste, drum)


def test_page_counters_from_the_impressions_collection() -> None:
    col = Collection((Attribute.of("monochrome", Tag.INTEGER, 900), Attribute.of("full-color", Tag.INTEGER, 100)))
    name = "printer-impressions-completed-col"
    attrs = {name: Attribute.of(name, Tag.BEGIN_COLLECTION, col)}
    c = parse_status(attrs).counters
    assert (c.pages, c.monochrome, c.color, c.sheets) == (1000, 900, 100, None)
    attrs["printer-impressions-completed"] = Attribute.of("printer-impressions-completed", Tag.INTEGER, 1005)
    assert parse_status(attrs).counters.pages == 1005  # the printer's own total wins


def test_config_names_every_field_and_rejects_what_is_not_a_printer_url() -> None:
    assert all(f.description for f in A4PrinterConfig.model_fields.values())
    assert A4PrinterConfig(url="http://h:631/ipp/print").printer_uri == "ipp://h:631/ipp/print"
    assert A4PrinterConfig(url="ipps://h/ipp/print").tls
    for bad in ("ftp://h/x", "ipp:///ipp/print", "ipp://h:port/x"):
        with pytest.raises(ValidationError):
            A4PrinterConfig(url=bad)
    with pytest.raises(ValidationError):
        A4PrinterConfig.model_validate({"url": "ipp://h/ipp/print", "colour": "red"})


# --------------------------------------------------------------------- the real emulated printer


@pytest.fixture
def printer(tmp_path: Path) -> Iterator[IppEvePrinter]:
    p = IppEvePrinter(tmp_path / "printer").start()
    try:
        yield p
    finally:
        p.stop()
        assert not p.alive, "ippeveprinter outlived its test"


async def read(url: str, **kw: object) -> tuple[A4Status, float]:
    t0 = time.monotonic()
    status = await get_status(A4PrinterConfig.model_validate({"url": url, **kw}))
    return status, time.monotonic() - t0


def test_a_missing_ippeveprinter_fails_saying_to_run_setup() -> None:
    with pytest.raises(IppEveError, match="ippeveprinter-not-here not found: run scripts/setup"):
        find_binary("ippeveprinter-not-here")


def test_system_daemons_helper_is_idempotent() -> None:
    ensure_system_daemons()
    assert ensure_system_daemons() == []


# The same client assertions against ippeveprinter and the simulated twin (drivers/ipp/sim.py): what differs
# between them is named here, per printer, so the twin cannot drift from a real printer unnoticed.
PAGE_COUNTER = {"ippeveprinter": None, "twin": 0}  # ippeveprinter keeps no counters: None, never a made-up 0
LOW_SEVERITY = {"ippeveprinter": "report", "twin": "warning"}  # ippeveprinter's follows its idle state


@pytest.fixture(params=KINDS)
async def a4(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[A4Under]:
    async with a4_printer(request.param, tmp_path) as printer:
        yield printer


async def test_reads_an_idle_printer_its_supplies_and_paper(a4: A4Under) -> None:
    status, _ = await read(a4.url)
    assert status.reachable and status.error is None
    assert (status.state, status.state_reasons, status.faults, status.warnings) == ("idle", (), (), ())
    assert status.accepting_jobs is True and status.model == "HallFleet Kiosk A4"
    assert [(s.name, s.kind, s.level_pct, s.state, s.receptacle) for s in status.supplies] == [
        ("Toner Waste Tank", "waste", 25.0, "ok", True),
        ("Black Toner", "toner", 75.0, "ok", False),
    ]
    assert status.media.ready and {t.name for t in status.media.trays} >= {"main", "by-pass-tray"}
    assert next(t for t in status.media.trays if t.name == "by-pass-tray").state == "unknown"  # not sensed
    assert status.counters.pages == PAGE_COUNTER[a4.kind]


async def test_toner_set_low_on_its_web_page_reads_low_with_a_toner_low_reason(a4: A4Under) -> None:
    a4.set_supply("Black Toner", 5)
    status, _ = await read(a4.url)
    black = next(s for s in status.supplies if s.kind == "toner")
    assert (black.level_pct, black.state) == (5.0, "low")
    assert "toner-low" in status.state_reasons and status.warnings == ("toner-low",) and status.faults == ()
    assert status.severity["toner-low"] == LOW_SEVERITY[a4.kind]

    a4.set_supply("Black Toner", 0)
    status, _ = await read(a4.url)
    assert next(s for s in status.supplies if s.kind == "toner").state == "empty"
    assert status.faults == ("toner-empty",) and "toner-low" not in status.state_reasons


async def test_full_waste_tank_is_a_fault(a4: A4Under) -> None:
    a4.set_supply("Toner Waste Tank", 95)
    status, _ = await read(a4.url)
    assert status.warnings == ("marker-waste-almost-full",) and status.faults == ()
    a4.set_supply("Toner Waste Tank", 100)
    status, _ = await read(a4.url)
    waste = next(s for s in status.supplies if s.receptacle)
    assert (waste.level_pct, waste.state) == (100.0, "full")
    assert status.faults == ("marker-waste-full",)
    assert next(s for s in status.supplies if s.kind == "toner").state == "ok"  # the toner is untouched


async def test_empty_paper_tray_is_a_media_empty_fault_until_a4_is_loaded(a4: A4Under) -> None:
    a4.set_tray("main", sheets=0)
    status, _ = await read(a4.url)
    assert "media-empty" in status.faults and status.media.reasons == ("media-empty",)
    assert next(t for t in status.media.trays if t.name == "main").state == "empty"

    a4.set_tray("main", sheets=250, size="iso_a4_210x297mm")
    status, _ = await read(a4.url)
    assert status.faults == () and status.media.has("iso_a4_210x297mm")
    assert next(t for t in status.media.trays if t.name == "main").level_pct == 100.0


async def test_stopped_printer_process_reads_unreachable_with_the_reason(a4: A4Under) -> None:
    url = a4.url
    assert (await read(url))[0].reachable
    a4.stop()
    status, took = await read(url, timeout_s=2)
    assert not status.reachable and status.faults == ("unreachable",)
    assert status.error == f"connection to {url} failed: Connection refused"
    assert took < 2


async def test_wrong_ipp_path_reads_unreachable_with_the_ipp_status(a4: A4Under) -> None:
    status, _ = await read(a4.url.replace("/ipp/print", "/ipp/nothing"))
    assert not status.reachable
    assert status.error is not None and "client-error-not-found" in status.error


async def test_print_job_takes_pwg_raster_and_refuses_a_format_it_does_not_print(a4: A4Under) -> None:
    cfg = A4PrinterConfig(url=a4.url)
    refused = await print_job(cfg, b"%PDF-1.7", "application/pdf")  # first: ippeveprinter is busy after a job
    assert not refused.accepted and refused.error is not None
    assert "refused Print-Job: client-error-attributes-or-values-not-supported" in refused.error
    job = await print_job(cfg, a4_pages(2), job_name="办事指南")
    assert job.accepted and job.error is None and job.job_id is not None and job.job_id >= 1
    assert job.state in ("pending", "processing", "completed")


async def test_ipps_with_the_printers_pinned_certificate(printer: IppEvePrinter) -> None:
    pinned, _ = await read(printer.ipps_url, ca_file=str(printer.fetch_certificate()))
    assert pinned.reachable and pinned.state == "idle"
    unpinned, _ = await read(printer.ipps_url)  # system CAs do not know a self-signed printer
    assert not unpinned.reachable and unpinned.error is not None and "CERTIFICATE_VERIFY_FAILED" in unpinned.error
    unverified, _ = await read(printer.ipps_url, verify_tls=False)
    assert unverified.reachable


async def test_printer_without_printer_supply_falls_back_to_marker_attributes(tmp_path: Path) -> None:
    conf = tmp_path / "markers.conf"
    conf.write_text(
        "ATTR keyword marker-types toner,waste-toner\n"
        'ATTR name marker-names "Black Toner","Waste Toner Box"\n'
        "ATTR integer marker-levels 3,-3\n"
        "ATTR integer marker-low-levels 5,0\n"
        "ATTR integer marker-high-levels 100,90\n"
        'ATTR name marker-colors "#000000",none\n'
    )
    with IppEvePrinter(tmp_path / "printer", attributes=conf) as p:
        status, _ = await read(p.url)
    assert status.reachable
    assert [(s.name, s.kind, s.color, s.level_pct, s.raw_level, s.state) for s in status.supplies] == [
        ("Black Toner", "toner", "black", 3.0, 3, "low"),
        ("Waste Toner Box", "waste", None, None, -3, "ok"),
    ]
    assert status.warnings == ("toner-low",)


# ----------------------------------------------------------------- things that are not printers


@contextlib.asynccontextmanager
async def tcp_server(answer: bytes | None) -> AsyncIterator[int]:
    """A loopback server that reads the request and sends ``answer`` (None: never answers)."""
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(65536)
            if answer is None:
                await stop.wait()
            else:
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        stop.set()
        server.close()
        await server.wait_closed()


NOT_PRINTERS = {
    "ssh banner": (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP answer"),
    "closes at once": (b"", "connection closed mid-answer"),
    "web page": (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", "text/html, not application/ipp"),
    "HTTP error": (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
    "garbage IPP": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n\r\n" + b"\xde\xad\xbe\xef" * 3,
        "not an IPP",
    ),
    "short body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\x01\x01", "closed after 2 of 100 body bytes"),
    "chunked garbage": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "bad chunk size",
    ),
    "silent": (None, "no answer from"),
}


@pytest.mark.parametrize("answer, why", NOT_PRINTERS.values(), ids=NOT_PRINTERS.keys())
async def test_a_port_that_is_not_an_ipp_printer_reads_unreachable(answer: bytes | None, why: str) -> None:
    # Only the silent port needs the short timeout; the others answer at once, and a 0.5 s budget for them failed
    # on a loaded machine (a close read as "no answer"). took < 1.5 still shows they never wait for the timeout.
    timeout_s = 0.5 if answer is None else 10.0
    async with tcp_server(answer) as port:
        status, took = await read(f"ipp://127.0.0.1:{port}/ipp/print", timeout_s=timeout_s)
    assert not status.reachable and status.faults == ("unreachable",)
    assert status.error is not None and why in status.error, status.error
    assert took < 1.5


async def test_a_valid_answer_to_someone_elses_request_is_refused() -> None:
    wrong_id = encode(IppMessage(0, 999_999_999, (AttributeGroup(Tag.PRINTER, ()),)))
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {len(wrong_id)}\r\n\r\n"
    async with tcp_server(head.encode() + wrong_id) as port:
        status, _ = await read(f"ipp://127.0.0.1:{port}/ipp/print")
    assert not status.reachable and status.error is not None and "we sent" in status.error


async def test_chunked_answers_are_read() -> None:
    body = encode(rich_response())
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100]) for i in range(0, len(body), 100))
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = head + chunks + b"0\r\n\r\n"
    async with tcp_server(answer) as port:
        status, _ = await read(f"ipp://127.0.0.1:{port}/ipp/print")
    # The canned answer carries request id 42, which is not ours: the point here is that the
    # chunked body was reassembled and decoded far enough to check it.
    assert status.error is not None and "answered request 42" in status.error
