"""Pin the ZFM / R30x fingerprint driver: the packet codec against hand-computed bytes and a reply
captured from a real module, and ZfmReader driving the simulated module through pyusb's real
find/claim/write/read path (the kernel here has no USB): enrol, scan, delete, and the link faults
(garbled replies, late replies, split replies, unplug) the reader must survive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import usb.core
import usb.util
from pydantic import ValidationError

from drivers.fingerprint import (
    CaptureError,
    ChecksumError,
    EnrollCancelled,
    EnrollMismatch,
    FingerDisconnected,
    FingerMatch,
    FingerNotFound,
    FingerTimeout,
    LibraryFull,
    ModuleError,
    NoMatch,
    ProtocolError,
    WrongPassword,
    ZfmConfig,
    ZfmReader,
)
from drivers.fingerprint.protocol import (
    Code,
    Instruction,
    Packet,
    PacketId,
    SystemParameters,
    checksum,
    command,
    decode,
)
from drivers.fingerprint.sim import IN_EP, OUT_EP, PRODUCT_ID, SCORE, VENDOR_ID, SimulatedZfm
from drivers.fingerprint.zfm import EnrolStep, failure

I = Instruction  # noqa: E741

# -- the codec ---------------------------------------------------------------------------------

# GenImg to the default address, by hand: header EF 01, address FF FF FF FF, packet id 01,
# length 00 03 (1 payload byte + 2 checksum bytes), payload 01,
# checksum = 0x01 (id) + 0x00 + 0x03 (length) + 0x01 (payload) = 0x0005.
GEN_IMG = bytes.fromhex("ef01 ffffffff 01 0003 01 0005")
# Search(buffer 1, start 0, 300 pages) to address 0x12345678: payload 04 01 0000 012c, length 8,
# checksum = 0x01 + 0x00 + 0x08 + 0x04 + 0x01 + 0x00 + 0x00 + 0x01 + 0x2c = 0x003b.
SEARCH_300 = bytes.fromhex("ef01 12345678 01 0008 04 01 0000 012c 003b")
# ReadSysPara's ack from a real R502 (a public capture): library of 200 pages, security level 3,
# packet size code 2 (128 bytes), baud code 6 (57600); its checksum 0x04e9 is the module's own.
R502_SYS_PARA = bytes.fromhex("ef01 ffffffff 07 0013 00 0000 0000 00c8 0003 ffffffff 0002 0006 04e9")


def test_a_command_packet_is_the_hand_computed_bytes() -> None:
    assert command(I.GEN_IMG) == GEN_IMG
    assert command(I.SEARCH, bytes.fromhex("01 0000 012c"), address=0x12345678) == SEARCH_300


def test_a_real_modules_reply_decodes() -> None:
    packet = decode(R502_SYS_PARA)

    assert (packet.pid, packet.address, packet.payload[0]) == (PacketId.ACK, 0xFFFFFFFF, Code.OK)
    assert SystemParameters.parse(packet.payload[1:]) == SystemParameters(
        status=0, system_id=0, library_size=200, security_level=3, address=0xFFFFFFFF, packet_bytes=128, baud=57600
    )
    assert SystemParameters.parse(packet.payload[1:]).encode() == packet.payload[1:]


def test_the_checksum_is_the_sum_of_id_length_and_payload_mod_65536() -> None:
    """No legal packet can wrap (256 x 0xff + 0x02 + 0x01 + 0x02 = 0xff05), so the wrap is pinned on
    the function: 300 x 0xff = 76500, + 0x01 + 0x01 + 0x2e (length 302) = 76548 = 65536 + 11012."""
    assert checksum(0x01, b"\xff" * 300) == 11012
    assert checksum(0x07, b"") == 0x07 + 0x02


@pytest.mark.parametrize("pid", list(PacketId))
@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256))], ids=["empty", "one", "max"])
def test_packets_round_trip(pid: PacketId, payload: bytes) -> None:
    packet = Packet(pid, payload, 0xA1B2C3D4)

    assert decode(packet.encode()) == packet


BAD_PACKETS = {
    "header": (b"\xee" + GEN_IMG[1:], ProtocolError),
    "checksum": (GEN_IMG[:-1] + b"\x06", ChecksumError),
    "payload-byte": (GEN_IMG[:9] + b"\x02" + GEN_IMG[10:], ChecksumError),
    "truncated": (GEN_IMG[:-1], ProtocolError),
    "too-short": (GEN_IMG[:8], ProtocolError),
    "packet-id": (GEN_IMG[:6] + b"\x05" + GEN_IMG[7:11] + b"\x09", ProtocolError),
    "length-1": (bytes.fromhex("ef01 ffffffff 07 0001 00"), ProtocolError),
    "length-huge": (bytes.fromhex("ef01 ffffffff 07 ffff 00"), ProtocolError),
}


@pytest.mark.parametrize(("data", "error"), BAD_PACKETS.values(), ids=BAD_PACKETS.keys())
def test_malformed_packets_are_refused(data: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error) as refused:
        decode(data, "zfm test")

    assert type(refused.value) is error and refused.value.device == "zfm test"


CODES = [
    (Code.PACKET_ERROR, ProtocolError),
    (Code.NO_FINGER, CaptureError),
    (Code.IMAGE_FAILED, CaptureError),
    (Code.IMAGE_MESSY, CaptureError),
    (Code.TOO_FEW_FEATURES, CaptureError),
    (Code.NO_VALID_IMAGE, CaptureError),
    (Code.NOT_MATCHING, EnrollMismatch),
    (Code.MERGE_FAILED, EnrollMismatch),
    (Code.PAGE_OUT_OF_RANGE, LibraryFull),
    (Code.LIBRARY_FULL, LibraryFull),
    (Code.WRONG_PASSWORD, WrongPassword),
    (Code.PASSWORD_REQUIRED, WrongPassword),
    (Code.FLASH_WRITE_FAILED, ModuleError),
    (Code.DELETE_FAILED, ModuleError),
    (0x7E, ModuleError),
]


@pytest.mark.parametrize(("code", "error"), CODES, ids=[f"{c:#04x}" for c, _ in CODES])
def test_each_confirmation_code_maps_to_an_error_carrying_it(code: int, error: type[Exception]) -> None:
    exc = failure("zfm 2109:7638", code, "storing page 3")

    assert type(exc) is error and exc.code == code
    assert "storing page 3" in str(exc) and "zfm 2109:7638" in str(exc)


# -- config ------------------------------------------------------------------------------------


def test_config_reads_hex_ids_and_describes_every_field() -> None:
    cfg = ZfmConfig.model_validate({"vendor_id": "0x2109", "product_id": "7638", "address": "0xA1B2C3D4"})

    assert (cfg.vendor_id, cfg.product_id, cfg.address, cfg.password) == (0x2109, 0x7638, 0xA1B2C3D4, 0)
    assert (cfg.type, cfg.timeout_ms, cfg.capacity, cfg.min_score) == ("zfm", 2000, 300, 50)
    assert all(f.description for f in ZfmConfig.model_fields.values())


@pytest.mark.parametrize(
    "changes",
    [{"vendor_id": "reader"}, {"address": 2**32}, {"capacity": 0}, {"timeout_ms": 0}, {"baudrate": 57600}],
)
def test_config_rejects_what_cannot_be_a_zfm_reader(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ZfmConfig.model_validate({"vendor_id": VENDOR_ID, "product_id": PRODUCT_ID, **changes})


def test_config_requires_the_usb_ids() -> None:
    with pytest.raises(ValidationError):
        ZfmConfig.model_validate({"vendor_id": VENDOR_ID})


# -- the reader through pyusb and the simulated module -------------------------------------------


@pytest.fixture
def sim() -> SimulatedZfm:
    return SimulatedZfm()


def make_reader(sim: SimulatedZfm, **config: object) -> ZfmReader:
    settings = {"vendor_id": f"0x{VENDOR_ID:04x}", "product_id": f"{PRODUCT_ID:04x}", **config}
    reader = ZfmReader(ZfmConfig.model_validate(settings), backend=sim)
    reader.poll_s = 0.001
    return reader


@pytest.fixture
def reader(sim: SimulatedZfm) -> Iterator[ZfmReader]:
    r = make_reader(sim)
    yield r
    r.close()


def enroll(reader: ZfmReader, sim: SimulatedZfm, finger: str, page: int) -> None:
    sim.press(finger, times=2)
    reader.enroll(page, wait_s=1)


def scan(reader: ZfmReader, sim: SimulatedZfm, finger: str) -> FingerMatch | NoMatch | None:
    sim.place(finger)
    return reader.scan()


def test_the_sim_is_a_real_pyusb_backend(sim: SimulatedZfm) -> None:
    dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=sim)

    assert isinstance(dev, usb.core.Device)
    intf = dev.get_active_configuration()[(0, 0)]
    assert (intf.bInterfaceClass, [ep.bEndpointAddress for ep in intf]) == (0xFF, [OUT_EP, IN_EP])
    assert dev.write(OUT_EP, GEN_IMG) == len(GEN_IMG)
    assert bytes(dev.read(IN_EP, 64)) == bytes.fromhex("ef01 ffffffff 07 0003 02 000c")  # no finger: 7+3+2
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(IN_EP, 64, 10)
    usb.util.dispose_resources(dev)


def test_open_verifies_the_password_and_reads_the_library_size(reader: ZfmReader, sim: SimulatedZfm) -> None:
    reader.open()

    assert reader.is_open and sim.claimed == {0}
    assert sim.commands == [I.VFY_PWD, I.READ_SYS_PARA]
    assert reader.system is not None and reader.system.library_size == 300
    reader.close()
    reader.close()
    assert not reader.is_open and sim.claimed == set()


def test_enrolled_fingers_are_found_at_their_pages(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 3)
    enroll(reader, sim, "bob", 7)

    assert sim.library == {3: "alice", 7: "bob"}
    assert scan(reader, sim, "alice") == FingerMatch(page_id=3, score=SCORE)
    assert scan(reader, sim, "bob") == FingerMatch(page_id=7, score=SCORE)
    assert sim.commands[-3:] == [I.GEN_IMG, I.IMG2TZ, I.SEARCH]


def test_enroll_waits_for_the_lift_between_captures(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 0)

    assert sim.commands[2:] == [I.GEN_IMG, I.IMG2TZ, I.GEN_IMG, I.GEN_IMG, I.IMG2TZ, I.REG_MODEL, I.STORE]


def test_an_unknown_finger_is_no_match_not_no_finger(reader: ZfmReader, sim: SimulatedZfm) -> None:
    """GIVEN alice enrolled WHEN mallory presses THEN the finger was read (features taken, library searched) and
    the answer is NoMatch, which the terminal must tell the person: not None, which means nobody pressed."""
    enroll(reader, sim, "alice", 0)
    sim.commands.clear()

    assert scan(reader, sim, "mallory") == NoMatch()
    assert sim.commands == [I.GEN_IMG, I.IMG2TZ, I.SEARCH]


def test_no_finger_is_none_after_one_capture_attempt(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 0)
    sim.lift()
    sim.commands.clear()

    assert reader.scan() is None
    assert sim.commands == [I.GEN_IMG]


def test_scan_tells_no_finger_no_match_and_match_apart_on_one_press_each(reader: ZfmReader, sim: SimulatedZfm) -> None:
    """GIVEN alice enrolled WHEN mallory presses, lifts, and alice presses (one GenImg sees each step) THEN the scans
    say NoMatch, None, alice's page, None: the three outcomes come from the module's codes, not from a guess."""
    enroll(reader, sim, "alice", 4)
    sim.presses("mallory", "alice")

    scans = [reader.scan() for _ in range(4)]

    assert scans == [NoMatch(), None, FingerMatch(4, SCORE), None]


@pytest.mark.parametrize(("on_sensor", "search_code"), [(None, None), ("mallory", Code.NOT_FOUND), ("alice", Code.OK)])
def test_the_twin_answers_the_modules_own_codes_for_each_case(
    sim: SimulatedZfm, on_sensor: str | None, search_code: Code | None
) -> None:
    """GIVEN the twin with alice at page 0, driven with raw packets through pyusb WHEN GenImg, Img2Tz and Search are
    sent THEN GenImg says 0x02 with no finger, and with a finger Search says 0x09 for a stranger and 0x00 for alice:
    the codes a real module sends, so the reader's decision is tested against the protocol, not the twin's API."""
    sim.library[0] = "alice"
    if on_sensor is not None:
        sim.place(on_sensor)
    dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=sim)

    def ack(instruction: Instruction, params: bytes = b"") -> int:
        dev.write(OUT_EP, command(instruction, params))
        return decode(bytes(dev.read(IN_EP, 64))).payload[0]

    try:
        assert ack(I.GEN_IMG) == (Code.NO_FINGER if on_sensor is None else Code.OK)
        if search_code is not None:
            assert ack(I.IMG2TZ, b"\x01") == Code.OK
            assert ack(I.SEARCH, bytes.fromhex("01 0000 012c")) == search_code
    finally:
        usb.util.dispose_resources(dev)


def test_a_match_below_min_score_is_no_match(sim: SimulatedZfm) -> None:
    reader = make_reader(sim, min_score=60)
    enroll(reader, sim, "alice", 0)

    sim.score = 59
    assert scan(reader, sim, "alice") == NoMatch(59)
    sim.score = 60
    assert scan(reader, sim, "alice") == FingerMatch(0, 60)


def test_a_messy_image_asks_to_press_again(reader: ZfmReader, sim: SimulatedZfm) -> None:
    sim.messy = True

    with pytest.raises(CaptureError) as messy:
        scan(reader, sim, "alice")

    assert messy.value.code == Code.IMAGE_MESSY and "press" in str(messy.value)


def test_two_different_fingers_do_not_enroll(reader: ZfmReader, sim: SimulatedZfm) -> None:
    sim.presses("alice", "bob")  # the person switched fingers

    with pytest.raises(EnrollMismatch) as mismatch:
        reader.enroll(0, wait_s=1)

    assert mismatch.value.code == Code.MERGE_FAILED and "same finger" in str(mismatch.value)
    assert sim.library == {} and I.STORE not in sim.commands


def test_extra_captures_must_match_the_merged_template(reader: ZfmReader, sim: SimulatedZfm) -> None:
    sim.press("alice", times=3)
    reader.enroll(0, captures=3, wait_s=1)
    assert sim.library == {0: "alice"} and sim.commands.count(I.MATCH) == 1

    sim.presses("bob", "bob", "carol")
    with pytest.raises(EnrollMismatch) as mismatch:
        reader.enroll(1, captures=3, wait_s=1)
    assert mismatch.value.code == Code.NOT_MATCHING and sim.library == {0: "alice"}


def test_no_finger_within_wait_s_fails_enrolment(reader: ZfmReader, sim: SimulatedZfm) -> None:
    started = time.monotonic()
    with pytest.raises(CaptureError) as none:
        reader.enroll(0, wait_s=0.2)

    assert 0.2 <= time.monotonic() - started < 1.0
    assert none.value.code == Code.NO_FINGER and "within 0.2 s" in str(none.value)


def test_a_finger_left_on_the_sensor_fails_enrolment(reader: ZfmReader, sim: SimulatedZfm) -> None:
    sim.place("alice")

    with pytest.raises(CaptureError) as held:
        reader.enroll(0, wait_s=0.1)

    assert held.value.code is None and "not lifted" in str(held.value)
    assert sim.library == {}


def test_delete_empty_and_count(reader: ZfmReader, sim: SimulatedZfm) -> None:
    for page, finger in enumerate(["alice", "bob", "carol"]):
        enroll(reader, sim, finger, page)
    assert reader.count() == 3

    reader.delete(1)
    assert reader.count() == 2 and sim.library == {0: "alice", 2: "carol"}
    assert scan(reader, sim, "bob") == NoMatch()
    with pytest.raises(ValueError, match="outside"):
        reader.delete(300)

    reader.empty()
    assert reader.count() == 0 and scan(reader, sim, "alice") == NoMatch()


def test_a_full_library_refuses_before_asking_for_a_finger() -> None:
    """A module with 2 pages although capacity says 300: the reader uses the module's size."""
    sim = SimulatedZfm(library_size=2)
    reader = make_reader(sim)
    enroll(reader, sim, "alice", 0)
    enroll(reader, sim, "bob", 1)
    assert reader.capacity == 2
    sim.commands.clear()

    with pytest.raises(LibraryFull) as full:
        enroll(reader, sim, "carol", 2)

    assert sim.commands == []
    assert "2 pages" in str(full.value) and "delete" in str(full.value)


