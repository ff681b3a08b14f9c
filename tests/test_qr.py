"""Pin the QR (随申码) scanner of attendance terminals: key events -> codes with the real
``evdev.InputEvent`` type (this kernel has no input devices, so events are written by hand or by
the SimulatedScanner twin), a scanner that survives being unplugged, and the per-region validator:
fresh, once, mapped to a pseudonymous staff id, and the raw code and personal id never logged.

The 随申码 payload format is not public; these tests invent ``SSM1:<id>:<unix ts>:<sig>`` and
configure it through the pattern, as a site would configure the real one.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from evdev import InputEvent, ecodes
from pydantic import TypeAdapter, ValidationError

from config.base import ConfigError
from drivers.qr import (
    EvdevScanner,
    KeyDecoder,
    PatternQrConfig,
    PatternQrValidator,
    QrConfig,
    QrResult,
    QrScannerConfig,
    ScannerError,
    SimulatedScanner,
    build_validator,
    staff_map_line,
)
from drivers.qr import validators as qr_validators
from runtime.clock import HALL_ZONE

K = ecodes
LSHIFT, RSHIFT = K.KEY_LEFTSHIFT, K.KEY_RIGHTSHIFT


class Keys:
    """Key events written by hand, independent of the driver's key map; ``step`` seconds apart."""

    def __init__(self, t0: float = 1_741_000_000.0, step: float = 0.004) -> None:
        self.t = t0
        self.step = step
        self.events: list[InputEvent] = []

    def ev(self, code: int, value: int, type_: int = K.EV_KEY) -> Keys:
        sec, usec = divmod(round(self.t * 1_000_000), 1_000_000)
        self.events.append(InputEvent(sec, usec, type_, code, value))
        self.t += self.step
        return self

    def tap(self, key: int, shift: int | None = None) -> Keys:
        if shift is not None:
            self.ev(shift, 1)
        self.ev(key, 1).ev(key, 0)
        if shift is not None:
            self.ev(shift, 0)
        return self

    def enter(self, key: int = K.KEY_ENTER) -> Keys:
        return self.tap(key)

    def pause(self, seconds: float) -> Keys:
        self.t += seconds
        return self


def decode(events: list[InputEvent], decoder: KeyDecoder | None = None) -> list[str]:
    decoder = decoder or KeyDecoder()
    return [code for code in map(decoder.feed, events) if code is not None]


# -- KeyDecoder --------------------------------------------------------------------------------


def test_lower_case_letters_and_digits_end_with_enter() -> None:
    keys = Keys()
    for key in (K.KEY_S, K.KEY_S, K.KEY_M, K.KEY_1, K.KEY_0, K.KEY_Z):
        keys.tap(key)
    assert decode(keys.enter().events) == ["ssm10z"]


def test_shift_gives_upper_case_and_the_symbols_of_urls_and_codes() -> None:
    keys = Keys()
    keys.tap(K.KEY_A, LSHIFT).tap(K.KEY_B).tap(K.KEY_SLASH).tap(K.KEY_SEMICOLON, LSHIFT).tap(K.KEY_SLASH, LSHIFT)
    keys.tap(K.KEY_EQUAL).tap(K.KEY_7, LSHIFT).tap(K.KEY_MINUS).tap(K.KEY_MINUS, LSHIFT).tap(K.KEY_DOT)
    keys.tap(K.KEY_EQUAL, LSHIFT).tap(K.KEY_5, LSHIFT).tap(K.KEY_Q, RSHIFT).tap(K.KEY_9)
    assert decode(keys.enter().events) == ["Ab/:?=&-_.+%Q9"]


def test_shift_stays_on_while_either_shift_key_is_held() -> None:
    keys = Keys().ev(LSHIFT, 1).ev(RSHIFT, 1).ev(LSHIFT, 0).tap(K.KEY_X).ev(RSHIFT, 0).tap(K.KEY_X)
    assert decode(keys.enter().events) == ["Xx"]


def test_autorepeat_types_again_and_key_up_types_nothing() -> None:
    keys = Keys().ev(K.KEY_A, 1).ev(K.KEY_A, 2).ev(K.KEY_A, 2).ev(K.KEY_A, 0)
    assert decode(keys.enter().events) == ["aaa"]


