"""Pin the ESC/POS receipt printer driver: DLE EOT decoding bit by bit, "unknown" never read as
"no paper", and a ReceiptPrinter on UsbTransport driving the simulated printer through pyusb's real
find/claim/write/read path (the kernel here has no USB).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import fields

import pytest
import usb.core
import usb.util
from pydantic import ValidationError

from drivers.escpos import (
    PrinterAccessDenied,
    PrinterDisconnected,
    PrinterNotFound,
    PrinterStalled,
    PrinterStatus,
    ReceiptPrinter,
    UsbPrinterConfig,
    UsbTransport,
    decode,
)
from drivers.escpos.commands import recover_command
from drivers.escpos.sim import IN_EP, OUT_EP, PRODUCT_ID, VENDOR_ID, SimulatedUsbPrinter
from drivers.escpos.status import ALL_CLEAR, GROUPS

CLEAR = bytes([ALL_CLEAR])
ALL_CLEAR_REPLIES: dict[int, bytes | None] = {n: CLEAR for n in (1, 2, 3, 4)}
CONDITIONS = [f.name for f in fields(PrinterStatus) if f.name not in ("reachable", "raw")]
GROUP_OF = {bit.name: n for n, bits in GROUPS.items() for bit in bits}
CLEAR_VALUE = {name: name == "online" for name in CONDITIONS}  # all clear: online, nothing else


def with_reply(n: int, reply: bytes | None) -> dict[int, bytes | None]:
    return {**ALL_CLEAR_REPLIES, n: reply}


# -- decoding: every bit ---------------------------------------------------------------------

# (group n, bit, the field it sets, the field's value when the bit is on)
BITS = [
    (1, 3, "online", False),
    (1, 5, "waiting_online_recovery", True),
    (1, 6, "feed_button", True),
    (2, 2, "cover_open", True),
    (2, 3, "paper_feed_by_button", True),
    (2, 5, "stopped_by_paper_end", True),
    (2, 6, "error", True),
    (3, 2, "recoverable_error", True),
    (3, 3, "autocutter_error", True),
    (3, 5, "unrecoverable_error", True),
    (3, 6, "auto_recoverable_error", True),
    (4, 2, "paper_near_end", True),
    (4, 3, "paper_near_end", True),
    (4, 5, "paper_end", True),
]


@pytest.mark.parametrize(("n", "bit", "name", "value"), BITS, ids=[f"n{n}-bit{b}-{f}" for n, b, f, _ in BITS])
def test_each_status_bit_sets_its_field_and_nothing_else(n: int, bit: int, name: str, value: bool) -> None:
    status = decode(with_reply(n, bytes([ALL_CLEAR | 1 << bit])))

    assert getattr(status, name) is value
    others = {c: getattr(status, c) for c in CONDITIONS if c != name}
    assert others == {c: CLEAR_VALUE[c] for c in others}
    assert status.raw[n] == ALL_CLEAR | 1 << bit


def test_every_condition_field_is_decoded_by_some_bit() -> None:
    assert {name for _, _, name, _ in BITS} == set(CONDITIONS)


@pytest.mark.parametrize(("n", "bit"), [(1, 2), (4, 6)])
def test_bits_without_a_field_change_nothing(n: int, bit: int) -> None:
    """n=1 bit 2 is the cash drawer; n=4 bit 6 alone is the presenter sensor on some kiosk printers
    (Epson sets it together with bit 5, which is what paper_end reads)."""
    status = decode(with_reply(n, bytes([ALL_CLEAR | 1 << bit])))

    assert {c: getattr(status, c) for c in CONDITIONS} == CLEAR_VALUE


def test_epson_roll_end_sets_both_pairs_and_reads_empty() -> None:
    status = decode(with_reply(4, bytes([ALL_CLEAR | 0x0C | 0x60])))

    assert (status.paper_near_end, status.paper_end, status.paper_state) == (True, True, "empty")
    assert status.faults == ["paper_end"]


def test_valid_all_clear_replies_decode_to_a_clean_printer() -> None:
    status = decode(ALL_CLEAR_REPLIES)

    assert {c: getattr(status, c) for c in CONDITIONS} == CLEAR_VALUE
    assert status.reachable and status.clean
    assert (status.paper_state, status.faults, status.unknown) == ("ok", [], [])
    assert status.raw == {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}


def test_near_end_is_low_paper_not_a_fault() -> None:
    status = decode(with_reply(4, bytes([ALL_CLEAR | 0x0C])))

    assert status.paper_state == "low"
    assert status.faults == []
    assert status.clean


# -- decoding: unknown is None, never "no paper" ------------------------------------------------

BAD_REPLIES = {
    "none": None,
    "empty": b"",
    "two-bytes": bytes([ALL_CLEAR, ALL_CLEAR]),
    "zero": b"\x00",  # what python-escpos reads as "no paper"
    "all-ones": b"\xff",
    "bit0-set": bytes([ALL_CLEAR | 0x01]),
    "bit1-clear": bytes([ALL_CLEAR & ~0x02]),
    "bit4-clear": bytes([ALL_CLEAR & ~0x10]),
    "bit7-set": bytes([ALL_CLEAR | 0x80]),
}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("reply", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_a_missing_or_invalid_reply_makes_its_group_unknown(n: int, reply: bytes | None) -> None:
    status = decode(with_reply(n, reply))

    group = [name for name, g in GROUP_OF.items() if g == n]
    assert {name: getattr(status, name) for name in group} == dict.fromkeys(group)
    others = [c for c in CONDITIONS if GROUP_OF[c] != n]
    assert {c: getattr(status, c) for c in others} == {c: CLEAR_VALUE[c] for c in others}
    assert status.reachable and not status.clean
    assert sorted(status.unknown) == sorted(group)


@pytest.mark.parametrize("reply", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_an_unanswered_paper_sensor_is_unknown_paper_not_paper_out(reply: bytes | None) -> None:
    """python-escpos's paper_status() returns 0 ("no paper") for these: a false paper-out alarm."""
    status = decode(with_reply(4, reply))

    assert status.paper_end is None and status.paper_near_end is None
    assert status.paper_state == "unknown"
    assert "paper_end" not in status.faults