def test_a_module_refusing_a_page_is_library_full(sim: SimulatedZfm) -> None:
    reader = make_reader(sim)
    reader.open()
    sim.library_size = 5  # the module's answer now disagrees with what it said at open

    with pytest.raises(LibraryFull) as full:
        enroll(reader, sim, "alice", 9)

    assert full.value.code == Code.PAGE_OUT_OF_RANGE and sim.library == {}


def test_a_bad_checksum_is_retried_once_then_raised(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 0)
    sim.commands.clear()

    sim.corrupt_next_reply()
    assert reader.count() == 1
    assert sim.commands == [I.TEMPLATE_NUM, I.TEMPLATE_NUM]

    sim.corrupt_next_reply()
    sim.corrupt_next_reply()
    with pytest.raises(ChecksumError):
        reader.count()
    assert reader.count() == 1  # the link is fine afterwards


def test_a_garbled_header_is_drained_and_the_search_retried(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 4)
    sim.corrupt_next_reply("header", on=I.SEARCH)

    assert scan(reader, sim, "alice") == FingerMatch(4, SCORE)
    assert sim.commands[-2:] == [I.SEARCH, I.SEARCH]


def test_store_is_never_sent_twice(reader: ZfmReader, sim: SimulatedZfm) -> None:
    sim.corrupt_next_reply(on=I.STORE)

    with pytest.raises(ChecksumError):
        enroll(reader, sim, "alice", 0)

    assert sim.commands.count(I.STORE) == 1
    assert sim.library == {0: "alice"}  # the module did store it: only its answer was lost