def test_keypad_enter_ends_a_code_and_empty_codes_are_ignored() -> None:
    keys = Keys().enter().tap(K.KEY_KP4).tap(K.KEY_KP2).enter(K.KEY_KPENTER).enter().enter(K.KEY_KPENTER)
    assert decode(keys.events) == ["42"]


def test_two_codes_back_to_back_come_out_separately() -> None:
    keys = Keys().tap(K.KEY_A).tap(K.KEY_1).enter().tap(K.KEY_B).tap(K.KEY_2).enter()
    assert decode(keys.events) == ["a1", "b2"]


def test_tab_sync_and_scan_code_events_are_ignored_without_counting() -> None:
    keys = Keys().tap(K.KEY_A).tap(K.KEY_TAB).ev(K.SYN_REPORT, 0, K.EV_SYN).ev(K.MSC_SCAN, 0x70005, K.EV_MSC)
    decoder = KeyDecoder()
    assert decode(keys.tap(K.KEY_B).enter().events, decoder) == ["ab"]
    assert decoder.unknown == 0


def test_unknown_keys_are_skipped_and_counted() -> None:
    keys = Keys().tap(K.KEY_A).tap(K.KEY_F1).tap(K.KEY_LEFTCTRL).tap(K.KEY_B).enter()
    decoder = KeyDecoder()
    assert decode(keys.events, decoder) == ["ab"]
    assert decoder.unknown == 2


def test_a_pause_longer_than_gap_s_abandons_the_partial_code() -> None:
    keys = Keys().tap(K.KEY_X).tap(K.KEY_Y).pause(0.6).tap(K.KEY_A).tap(K.KEY_B).enter()
    decoder = KeyDecoder(gap_s=0.5)
    assert decode(keys.events, decoder) == ["ab"]
    assert decoder.abandoned == 1


def test_a_pause_shorter_than_gap_s_keeps_the_code() -> None:
    keys = Keys().tap(K.KEY_X).pause(0.4).tap(K.KEY_Y).enter()
    decoder = KeyDecoder(gap_s=0.5)
    assert decode(keys.events, decoder) == ["xy"]
    assert decoder.abandoned == 0


def test_a_code_of_max_len_passes_and_one_longer_is_discarded_and_counted() -> None:
    decoder = KeyDecoder(max_len=8)
    fits, too_long = Keys(), Keys()
    for _ in range(8):
        fits.tap(K.KEY_7)
    for _ in range(9):
        too_long.tap(K.KEY_7)
    assert decode(fits.enter().events, decoder) == ["7" * 8]
    assert decode(too_long.enter().events, decoder) == []
    assert decoder.overflows == 1


def test_a_stuck_key_is_discarded_without_growing_and_the_next_code_reads() -> None:
    decoder = KeyDecoder(max_len=512)
    keys = Keys(step=0.033).ev(K.KEY_1, 1)
    for _ in range(5000):
        keys.ev(K.KEY_1, 2)
    keys.ev(K.KEY_1, 0).enter().tap(K.KEY_O).tap(K.KEY_K).enter()
    codes, most = [], 0
    for event in keys.events:
        if (code := decoder.feed(event)) is not None:
            codes.append(code)
        most = max(most, decoder.pending)
    assert codes == ["ok"]
    assert most == 512
    assert decoder.overflows == 1


# -- SimulatedScanner -> EvdevScanner ------------------------------------------------------------

FAST = {"device": "sim", "reopen_initial_s": 0.01, "reopen_max_s": 0.02}


async def collect(scanner: EvdevScanner) -> list[str]:
    async with asyncio.timeout(5), aclosing(scanner.codes()) as codes:
        return [code async for code in codes]


def key_events(events: list[InputEvent]) -> list[tuple[int, int]]:
    return [(e.code, e.value) for e in events if e.type == K.EV_KEY]


async def test_simulated_scanner_types_what_a_scanner_types() -> None:
    sim = SimulatedScanner(key_interval_s=0.002, clock=lambda: 1_741_000_000.0)
    sim.type("aB")
    sim.close()
    events = [e async for e in sim.events()]

    assert key_events(events) == [
        (K.KEY_A, 1), (K.KEY_A, 0), (LSHIFT, 1), (K.KEY_B, 1), (K.KEY_B, 0), (LSHIFT, 0),
        (K.KEY_ENTER, 1), (K.KEY_ENTER, 0),
    ]  # fmt: skip
    assert [e.type for e in events] == [K.EV_KEY, K.EV_SYN] * 8  # a SYN_REPORT after each key
    stamps = [e.sec * 1_000_000 + e.usec for e in events[::2]]
    assert stamps[0] == 1_741_000_000 * 1_000_000
    assert [b - a for a, b in pairwise(stamps)] == [2_000] * 7  # microseconds, as the kernel stamps them