def test_a_group_absent_from_the_replies_is_unknown() -> None:
    status = decode({1: CLEAR, 2: CLEAR})

    assert status.autocutter_error is None and status.paper_end is None
    assert status.raw == {1: 0x12, 2: 0x12, 3: None, 4: None}
    assert status.paper_state == "unknown"


def test_raw_keeps_a_single_invalid_byte_for_diagnosis() -> None:
    assert decode(with_reply(2, b"\x00")).raw[2] == 0x00
    assert decode(with_reply(2, b"\x12\x12")).raw[2] is None


def test_paper_end_stop_reads_empty_even_when_the_roll_sensor_did_not_answer() -> None:
    status = decode({**with_reply(2, bytes([ALL_CLEAR | 0x20])), 4: None})

    assert status.paper_state == "empty"


def test_faults_name_each_condition_and_the_generic_error_only_without_a_cause() -> None:
    status = decode(
        {
            1: bytes([ALL_CLEAR | 0x08]),
            2: bytes([ALL_CLEAR | 0x04 | 0x40]),
            3: bytes([ALL_CLEAR | 0x08 | 0x20]),
            4: bytes([ALL_CLEAR | 0x6C]),
        }
    )
    assert status.faults == ["offline", "cover_open", "paper_end", "unrecoverable_error", "autocutter_error"]

    no_cause = decode({**with_reply(2, bytes([ALL_CLEAR | 0x40])), 3: None})
    assert no_cause.faults == ["error"]