def test_a_stalled_reply_times_out_and_the_late_reply_is_not_taken_for_the_next(sim: SimulatedZfm) -> None:
    """The late "no finger" must not answer the next scan's GenImg, when a finger is there."""
    reader = make_reader(sim, timeout_ms=300)
    enroll(reader, sim, "alice", 2)
    sim.stall_next_reply(on=I.GEN_IMG)

    started = time.monotonic()
    with pytest.raises(FingerTimeout) as stalled:
        reader.scan()
    elapsed = time.monotonic() - started

    assert 0.28 <= elapsed < 0.55
    assert "300 ms" in str(stalled.value) and "address" in str(stalled.value)
    assert scan(reader, sim, "alice") == FingerMatch(2, SCORE)


def test_a_module_at_another_address_does_not_answer(sim: SimulatedZfm) -> None:
    reader = make_reader(sim, address="0x00000001", timeout_ms=100)

    with pytest.raises(FingerTimeout):
        reader.open()

    assert not reader.is_open and sim.claimed == set()


def test_a_reply_split_over_many_reads_is_reassembled() -> None:
    sim = SimulatedZfm(chunk_size=3)
    reader = make_reader(sim)

    enroll(reader, sim, "alice", 5)  # ReadSysPara's 28-byte reply comes in 10 reads

    assert reader.system is not None and reader.system.library_size == 300
    assert scan(reader, sim, "alice") == FingerMatch(5, SCORE)


