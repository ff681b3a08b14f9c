"""The simulated A4 printer's own model (drivers/ipp/sim.py): pages printed over IPP run toner and paper down,
a job stops where paper or toner does, many printers share one socket, and bad requests get IPP or HTTP
errors, never a dropped connection. What it shares with a real printer is pinned in test_ipp.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.ipp.client import A4PrinterConfig, get_status, post_ipp, print_job
from drivers.ipp.codec import GET_JOB_ATTRIBUTES, Attribute, AttributeGroup, IppMessage, Tag, decode, encode
from drivers.ipp.raster import HEADER_SIZE, RasterError, a4_pages, count_pages
from drivers.ipp.sim import SimulatedA4Printer, SimulatedIppServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server() -> AsyncIterator[SimulatedIppServer]:
    async with SimulatedIppServer() as s:
        yield s


# ------------------------------------------------------------------------------------------- PWG Raster


@pytest.mark.parametrize("n", [1, 3, 40])
def test_written_pages_count_back(n: int) -> None:
    assert count_pages(a4_pages(n)) == n


def test_a600_dpi_page_counts_too() -> None:
    assert count_pages(a4_pages(2, dpi=600, ink_lines=700)) == 2


@pytest.mark.parametrize(
    "cut, why",
    [
        (lambda d: b"%PDF" + d[4:], "not PWG Raster"),
        (lambda d: d[:4], "no page"),
        (lambda d: d[: 4 + HEADER_SIZE - 1], "header cut short"),
        (lambda d: d[: 4 + HEADER_SIZE + 10], "cut short"),
        (lambda d: d[:-1], "cut short"),
        (lambda d: d[: 4 + 392] + b"\x00\x00\x00\x00" + d[4 + 396 :], "bad header"),
    ],
    ids=["pdf", "sync-only", "short-header", "short-image", "last-byte", "zero-line"],
)
def test_a_document_that_is_not_whole_pwg_raster_is_an_error_not_a_guess(cut: object, why: str) -> None:
    assert callable(cut)
    with pytest.raises(RasterError, match=why):
        count_pages(cut(a4_pages(1)))


def test_a_run_that_overflows_its_line_is_an_error() -> None:
    doc = bytearray(a4_pages(1))
    doc[4 + HEADER_SIZE + 1] = 127  # the first run now claims 128 pixels where the line has fewer left
    doc[4 + HEADER_SIZE + 1 + 2 * 4] = 127
    with pytest.raises(RasterError, match="overflows its line"):
        count_pages(bytes(doc))


# ------------------------------------------------------------------------------------------ the printer


async def test_pages_printed_over_ipp_run_toner_and_paper_down_and_count(server: SimulatedIppServer) -> None:
    twin = server.add(printer=SimulatedA4Printer(toner_pct=12, toner_pages=100, sheets=240, waste_pages=1000))
    cfg = A4PrinterConfig(url=server.url())
    job = await print_job(cfg, a4_pages(3), job_name="社保证明")
    assert (job.accepted, job.state, job.job_id) == (True, "completed", 1)
    status = await get_status(cfg)
    toner = next(s for s in status.supplies if s.kind == "toner")
    waste = next(s for s in status.supplies if s.kind == "waste")
    assert (toner.level_pct, toner.state) == (9.0, "low")  # 12 % - 3 pages of a 100-page cartridge
    assert status.warnings == ("toner-low",) and status.severity == {"toner-low": "warning"}
    assert waste.raw_level == 25  # 25 % + 0.3 %: whole percent, as printers send it
    main = next(t for t in status.media.trays if t.name == "main")
    assert (main.raw_level, main.max_capacity) == (237, 250)
    assert (status.counters.pages, status.counters.monochrome, status.counters.sheets) == (3, 3, 3)
    assert twin.pages == 3 and twin.jobs[-1].name == "社保证明"


async def test_a_job_prints_until_the_paper_runs_out_and_is_aborted(server: SimulatedIppServer) -> None:
    twin = server.add(printer=SimulatedA4Printer(sheets=2))
    cfg = A4PrinterConfig(url=server.url())
    job = await print_job(cfg, a4_pages(5))
    assert job.accepted and job.state == "aborted"
    assert (twin.pages, twin.sheets("main"), twin.jobs[-1].printed) == (2, 0, 2)
    assert twin.jobs[-1].reasons == ("aborted-by-system", "media-empty")
    status = await get_status(cfg)
    assert status.state == "stopped" and status.faults == ("media-empty",) and status.severity["media-empty"] == "error"
    twin.set_tray("main", sheets=250)
    assert (await get_status(cfg)).state == "idle"
    assert (await print_job(cfg, a4_pages(1))).state == "completed"


async def test_toner_reads_empty_only_once_spent(server: SimulatedIppServer) -> None:
    twin = server.add(printer=SimulatedA4Printer(toner_pct=1, toner_pages=150))
    cfg = A4PrinterConfig(url=server.url())
    assert (await print_job(cfg, a4_pages(1))).state == "completed"
    assert twin.supply("Black Toner") == 1  # 0.33 % left reads 1 %, not "empty" a page early
    job = await print_job(cfg, a4_pages(3))
    assert job.state == "aborted" and twin.jobs[-1].printed == 1 and twin.supply("Black Toner") == 0
    assert (await get_status(cfg)).faults == ("toner-empty",)


async def test_copies_multiply_the_pages_and_get_job_attributes_reads_the_job(server: SimulatedIppServer) -> None:
    twin = server.add()
    cfg = A4PrinterConfig(url=server.url())
    op = (
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
        Attribute.of("printer-uri", Tag.URI, cfg.printer_uri),
        Attribute.of("document-format", Tag.MIME_MEDIA_TYPE, "image/pwg-raster"),
    )
    job = AttributeGroup(Tag.JOB, (Attribute.of("copies", Tag.INTEGER, 3),))
    answer = decode(
        await post_ipp(cfg, encode(IppMessage(0x0002, 7, (AttributeGroup(Tag.OPERATION, op), job), data=a4_pages(2))))
    )
    assert answer.code == 0 and answer.request_id == 7 and twin.pages == 6
    ask = (*op[:3], Attribute.of("job-id", Tag.INTEGER, 1))
    answer = decode(
        await post_ipp(cfg, encode(IppMessage(GET_JOB_ATTRIBUTES, 8, (AttributeGroup(Tag.OPERATION, ask),))))
    )
    attrs = answer.attributes(Tag.JOB)
    assert attrs["job-state"].value == 9 and attrs["job-impressions-completed"].value == 6


async def test_many_printers_share_one_socket_each_at_its_own_path(server: SimulatedIppServer) -> None:
    printers = {
        name: server.add(name, SimulatedA4Printer(toner_pct=pct)) for name, pct in (("qp-k1", 40), ("wz-k1", 60))
    }
    readings = await asyncio.gather(*(get_status(A4PrinterConfig(url=server.url(n))) for n in printers))
    assert [next(s.level_pct for s in r.supplies if s.kind == "toner") for r in readings] == [40.0, 60.0]
    await print_job(A4PrinterConfig(url=server.url("qp-k1")), a4_pages(4))
    assert (printers["qp-k1"].pages, printers["wz-k1"].pages) == (4, 0)
    with pytest.raises(ValueError, match="already"):
        server.add("qp-k1")
    with pytest.raises(ValueError, match="letters, digits"):
        server.add("qp/k1")


async def test_bad_requests_get_ipp_or_http_errors(server: SimulatedIppServer) -> None:
    server.add()
    cfg = A4PrinterConfig(url=server.url())
    bad = await print_job(cfg, b"RaS2" + b"\x00" * 100)
    assert not bad.accepted and bad.error is not None and "client-error-document-format-error" in bad.error
    assert "header cut short" in bad.error
    op = (
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("printer-uri", Tag.URI, cfg.printer_uri),
    )
    answer = decode(await post_ipp(cfg, encode(IppMessage(0x0010, 3, (AttributeGroup(Tag.OPERATION, op),)))))
    assert answer.code == 0x0501  # operation-not-supported
    answer = decode(await post_ipp(cfg, encode(IppMessage(0x000B, 4, (AttributeGroup(Tag.OPERATION, op[1:]),)))))
    assert answer.code == 0x0400  # no attributes-charset
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /ipp/print HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    reply = await reader.read()
    assert reply.startswith(b"HTTP/1.1 400") and b"not an IPP request" in reply
    writer.close()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /ipp/print HTTP/1.1\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 405")
    writer.close()


def test_staging_refuses_what_the_printer_does_not_have() -> None:
    twin = SimulatedA4Printer()
    with pytest.raises(KeyError, match="Black Toner"):
        twin.set_supply("Cyan Toner", 5)
    with pytest.raises(KeyError, match="main"):
        twin.set_tray("tray-9")
    with pytest.raises(ValueError, match=r"0\.\.250"):
        twin.set_tray("main", sheets=300)