def test_an_unreachable_status_has_every_field_unknown() -> None:
    status = PrinterStatus.unreachable()

    assert not status.reachable
    assert all(getattr(status, c) is None for c in CONDITIONS)
    assert (status.paper_state, status.faults) == ("unknown", ["unreachable"])


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vid", ["0x0416", "0416", "0X0416", 0x0416, 1046])
def test_config_accepts_hex_strings_and_ints_for_usb_ids(vid: str | int) -> None:
    assert UsbPrinterConfig.model_validate({"vendor_id": vid, "product_id": "0x5011"}).vendor_id == 0x0416


@pytest.mark.parametrize(
    "changes",
    [
        {"vendor_id": "usb-printer"},
        {"vendor_id": "0x10000"},
        {"product_id": -1},
        {"out_endpoint": 0x81},
        {"in_endpoint": "0x01"},
        {"timeout_ms": 0},
        {"type": "serial"},
        {"baudrate": 9600},
    ],
)
def test_config_rejects_what_cannot_be_a_usb_printer(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UsbPrinterConfig.model_validate({"vendor_id": 0x0416, "product_id": 0x5011, **changes})


def test_config_is_frozen_and_every_field_is_described() -> None:
    config = UsbPrinterConfig(vendor_id=0x0416, product_id=0x5011, in_endpoint="0x82", out_endpoint="02")

    assert (config.type, config.in_endpoint, config.out_endpoint, config.timeout_ms) == ("usb", 0x82, 0x02, 1000)
    assert all(f.description for f in UsbPrinterConfig.model_fields.values())
    with pytest.raises(ValidationError):
        config.vendor_id = 1  # type: ignore[misc]


# -- the printer through pyusb and the simulated device ---------------------------------------------------


@pytest.fixture
def sim() -> SimulatedUsbPrinter:
    # 600 mm roll, near-end at 200 mm; a 3-line receipt uses 6 lines x 5 mm + 10 mm = 40 mm.
    return SimulatedUsbPrinter(paper_mm=600, near_end_mm=200, mm_per_line=5, cut_feed_mm=10)


def make_transport(sim: SimulatedUsbPrinter, **config: object) -> UsbTransport:
    settings = {"vendor_id": f"0x{VENDOR_ID:04x}", "product_id": f"{PRODUCT_ID:04x}", **config}
    return UsbTransport(UsbPrinterConfig.model_validate(settings), backend=sim)


@pytest.fixture
def printer(sim: SimulatedUsbPrinter) -> Iterator[ReceiptPrinter]:
    p = ReceiptPrinter(make_transport(sim))
    yield p
    p.close()


def test_the_sim_is_a_real_pyusb_backend(sim: SimulatedUsbPrinter) -> None:
    dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=sim)

    assert isinstance(dev, usb.core.Device)
    intf = dev.get_active_configuration()[(0, 0)]
    assert (intf.bInterfaceClass, [ep.bEndpointAddress for ep in intf]) == (7, [OUT_EP, IN_EP])
    dev.detach_kernel_driver(0)
    assert dev.write(OUT_EP, b"\x10\x04\x04") == 3
    assert bytes(dev.read(IN_EP, 64)) == bytes([ALL_CLEAR])
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(IN_EP, 64)
    usb.util.dispose_resources(dev)


def test_open_takes_the_printer_from_usblp_and_claims_it(sim: SimulatedUsbPrinter) -> None:
    transport = make_transport(sim)
    transport.open()

    assert transport.is_open and transport.can_read
    assert (sim.opens, sim.detaches, sim.claimed) == (1, 1, {0})
    transport.close()
    transport.close()
    assert not transport.is_open and sim.claimed == set()