def test_a_wrong_password_fails_open_with_what_to_set() -> None:
    sim = SimulatedZfm(password=0x12345678)
    reader = make_reader(sim, password=0x1234)

    with pytest.raises(WrongPassword) as wrong:
        reader.open()

    assert wrong.value.code == Code.WRONG_PASSWORD and "`password`" in str(wrong.value)
    assert not reader.is_open and sim.claimed == set()
    assert sim.commands == [I.VFY_PWD]
    right = make_reader(sim, password="0x12345678")
    assert right.count() == 0


def test_unplug_raises_disconnected_and_the_next_call_after_replug_works(reader: ZfmReader, sim: SimulatedZfm) -> None:
    enroll(reader, sim, "alice", 1)
    sim.place("alice")
    sim.unplug()

    with pytest.raises(FingerDisconnected) as lost:
        reader.scan()
    assert "2109:7638" in str(lost.value) and not reader.is_open
    with pytest.raises(FingerNotFound):
        reader.scan()

    sim.plug()
    sim.place("alice")
    assert reader.scan() == FingerMatch(1, SCORE)
    assert sim.opens == 2


def test_a_reader_that_is_not_attached_names_its_ids_and_lsusb(sim: SimulatedZfm) -> None:
    reader = ZfmReader(ZfmConfig(vendor_id="0x0483", product_id="0x5720"), backend=sim)

    with pytest.raises(FingerNotFound) as missing:
        reader.count()

    assert "0483:5720" in str(missing.value) and "lsusb" in str(missing.value)