async def test_every_printable_ascii_character_survives_sim_and_decoder() -> None:
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    sim = SimulatedScanner()
    sim.type(printable)
    sim.type("SSM1:31010419800101002X:1741000000:q83vEjRWeJCrze8S")
    sim.close()
    assert await collect(EvdevScanner(QrScannerConfig(**FAST), sim.events)) == [
        printable,
        "SSM1:31010419800101002X:1741000000:q83vEjRWeJCrze8S",
    ]


def test_simulated_scanner_refuses_characters_a_keyboard_cannot_type() -> None:
    sim = SimulatedScanner()
    with pytest.raises(ValueError, match="中"):
        sim.type("ab中")


async def test_a_slow_partial_from_the_sim_is_abandoned() -> None:
    now = [1_741_000_000.0]
    sim = SimulatedScanner(clock=lambda: now[0])
    sim.type("MISREAD", enter=False)
    now[0] += 1.0
    sim.type("good")
    sim.close()
    scanner = EvdevScanner(QrScannerConfig(**FAST), sim.events)
    assert await collect(scanner) == ["good"]
    assert scanner.decoder.abandoned == 1


async def test_scanner_unplugged_mid_code_is_reopened_and_the_half_code_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimulatedScanner()
    sim.type("first")
    sim.type("HALF", enter=False)
    sim.unplug()
    sim.type("second")
    sim.close()
    scanner = EvdevScanner(QrScannerConfig(**FAST), sim.events)

    with caplog.at_level(logging.INFO, logger="drivers.qr.keyboard"):
        assert await collect(scanner) == ["first", "second"]
    assert scanner.outages == 1
    assert scanner.decoder.abandoned == 1
    assert [r.levelno for r in caplog.records if "gone" in r.message] == [logging.WARNING]
    assert any("back after" in r.message for r in caplog.records)


async def test_an_outage_of_several_failed_reopens_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sim = SimulatedScanner()
    sim.type("after")
    sim.close()
    attempts = 0

    def reopen() -> AsyncIterator[InputEvent]:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:  # the by-id link is gone until the replug
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return sim.events()

    scanner = EvdevScanner(QrScannerConfig(**FAST), reopen)
    with caplog.at_level(logging.WARNING, logger="drivers.qr.keyboard"):
        assert await collect(scanner) == ["after"]
    assert attempts == 4
    assert scanner.outages == 1
    assert len(caplog.records) == 1


class FlakyEvents:
    """A bare event iterator (no factory) whose device disappears once and then carries on."""

    def __init__(self, events: list[InputEvent], fail_at: int) -> None:
        self.events, self.fail_at, self.i, self.failed = events, fail_at, 0, False

    def __aiter__(self) -> FlakyEvents:
        return self

    async def __anext__(self) -> InputEvent:
        if self.i == self.fail_at and not self.failed:
            self.failed = True
            raise OSError(errno.ENODEV, "No such device")
        if self.i >= len(self.events):
            raise StopAsyncIteration
        self.i += 1
        return self.events[self.i - 1]


async def test_a_bare_source_that_raises_enodev_once_is_resumed() -> None:
    keys = Keys().tap(K.KEY_A).enter()
    fail_at = len(keys.events)
    keys.tap(K.KEY_B).enter()
    scanner = EvdevScanner(QrScannerConfig(**FAST), FlakyEvents(keys.events, fail_at))
    assert await collect(scanner) == ["a", "b"]
    assert scanner.outages == 1


async def test_an_unexpected_os_error_is_a_scanner_error_not_a_retry() -> None:
    async def broken() -> AsyncIterator[InputEvent]:
        raise OSError(errno.EIO, "Input/output error")
        yield  # an async generator

    with pytest.raises(ScannerError, match="Input/output error"):
        await collect(EvdevScanner(QrScannerConfig(**FAST), broken))


