"""Pin the v1 wire contract: topic grammar, event ids, the envelope, event validation and StoredAck.

Everything here is pure (no broker, no store): a change that breaks one of these breaks every device
in the field, which speaks the contract as it was when it was installed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from protocol import topics
from protocol.envelope import MAX_EVENT_BYTES, Envelope, StoredAck
from protocol.events import (
    HEALTH_TYPE,
    REGISTRY,
    AttendancePunch,
    Health,
    Rejected,
    RejectReason,
    validate_event,
)
from protocol.ids import uuid7
from protocol.topics import Kind, Topic, TopicError

SITE = "qingpu"
DEVICE = "att-01"
PUNCH = "attendance.punch"
SHANGHAI = timezone(timedelta(hours=8))

# --------------------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------------------

# One builder per Kind, so the round trip below covers every channel of the grammar.
BUILDERS: dict[Kind, Callable[[str, str], str]] = {
    Kind.STATUS: topics.status,
    Kind.EVENT: lambda site, device: topics.event(site, device, PUNCH),
    Kind.HEALTH: topics.health,
    Kind.CMD: topics.cmd,
    Kind.CMD_ACK: topics.cmd_ack,
    Kind.CFG: topics.cfg,
    Kind.STORED: topics.stored,
}

EXPECTED_TOPICS: dict[Kind, str] = {
    Kind.STATUS: "hall/v1/qingpu/att-01/status",
    Kind.EVENT: "hall/v1/qingpu/att-01/evt/attendance.punch",
    Kind.HEALTH: "hall/v1/qingpu/att-01/tele/health",
    Kind.CMD: "hall/v1/qingpu/att-01/cmd",
    Kind.CMD_ACK: "hall/v1/qingpu/att-01/cmd/ack",
    Kind.CFG: "hall/v1/qingpu/att-01/cfg",
    Kind.STORED: "hall/v1/qingpu/att-01/stored",
}


def test_every_kind_has_a_builder_under_test() -> None:
    assert set(BUILDERS) == set(Kind)
    assert set(EXPECTED_TOPICS) == set(Kind)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_builder_produces_the_v1_topic_string(kind: Kind) -> None:
    assert BUILDERS[kind](SITE, DEVICE) == EXPECTED_TOPICS[kind]


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_parse_round_trips_every_builder(kind: Kind) -> None:
    parsed = topics.parse(BUILDERS[kind](SITE, DEVICE))

    expected_type = PUNCH if kind is Kind.EVENT else None
    assert parsed == Topic(site=SITE, device=DEVICE, kind=kind, event_type=expected_type)


@pytest.mark.parametrize("event_type", sorted(REGISTRY))
def test_parse_round_trips_every_registered_event_type(event_type: str) -> None:
    parsed = topics.parse(topics.event(SITE, DEVICE, event_type))

    assert parsed == Topic(SITE, DEVICE, Kind.EVENT, event_type)


BAD_IDENTIFIERS = [
    pytest.param("a/b", id="slash"),
    pytest.param("a+b", id="plus"),
    pytest.param("a#b", id="hash"),
    pytest.param("+", id="bare-plus-wildcard"),
    pytest.param("#", id="bare-hash-wildcard"),
    pytest.param("", id="empty"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("-dev", id="leading-dash"),
    pytest.param("_dev", id="leading-underscore"),
    pytest.param("dev 1", id="space"),
    pytest.param("dev.1", id="dot"),
    pytest.param("设备", id="non-ascii"),
]


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS)
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_builders_refuse_a_bad_device_id(kind: Kind, bad: str) -> None:
    with pytest.raises(TopicError, match=r"^device .* is not allowed"):
        BUILDERS[kind](SITE, bad)


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS)
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_builders_refuse_a_bad_site_id(kind: Kind, bad: str) -> None:
    with pytest.raises(TopicError, match=r"^site .* is not allowed"):
        BUILDERS[kind](bad, DEVICE)


def test_identifiers_of_1_and_64_characters_are_accepted() -> None:
    longest = "a" * 64

    assert topics.status("q", longest) == f"hall/v1/q/{longest}/status"


# BUG: protocol/topics.py:22 SEGMENT_RE ends in `$`, which in Python's `re` also matches just before a
# trailing "\n"; check_segment("att-01\n") is accepted, so status()/parse() accept a device id with a
# newline (parse("hall/v1/qingpu/att-01\n/status") -> Topic(device="att-01\n")), while the envelope's
# pydantic Segment refuses the same id. Same for EVENT_TYPE_RE (line 23). Fix: `\Z` or re.fullmatch.
def test_identifier_with_trailing_newline_is_refused() -> None:
    bad = "att-01\n"
    with pytest.raises(TopicError):
        topics.check_segment(bad, "device")
    with pytest.raises(TopicError):
        topics.parse(f"hall/v1/{SITE}/{bad}/status")
    with pytest.raises(TopicError):
        topics.event(SITE, DEVICE, "attendance.punch\n")


@pytest.mark.parametrize(
    "bad_type",
    [
        "punch",
        "Attendance.punch",
        "attendance.",
        ".punch",
        "attendance..punch",
        "attendance/punch",
        "a.+",
        "",
    ],
)
def test_event_builder_refuses_a_bad_event_type(bad_type: str) -> None:
    with pytest.raises(TopicError, match=r"^event type .* is not allowed"):
        topics.event(SITE, DEVICE, bad_type)


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        pytest.param("hall/v2/qingpu/att-01/status", "is not under hall/v1", id="wrong-version"),
        pytest.param("other/v1/qingpu/att-01/status", "is not under hall/v1", id="wrong-root"),
        pytest.param("hall/v1/qingpu/att-01", "is not under hall/v1", id="no-channel"),
        pytest.param("hall/v1", "is not under hall/v1", id="prefix-only"),
        pytest.param("", "is not under hall/v1", id="empty"),
        pytest.param("hall/v1/qingpu/att-01/foo", "unknown channel 'foo'", id="unknown-channel"),
        pytest.param("hall/v1/qingpu/att-01/tele/other", "unknown channel 'tele/other'", id="unknown-tele"),
        pytest.param("hall/v1/qingpu/att-01/status/x", "unknown channel 'status/x'", id="status-suffix"),
        pytest.param("hall/v1/qingpu/att-01/", "unknown channel ''", id="trailing-slash"),
        pytest.param("hall/v1/qingpu/att-01/evt", "needs its type", id="evt-without-type"),
        pytest.param(
            "hall/v1/qingpu/att-01/evt/attendance.punch/x",
            "unknown channel 'evt/attendance.punch/x'",
            id="evt-extra-level",
        ),
    ],
)
def test_parse_refuses_a_foreign_topic_naming_it(topic: str, why: str) -> None:
    with pytest.raises(TopicError) as excinfo:
        topics.parse(topic)

    message = str(excinfo.value)
    assert repr(topic) in message
    assert why in message


@pytest.mark.parametrize(
    "topic",
    [
        "hall/v1/+/+/status",
        "hall/v1/qingpu/#",
        "hall/v1/qingpu/att-01/evt/#",
        "hall/v1/qingpu/att-01/evt/punch",
        "hall/v1/-x/att-01/status",
    ],
)
def test_parse_refuses_wildcards_and_bad_segments(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(topic)


def test_shared_subscription_wraps_the_filter_and_checks_the_group() -> None:
    assert topics.shared("hallfleet", topics.ALL_EVENTS) == "$share/hallfleet/hall/v1/+/+/evt/#"
    with pytest.raises(TopicError):
        topics.shared("bad/group", topics.ALL_EVENTS)


# --------------------------------------------------------------------------------------------------
# Event ids
# --------------------------------------------------------------------------------------------------


def test_uuid7_has_version_7_and_rfc_variant() -> None:
    for _ in range(1000):
        value = uuid.UUID(uuid7())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 62) & 0b11 == 0b10


def test_uuid7_carries_the_unix_milliseconds_in_its_top_48_bits() -> None:
    ms = 1_740_000_000_123

    assert uuid.UUID(uuid7(now_ms=ms)).int >> 80 == ms


def test_uuid7_without_argument_uses_the_current_time() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    ms = uuid.UUID(uuid7()).int >> 80
    after = int(datetime.now(UTC).timestamp() * 1000)

    assert before - 1 <= ms <= after + 1


def test_uuid7_sorts_by_time_as_string_and_as_integer() -> None:
    base = 1_740_000_000_000
    ids = [uuid7(now_ms=base + i) for i in range(200)]

    assert sorted(ids) == ids
    assert sorted(ids, key=lambda s: uuid.UUID(s).int) == ids


def test_uuid7_is_unique_over_10000_calls() -> None:
    ids = [uuid7() for _ in range(10_000)]

    assert len(set(ids)) == 10_000


def test_uuid7_is_unique_within_one_millisecond() -> None:
    ids = [uuid7(now_ms=1_740_000_000_000) for _ in range(10_000)]

    assert len(set(ids)) == 10_000


def test_uuid7_matches_the_envelope_id_pattern() -> None:
    env = Envelope.model_validate(envelope_fields(id=uuid7()))

    assert uuid.UUID(env.id).version == 7


# --------------------------------------------------------------------------------------------------
# Envelope
# --------------------------------------------------------------------------------------------------

TS = datetime(2025, 3, 3, 9, 30, 5, tzinfo=SHANGHAI)
PUNCH_DATA: dict[str, Any] = {"staff_id": "s-0042", "method": "face", "direction": "in"}


def envelope_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": 1,
        "id": "01956d1e-2a3b-7c4d-8e5f-60718293a4b5",
        "site": SITE,
        "device": DEVICE,
        "type": PUNCH,
        "seq": 41,
        "boot_id": "boot-7f3a",
        "ts": TS.isoformat(),
        "clock_synced": True,
        "data": dict(PUNCH_DATA),
    }
    fields.update(overrides)
    return fields


def body(**overrides: Any) -> bytes:
    """UTF-8 JSON as the agent sends it (pydantic writes non-ASCII unescaped)."""
    return json.dumps(envelope_fields(**overrides), ensure_ascii=False).encode()


def error_types(exc: ValidationError) -> set[str]:
    return {err["type"] for err in exc.errors()}


def test_envelope_parses_a_complete_event() -> None:
    env = Envelope.model_validate_json(body())

    assert env.seq == 41
    assert env.ts == TS
    assert env.replayed is False
    assert env.data == PUNCH_DATA


def test_envelope_round_trips_through_json() -> None:
    env = Envelope.model_validate_json(body(replayed=True))

    assert Envelope.model_validate_json(env.model_dump_json()) == env


def test_envelope_is_frozen() -> None:
    env = Envelope.model_validate_json(body())

    with pytest.raises(ValidationError) as excinfo:
        env.seq = 42  # type: ignore[misc]

    assert error_types(excinfo.value) == {"frozen_instance"}
    assert env.seq == 41


def test_envelope_refuses_an_extra_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Envelope.model_validate(envelope_fields(name="张三"))

    assert error_types(excinfo.value) == {"extra_forbidden"}
    assert excinfo.value.errors()[0]["loc"] == ("name",)


def test_envelope_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Envelope.model_validate(envelope_fields(ts="2025-03-03T09:30:05"))

    assert error_types(excinfo.value) == {"timezone_aware"}


def test_envelope_refuses_a_negative_seq() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Envelope.model_validate(envelope_fields(seq=-1))

    assert error_types(excinfo.value) == {"greater_than_equal"}


def test_envelope_accepts_seq_zero() -> None:
    assert Envelope.model_validate(envelope_fields(seq=0)).seq == 0


# --------------------------------------------------------------------------------------------------
# validate_event
# --------------------------------------------------------------------------------------------------

PUNCH_TOPIC = topics.parse(topics.event(SITE, DEVICE, PUNCH))
HEALTH_TOPIC = topics.parse(topics.health(SITE, DEVICE))
HEALTH_DATA: dict[str, Any] = {
    "uptime_s": 3600.5,
    "cpu_temp_c": 48.3,
    "mem_used_pct": 41.2,
    "outbox_depth": 3,
    "outbox_dropped": 0,
    "clock_synced": True,
    "interval_s": 30.0,
}


def reject_reason(topic: Topic, raw: bytes) -> Rejected:
    with pytest.raises(Rejected) as excinfo:
        validate_event(topic, raw)
    return excinfo.value


def test_validate_event_returns_envelope_and_typed_punch() -> None:
    env, payload = validate_event(PUNCH_TOPIC, body())

    assert env.type == PUNCH
    assert env.seq == 41
    assert payload == AttendancePunch(staff_id="s-0042", method="face", direction="in", offline=False)
    assert isinstance(payload, AttendancePunch)


def test_validate_event_accepts_health_on_tele_health() -> None:
    env, payload = validate_event(HEALTH_TOPIC, body(type=HEALTH_TYPE, data=HEALTH_DATA))

    assert env.type == HEALTH_TYPE
    assert isinstance(payload, Health)
    assert payload.cpu_temp_c == 48.3
    assert payload.load1 is None


def test_validate_event_accepts_exactly_max_event_bytes() -> None:
    raw = body()
    raw += b" " * (MAX_EVENT_BYTES - len(raw))  # JSON allows trailing whitespace
    assert len(raw) == MAX_EVENT_BYTES

    env, _ = validate_event(PUNCH_TOPIC, raw)

    assert env.seq == 41


def test_validate_event_rejects_one_byte_over_max_as_oversized() -> None:
    raw = body()
    raw += b" " * (MAX_EVENT_BYTES + 1 - len(raw))

    rejected = reject_reason(PUNCH_TOPIC, raw)

    assert rejected.reason is RejectReason.OVERSIZED
    assert str(MAX_EVENT_BYTES + 1) in rejected.detail


def test_oversized_counts_bytes_not_characters() -> None:
    raw = body(data={**PUNCH_DATA, "note": "满意" * 3000})  # 6,000 characters, 18,000 UTF-8 bytes
    assert len(raw.decode()) < MAX_EVENT_BYTES < len(raw)

    assert reject_reason(PUNCH_TOPIC, raw).reason is RejectReason.OVERSIZED


def test_oversized_is_checked_before_parsing() -> None:
    raw = b"{" * (MAX_EVENT_BYTES + 1)

    assert reject_reason(PUNCH_TOPIC, raw).reason is RejectReason.OVERSIZED


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json", id="broken-json"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"null", id="null"),
        pytest.param(body()[:-1], id="truncated"),
    ],
)
def test_validate_event_rejects_malformed_json(raw: bytes) -> None:
    assert reject_reason(PUNCH_TOPIC, raw).reason is RejectReason.MALFORMED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"seq": "forty-one"}, "seq", id="seq-text"),
        pytest.param({"seq": [41]}, "seq", id="seq-list"),
        pytest.param({"data": "staff s-0042"}, "data", id="data-string"),
        pytest.param({"clock_synced": "maybe"}, "clock_synced", id="bool-text"),
        pytest.param({"v": 2}, "v", id="version-2"),
        pytest.param({"id": "not-a-uuid"}, "id", id="bad-id"),
        pytest.param({"ts": "yesterday"}, "ts", id="bad-ts"),
        pytest.param({"ts": "2025-03-03T09:30:05"}, "ts", id="naive-ts"),
        pytest.param({"seq": -1}, "seq", id="negative-seq"),
        pytest.param({"boot_id": ""}, "boot_id", id="empty-boot-id"),
        pytest.param({"extra": 1}, "extra", id="extra-envelope-field"),
    ],
)
def test_validate_event_rejects_wrong_envelope_fields_as_malformed(overrides: dict[str, Any], field: str) -> None:
    rejected = reject_reason(PUNCH_TOPIC, body(**overrides))

    assert rejected.reason is RejectReason.MALFORMED
    assert rejected.detail.startswith(f"{field}: ")


def test_validate_event_rejects_missing_envelope_field_as_malformed() -> None:
    fields = envelope_fields()
    del fields["id"]

    rejected = reject_reason(PUNCH_TOPIC, json.dumps(fields).encode())

    assert rejected.reason is RejectReason.MALFORMED
    assert rejected.detail == "id: Field required"


def test_validate_event_rejects_an_unregistered_type() -> None:
    topic = topics.parse(topics.event(SITE, DEVICE, "foo.bar"))

    rejected = reject_reason(topic, body(type="foo.bar", data={"x": 1}))

    assert rejected.reason is RejectReason.UNKNOWN_TYPE
    assert "'foo.bar'" in rejected.detail


def test_validate_event_rejects_rating_level_7_as_invalid_payload() -> None:
    topic = topics.parse(topics.event(SITE, DEVICE, "rating.submitted"))
    data = {"window": "A03", "staff_id": "s-0042", "level": 7}

    rejected = reject_reason(topic, body(type="rating.submitted", data=data))

    assert rejected.reason is RejectReason.INVALID_PAYLOAD
    assert rejected.detail.startswith("level: ")


def test_validate_event_accepts_rating_levels_1_to_5() -> None:
    topic = topics.parse(topics.event(SITE, DEVICE, "rating.submitted"))
    for level in range(1, 6):
        data = {"window": "A03", "staff_id": "s-0042", "level": level}
        _, payload = validate_event(topic, body(type="rating.submitted", data=data))
        assert payload.model_dump()["level"] == level


def test_no_biometric_data_on_the_wire_face_template_is_refused() -> None:
    data = {**PUNCH_DATA, "face_template": "AAECAwQFBgcICQ=="}

    rejected = reject_reason(PUNCH_TOPIC, body(data=data))

    assert rejected.reason is RejectReason.INVALID_PAYLOAD
    assert rejected.detail == "face_template: Extra inputs are not permitted"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"staff_id": "s-0042", "method": "iris"}, id="unknown-method"),
        pytest.param({"staff_id": "", "method": "face"}, id="empty-staff"),
        pytest.param({"method": "face"}, id="missing-staff"),
        pytest.param({"staff_id": "s-0042", "method": "face", "direction": "sideways"}, id="bad-direction"),
    ],
)
def test_validate_event_rejects_bad_punch_payload(data: dict[str, Any]) -> None:
    assert reject_reason(PUNCH_TOPIC, body(data=data)).reason is RejectReason.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"site": "songjiang"}, id="site"),
        pytest.param({"device": "att-02"}, id="device"),
        pytest.param({"type": "rating.submitted"}, id="type"),
    ],
)
def test_validate_event_rejects_envelope_that_disagrees_with_topic(overrides: dict[str, Any]) -> None:
    rejected = reject_reason(PUNCH_TOPIC, body(**overrides))

    assert rejected.reason is RejectReason.TOPIC_MISMATCH
    assert next(iter(overrides.values())) in rejected.detail


def test_validate_event_rejects_non_health_on_tele_health() -> None:
    rejected = reject_reason(HEALTH_TOPIC, body())

    assert rejected.reason is RejectReason.TOPIC_MISMATCH
    assert rejected.detail.endswith(f"topic says {SITE}/{DEVICE} {HEALTH_TYPE}")


def test_validate_event_rejects_invalid_health_payload() -> None:
    data = {**HEALTH_DATA, "mem_used_pct": 140}

    rejected = reject_reason(HEALTH_TOPIC, body(type=HEALTH_TYPE, data=data))

    assert rejected.reason is RejectReason.INVALID_PAYLOAD
    assert rejected.detail.startswith("mem_used_pct: ")


def test_validate_event_on_a_channel_without_events_is_a_mismatch() -> None:
    topic = topics.parse(topics.status(SITE, DEVICE))

    assert reject_reason(topic, body()).reason is RejectReason.TOPIC_MISMATCH


def test_every_reject_reason_of_validate_event_is_exercised() -> None:
    """BAD_TOPIC, BAD_SIGNATURE and STORE_REJECTED belong to the consumer (parse() failed, the device's key refused
    it, the database refused it), so validate_event never produces them."""
    produced = {
        reject_reason(PUNCH_TOPIC, b"x" * (MAX_EVENT_BYTES + 1)).reason,
        reject_reason(PUNCH_TOPIC, b"{").reason,
        reject_reason(topics.parse(topics.event(SITE, DEVICE, "foo.bar")), body(type="foo.bar")).reason,
        reject_reason(PUNCH_TOPIC, body(data={})).reason,
        reject_reason(PUNCH_TOPIC, body(site="songjiang")).reason,
    }

    consumers = {RejectReason.BAD_TOPIC, RejectReason.BAD_SIGNATURE, RejectReason.STORE_REJECTED}
    assert produced == set(RejectReason) - consumers


def test_rejected_detail_is_capped_at_2000_characters() -> None:
    rejected = Rejected(RejectReason.MALFORMED, "x" * 5000)

    assert len(rejected.detail) == 2000
    assert str(rejected).startswith("malformed: ")


# --------------------------------------------------------------------------------------------------
# StoredAck
# --------------------------------------------------------------------------------------------------


def test_stored_ack_compresses_seqs_into_inclusive_ranges() -> None:
    assert StoredAck.from_seqs([1, 2, 3, 5, 7, 8]).ranges == [(1, 3), (5, 5), (7, 8)]


def test_stored_ack_sorts_and_deduplicates() -> None:
    assert StoredAck.from_seqs([8, 1, 3, 2, 2, 7, 5, 1]).ranges == [(1, 3), (5, 5), (7, 8)]


def test_stored_ack_of_no_seqs_is_empty() -> None:
    assert StoredAck.from_seqs([]).ranges == []


def test_stored_ack_seqs_expands_the_ranges() -> None:
    assert StoredAck.from_seqs([0, 1, 2, 10, 12, 13]).seqs() == [0, 1, 2, 10, 12, 13]


def test_stored_ack_round_trips_through_json() -> None:
    ack = StoredAck.from_seqs([1, 2, 3, 5, 7, 8])

    wire = ack.model_dump_json()

    assert json.loads(wire) == {"ranges": [[1, 3], [5, 5], [7, 8]]}
    assert StoredAck.model_validate_json(wire) == ack


def test_stored_ack_takes_10000_ranges() -> None:
    ack = StoredAck.from_seqs(list(range(0, 20_000, 2)))

    assert len(ack.ranges) == 10_000


def test_stored_ack_refuses_more_than_10000_ranges() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StoredAck.from_seqs(list(range(0, 20_002, 2)))

    assert error_types(excinfo.value) == {"too_long"}


def test_stored_ack_refuses_more_than_10000_ranges_from_the_wire() -> None:
    wire = json.dumps({"ranges": [[i, i] for i in range(0, 20_002, 2)]})

    with pytest.raises(ValidationError):
        StoredAck.model_validate_json(wire)


def test_stored_ack_message_has_no_room_for_more() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StoredAck.model_validate_json('{"ranges": [[1, 3]], "device": "att-01"}')

    assert error_types(excinfo.value) == {"extra_forbidden"}
    assert re.search(r"device", str(excinfo.value))