def test_enroll_tells_each_step_as_it_starts_waiting_for_it(reader: ZfmReader, sim: SimulatedZfm) -> None:
    steps: list[EnrolStep] = []
    sim.press("alice", times=3)
    reader.enroll(0, captures=3, wait_s=1, prompt=steps.append)
    assert steps == [EnrolStep(1, "press"), EnrolStep(2, "lift"), EnrolStep(2, "press"), EnrolStep(3, "lift"),
                     EnrolStep(3, "press")]  # fmt: skip
    assert sim.library == {0: "alice"}


def test_a_called_off_enrolment_ends_within_a_poll_and_stores_nothing(reader: ZfmReader, sim: SimulatedZfm) -> None:
    """GIVEN an enrolment waiting for its second press WHEN the caller calls it off THEN it raises EnrollCancelled
    within a poll, and a press arriving afterwards is not stored."""
    cancel = threading.Event()
    sim.press("alice", times=1)

    def call_off(step: EnrolStep) -> None:
        if step == EnrolStep(2, "press"):
            cancel.set()

    started = time.monotonic()
    with pytest.raises(EnrollCancelled) as off:
        reader.enroll(0, wait_s=5, prompt=call_off, cancel=cancel)
    assert time.monotonic() - started < 1.0 and "page 0" in str(off.value)
    sim.press("alice", times=2)
    assert Instruction.STORE not in sim.commands and sim.library == {}