@pytest.mark.parametrize("device", ["{tmp}/by-id/usb-Scanner-event-kbd", "Newland HID Scanner"])
async def test_a_missing_device_is_an_outage_retried_and_logged_once(
    device: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real evdev path: this machine has no input devices, so the device is never there."""
    scanner = EvdevScanner(QrScannerConfig(**{**FAST, "device": device.format(tmp=tmp_path)}))
    with caplog.at_level(logging.WARNING, logger="drivers.qr.keyboard"):
        task = asyncio.create_task(collect(scanner))
        await asyncio.sleep(0.3)  # about 15 attempts at 0.01-0.02 s
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert scanner.outages == 1
    assert not scanner.connected
    assert len(caplog.records) == 1


async def test_a_device_path_that_is_not_an_input_device_fails_loudly(tmp_path: Path) -> None:
    not_input = tmp_path / "event0"
    not_input.write_text("")
    with pytest.raises(ScannerError, match="not an input event device") as exc:
        await collect(EvdevScanner(QrScannerConfig(**{**FAST, "device": str(not_input)})))
    assert exc.value.device == str(not_input)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"gap_s": 0}, "gap_s"), ({"max_len": 0}, "max_len"), ({"device": ""}, "device"), ({"grabb": True}, "grabb")],
)
def test_scanner_config_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        QrScannerConfig(**{"device": "/dev/input/event3", **change})
    assert exc.value.errors()[0]["loc"] == (field,)


def test_scanner_config_refuses_a_reopen_cap_below_the_first_delay() -> None:
    with pytest.raises(ValidationError, match="reopen_max_s"):
        QrScannerConfig(device="x", reopen_initial_s=5, reopen_max_s=1)


# -- validator ---------------------------------------------------------------------------------

SALT = b"site-secret-7f3a9c2e51d84b06"
PERSON = "31010419800101002X"  # shaped like a resident id number; invented
OTHER = "310104199002020031"
STAFF = "s-0042"
SIG = "q83vEjRWeJCrze8S"
PATTERN = r"SSM1:(?P<id>[0-9]{17}[0-9X]):(?P<ts>[0-9]{10}):(?P<sig>[A-Za-z0-9+/=]{16,64})"
NOW = datetime(2025, 3, 3, 8, 25, tzinfo=HALL_ZONE)


def ssm(person: str = PERSON, made: datetime = NOW, sig: str = SIG) -> str:
    return f"SSM1:{person}:{int(made.timestamp())}:{sig}"


@pytest.fixture
def qr_dir(tmp_path: Path) -> Path:
    (tmp_path / "qr-salt").write_bytes(SALT + b"\n")
    (tmp_path / "staff.map").write_text(f"# enrolled 2025-03-01\n{staff_map_line(SALT, PERSON, STAFF)}\n")
    return tmp_path


def config(qr_dir: Path, **change: Any) -> PatternQrConfig:
    fields = {
        "type": "pattern",
        "region": "shanghai",
        "pattern": PATTERN,
        "staff_map": qr_dir / "staff.map",
        "salt_file": qr_dir / "qr-salt",
        **change,
    }
    return TypeAdapter(QrConfig).validate_python(fields)


@pytest.fixture
def validator(qr_dir: Path) -> PatternQrValidator:
    built = build_validator(config(qr_dir))
    assert isinstance(built, PatternQrValidator)
    return built


def test_a_fresh_code_of_an_enrolled_person_maps_to_their_staff_id(validator: PatternQrValidator) -> None:
    result = validator.validate(ssm(), NOW)
    assert result == QrResult(STAFF, None)
    assert result.ok


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [(0, None), (119, None), (121, "expired"), (-29, None), (-31, "expired"), (86_400, "expired")],
    ids=["now", "119s-old", "121s-old", "29s-ahead", "31s-ahead", "yesterday"],
)
def test_freshness_allows_max_age_back_and_30_s_ahead(
    validator: PatternQrValidator, age_s: int, expected: str | None
) -> None:
    result = validator.validate(ssm(made=NOW - timedelta(seconds=age_s)), NOW)
    assert result.reason == expected
    assert result.staff_id == (STAFF if expected is None else None)


@pytest.mark.parametrize(
    "code",
    ["", "hello", ssm() + ":v2", ssm().lower(), ssm(person="3101041980"), "https://example.gov.cn/ssm?c=1"],
    ids=["empty", "word", "trailing", "lower-case", "short-id", "url"],
)
def test_a_code_not_matching_the_whole_pattern_is_malformed(validator: PatternQrValidator, code: str) -> None:
    assert validator.validate(code, NOW) == QrResult(None, "malformed")


def test_a_person_not_in_the_staff_map_is_unknown_staff(validator: PatternQrValidator) -> None:
    assert validator.validate(ssm(person=OTHER), NOW) == QrResult(None, "unknown_staff")


def test_a_code_is_accepted_once_and_a_new_code_of_the_same_person_again(validator: PatternQrValidator) -> None:
    code = ssm()
    assert validator.validate(code, NOW).ok
    assert validator.validate(code, NOW + timedelta(seconds=5)) == QrResult(None, "replayed")
    assert validator.validate(ssm(made=NOW + timedelta(seconds=4)), NOW + timedelta(seconds=5)).ok


def test_the_replay_memory_is_bounded_and_counts_what_it_forgets(
    validator: PatternQrValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qr_validators, "REPLAY_CAPACITY", 3)
    codes = [ssm(sig=f"{SIG}{n:04d}") for n in range(5)]
    assert all(validator.validate(code, NOW).ok for code in codes)
    assert validator.evicted == 2
    assert validator.validate(codes[0], NOW).ok  # forgotten early: the price of the bound
    assert validator.validate(codes[4], NOW).reason == "replayed"


def test_a_region_token_outside_region_codes_is_wrong_region(qr_dir: Path) -> None:
    pattern = r"(?P<region>[A-Z]{2})\|(?P<id>[0-9X]{18})\|(?P<ts>[0-9]{10})"
    checker = build_validator(config(qr_dir, pattern=pattern, region_codes=["SH"]))
    ts = int(NOW.timestamp())
    assert checker.validate(f"CQ|{PERSON}|{ts}", NOW) == QrResult(None, "wrong_region")
    assert checker.validate(f"SH|{PERSON}|{ts}", NOW) == QrResult(STAFF, None)


def test_a_code_without_a_time_is_refused_again_until_max_age_has_passed(
    qr_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="drivers.qr.validators"):
        badge = build_validator(config(qr_dir, pattern=r"BADGE-(?P<id>[0-9X]{18})"))
    assert "screenshot" in caplog.text
    code = f"BADGE-{PERSON}"
    assert badge.validate(code, NOW).ok
    assert badge.validate(code, NOW + timedelta(seconds=119)).reason == "replayed"
    assert badge.validate(code, NOW + timedelta(seconds=121)).ok


@pytest.mark.parametrize(
    ("ts_format", "written", "expected"),
    [
        ("unix_ms", str(int(NOW.timestamp() * 1000) - 5_000), None),
        ("unix_ms", str(int(NOW.timestamp()) - 5), "expired"),  # seconds read as milliseconds: 1970
        ("%Y%m%d%H%M%S", "20250303082430", None),  # Shanghai time; read as UTC it is 8 hours ahead
        ("%Y%m%d%H%M%S", "20251303082430", "malformed"),
        ("unix", "１７４０９６１５００", "malformed"),  # full-width digits are digits to str.isdigit
    ],
)
def test_timestamp_formats(qr_dir: Path, ts_format: str, written: str, expected: str | None) -> None:
    pattern = r"T(?P<ts>\w+)\|(?P<id>[0-9X]{18})"
    checker = build_validator(config(qr_dir, pattern=pattern, ts_format=ts_format))
    assert checker.validate(f"T{written}|{PERSON}", NOW).reason == expected


def test_the_raw_code_and_personal_id_are_never_logged_or_kept(
    validator: PatternQrValidator, caplog: pytest.LogCaptureFixture
) -> None:
    code = ssm()
    with caplog.at_level(logging.DEBUG):
        results = [
            validator.validate(code, NOW),
            validator.validate(code, NOW),
            validator.validate(ssm(made=NOW - timedelta(hours=1)), NOW),
            validator.validate(ssm() + "!", NOW),
            validator.validate(ssm(person=OTHER), NOW),
        ]
    assert [r.reason for r in results] == [None, "replayed", "expired", "malformed", "unknown_staff"]
    assert hashlib.sha256(code.encode()).hexdigest()[:10] in caplog.text  # logs can still tell codes apart
    kept = caplog.text + repr(results) + repr(vars(validator)) + validator.cfg.staff_map.read_text()
    for secret in (PERSON, OTHER, SIG, code):
        assert secret not in kept


def test_the_salt_is_read_from_the_credentials_directory(
    qr_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path_factory.mktemp("credentials")
    (qr_dir / "qr-salt").rename(creds / "qr-salt")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.chdir(qr_dir)
    assert build_validator(config(qr_dir, salt_file="qr-salt")).validate(ssm(), NOW).ok


def test_an_enrolment_is_picked_up_without_a_restart_and_a_broken_map_keeps_the_old(
    validator: PatternQrValidator, qr_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staff_map = qr_dir / "staff.map"
    assert validator.validate(ssm(person=OTHER), NOW).reason == "unknown_staff"
    staff_map.write_text(staff_map.read_text() + staff_map_line(SALT, OTHER, "s-0043") + "\n")
    assert validator.validate(ssm(person=OTHER, sig=SIG + "2"), NOW) == QrResult("s-0043", None)

    staff_map.write_text("not a staff map line\n")
    with caplog.at_level(logging.ERROR, logger="drivers.qr.validators"):
        assert validator.validate(ssm(sig=SIG + "3"), NOW) == QrResult(STAFF, None)
    assert f"{staff_map}:1" in caplog.text


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"pattern": "SSM1:(?P<id>[0-9]+"}, "pattern", "not a regular expression"),
        ({"pattern": r"SSM1:([0-9X]{18}):(?P<ts>[0-9]{10})"}, "pattern", "(?P<id>"),
        ({"timezone": "Asia/Shang_Hai"}, "timezone", "unknown time zone"),
        ({"max_age_s": 0}, "max_age_s", "greater than 0"),
        ({"ts_format": "%d.%m.%Y"}, "ts_format", "unix"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"type": "chongqing"}, "", "pattern"),
    ],
)
def test_config_errors_name_the_field(qr_dir: Path, change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        config(qr_dir, **change)
    error = exc.value.errors()[0]
    assert error["loc"][-1:] == ((field,) if field else ())
    assert words in error["msg"]


@pytest.mark.parametrize("change", [{"region_codes": ["SH"]}, {"pattern": r"(?P<region>SH):(?P<id>\d+)"}])
def test_a_region_group_and_region_codes_go_together(qr_dir: Path, change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="region_codes"):
        config(qr_dir, **change)


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (lambda d: (d / "staff.map").unlink(), "staff_map"),
        (lambda d: (d / "staff.map").write_text(f"# ok\n\n{'ab' * 32} s-1 extra\n"), "staff.map:3"),
        (lambda d: (d / "staff.map").write_text(f"{'ab' * 32} s-1\n{'AB' * 32} s-2\n"), "another staff id"),
        (lambda d: (d / "qr-salt").unlink(), "salt_file"),
        (lambda d: (d / "qr-salt").write_text(" \n"), "is empty"),
    ],
    ids=["no-map", "bad-line", "two-staff-one-id", "no-salt", "empty-salt"],
)
def test_unusable_staff_map_or_salt_fails_the_start_naming_the_file(
    qr_dir: Path, write: Callable[[Path], object], words: str
) -> None:
    write(qr_dir)
    with pytest.raises(ConfigError, match=words):
        build_validator(config(qr_dir))


def test_staff_map_line_refuses_a_staff_id_that_would_break_the_file() -> None:
    assert staff_map_line(SALT, PERSON, STAFF) == f"{hashlib.sha256(SALT + PERSON.encode()).hexdigest()} {STAFF}"
    with pytest.raises(ValueError, match="staff_id"):
        staff_map_line(SALT, PERSON, "s 0042")


def test_now_must_be_timezone_aware(validator: PatternQrValidator) -> None:
    with pytest.raises(ValueError, match="aware"):
        validator.validate(ssm(), NOW.replace(tzinfo=None))


# -- end to end --------------------------------------------------------------------------------


async def test_a_scanned_code_punches_the_right_staff_once(validator: PatternQrValidator) -> None:
    sim = SimulatedScanner()
    sim.type(ssm())
    sim.type(ssm())  # shown twice to the scanner
    sim.close()
    codes = await collect(EvdevScanner(QrScannerConfig(**FAST), sim.events))
    assert [validator.validate(code, NOW) for code in codes] == [QrResult(STAFF, None), QrResult(None, "replayed")]