def test_status_of_a_healthy_printer_is_clean(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    status = printer.status()

    assert status.clean and status.paper_state == "ok"
    assert sim.status_queries == [1, 2, 3, 4]


def test_chinese_receipt_is_gb18030_in_chinese_mode_and_cut(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    lines = ["北京市朝阳区政务服务中心", "受理编号 A0012  窗口 7", "䶮 (a rare name character)"]
    printer.print_receipt(lines)

    assert sim.lines() == lines
    assert sim.chinese_mode and sim.cuts == 1
    assert "受理编号".encode("gb18030") in sim.received
    assert sim.received.startswith(b"\x1b@\x1c&")


def test_control_characters_in_text_never_reach_the_printer_as_commands(
    printer: ReceiptPrinter, sim: SimulatedUsbPrinter
) -> None:
    printer.print_receipt(["name\x10\x05\x02\x1b@ end"])

    assert sim.enquiries == [] and sim.lines() == ["name    @ end"]


def test_receipts_use_paper_until_near_end_then_end(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    states = []
    for _ in range(16):
        printer.print_receipt(["受理回执", "line 2", "line 3"])
        states.append(printer.status().paper_state)

    assert states == ["ok"] * 9 + ["low"] * 5 + ["empty"] * 2
    assert sim.paper_mm == 0 and sim.queued > 0  # the last receipt waits for paper
    status = printer.status()
    assert (status.paper_end, status.stopped_by_paper_end, status.online) == (True, True, False)
    assert status.faults == ["offline", "paper_end"]


def test_refill_prints_what_waited_and_clears_paper_end(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.paper_mm = 0
    printer.print_receipt(["held back"])
    assert sim.lines() == [] and printer.status().paper_state == "empty"

    sim.refill()

    assert sim.lines() == ["held back"] and sim.queued == 0
    assert printer.status().clean


def test_cover_open_stops_the_printer_without_touching_paper(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.cover_open = True
    status = printer.status()

    assert (status.cover_open, status.online, status.paper_state) == (True, False, "ok")
    assert status.faults == ["offline", "cover_open"]
    assert printer.recover() is False and sim.enquiries == []  # a cover is closed by hand, not by DLE ENQ


def test_autocutter_error_is_recovered_by_dle_enq(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.cutter_error = True
    assert printer.status().faults == ["offline", "autocutter_error"]

    assert printer.recover() is True

    assert sim.enquiries == [1]
    assert recover_command(False) in sim.received
    assert printer.status().clean


def test_recover_clearing_buffers_drops_the_held_receipt(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.cutter_error = True
    printer.print_receipt(["never printed"])
    assert sim.queued > 0

    assert printer.recover(clear_buffers=True) is True

    assert sim.enquiries == [2] and sim.queued == 0
    assert "never printed" not in sim.lines()


def test_an_unrecoverable_error_is_not_sent_dle_enq(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.unrecoverable = True
    sim.cutter_error = True

    assert printer.recover() is False

    assert sim.enquiries == []
    assert "unrecoverable_error" in printer.status().faults


def test_recover_on_a_clean_printer_sends_nothing(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    assert printer.recover() is True
    assert sim.enquiries == []


def test_a_printer_that_stops_answering_is_reachable_but_unknown(
    printer: ReceiptPrinter, sim: SimulatedUsbPrinter
) -> None:
    sim.answer_status = False
    status = printer.status()

    assert status.reachable
    assert sorted(status.unknown) == sorted(CONDITIONS)
    assert (status.paper_state, status.faults) == ("unknown", [])
    assert status.raw == {1: None, 2: None, 3: None, 4: None}


def test_garbage_status_bytes_are_unknown_not_paper_out(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.garbage_status = True
    status = printer.status()

    assert status.reachable and status.paper_state == "unknown" and status.faults == []
    assert status.raw == {1: 0, 2: 0, 3: 0, 4: 0}


def test_a_late_reply_is_drained_not_read_as_the_next_answer(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    sim.cover_open = True
    printer.transport._raw(b"\x10\x04\x02")  # someone's query whose answer nobody read
    sim.cover_open = False

    status = printer.status()
    assert status.clean and status.cover_open is False


def test_a_write_only_printer_is_reachable_with_unknown_status() -> None:
    sim = SimulatedUsbPrinter(bidirectional=False)
    printer = ReceiptPrinter(make_transport(sim))

    status = printer.status()

    assert status.reachable and status.paper_state == "unknown"
    printer.print_receipt(["still prints"])
    assert sim.lines() == ["still prints"]


def test_unplug_reads_unreachable_and_replug_recovers_the_same_printer(
    printer: ReceiptPrinter, sim: SimulatedUsbPrinter
) -> None:
    assert printer.status().clean

    sim.unplug()
    status = printer.status()
    assert not status.reachable
    assert all(getattr(status, c) is None for c in CONDITIONS)
    assert status.faults == ["unreachable"]
    assert isinstance(printer.last_error, PrinterNotFound)

    sim.plug()
    assert printer.status().clean
    assert printer.last_error is None
    assert (sim.opens, sim.detaches) == (2, 2)  # found again, taken from usblp again


def test_a_replug_between_polls_is_seen_at_the_next_poll(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    assert printer.status().clean
    sim.unplug()
    sim.plug()

    assert printer.status().clean  # the dead handle fails once, the transport reopens


def test_printing_to_an_unplugged_printer_raises_then_reopens_after_replug(
    printer: ReceiptPrinter, sim: SimulatedUsbPrinter
) -> None:
    printer.print_receipt(["first"])
    sim.unplug()

    with pytest.raises(PrinterDisconnected) as lost:
        printer.print_receipt(["second"])
    assert "0416:5011" in str(lost.value) and lost.value.reason
    assert isinstance(printer.transport, UsbTransport) and not printer.transport.is_open
    with pytest.raises(PrinterNotFound):
        printer.print_receipt(["third"])

    sim.plug()
    printer.print_receipt(["fourth"])
    assert sim.lines() == ["first", "fourth"]


def test_printer_not_found_names_vid_pid_and_what_to_check() -> None:
    transport = UsbTransport(UsbPrinterConfig(vendor_id="0x04b8", product_id="0x0e15"), backend=SimulatedUsbPrinter())

    with pytest.raises(PrinterNotFound) as missing:
        transport.open()

    message = str(missing.value)
    assert "04b8:0e15" in message and "lsusb" in message and "cable" in message
    assert missing.value.device == "usb 04b8:0e15"


def test_another_program_holding_the_printer_is_access_denied(sim: SimulatedUsbPrinter) -> None:
    sim.held_elsewhere = True
    transport = make_transport(sim)

    with pytest.raises(PrinterAccessDenied) as denied:
        transport.open()

    assert "udev" in str(denied.value) and "0416:5011" in str(denied.value)
    assert not transport.is_open
    assert not ReceiptPrinter(transport).status().reachable


def test_a_full_receive_buffer_stalls_printing_while_status_still_says_why() -> None:
    sim = SimulatedUsbPrinter(buffer_bytes=30)
    printer = ReceiptPrinter(make_transport(sim))
    sim.cover_open = True
    printer.print_receipt(["0123456789"])  # 22 bytes wait in the receive buffer

    with pytest.raises(PrinterStalled) as stalled:
        printer.print_receipt(["0123456789"])  # 22 more do not fit: the printer NAKs them

    assert "status()" in str(stalled.value) and printer.last_error is stalled.value
    assert printer.status().faults == ["offline", "cover_open"]
    sim.cover_open = False
    assert printer.status().clean and sim.lines() == ["0123456789"]


def test_test_slip_prints_the_status_it_read(printer: ReceiptPrinter, sim: SimulatedUsbPrinter) -> None:
    status = printer.test_slip()

    text = "\n".join(sim.lines())
    assert status.clean
    assert "纸张 paper: ok" in text and "usb 0416:5011" in text and sim.cuts == 1


def test_the_sim_fails_a_dead_handle_like_libusb(sim: SimulatedUsbPrinter) -> None:
    """pyusb's libusb1 backend raises USBError with errno ENODEV after an unplug; so does the sim,
    also after a replug (the old handle belongs to a device that is gone)."""
    dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=sim)
    dev.detach_kernel_driver(0)
    dev.write(OUT_EP, b"\n")
    sim.unplug()
    sim.plug()

    with pytest.raises(usb.core.USBError) as dead:
        dev.write(OUT_EP, b"\n")

    assert dead.value.errno == errno.ENODEV
    usb.util.dispose_resources(dev)
