"""The device makers' page (docs/contract.md) is what the models say, and the bounds it states are enforced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol.bounds import EXACT_INT_MAX, INT32_MAX, INT64_MAX
from protocol.contract import render
from protocol.envelope import StatusMessage, settle_clock
from protocol.events import AttendancePunch, ContractError, Fault, KioskUsage, encode_event
from tests.support.events import punch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "contract.md"


def test_the_committed_contract_page_is_what_the_models_say() -> None:
    assert PAGE.read_text() == render(), "docs/contract.md drifted: python -m protocol.contract > docs/contract.md"


@pytest.mark.parametrize(
    "make",
    [
        lambda: AttendancePunch(staff_id="S1\x00", method="face"),
        lambda: AttendancePunch(staff_id="S1\ud800", method="face"),
        lambda: AttendancePunch(staff_id="S1", method="face", score=float("nan")),
        lambda: Fault(component="printer", code="jam", detail="a\x07b"),
        lambda: KioskUsage(counters={"tickets": EXACT_INT_MAX + 1}),
        lambda: KioskUsage(counters={f"c{i}": 1 for i in range(65)}),
        lambda: StatusMessage(state="online", session=INT64_MAX + 1, boot_id="b", ts=datetime.now(UTC), heartbeat_s=1),
    ],
)
def test_a_device_cannot_build_what_the_centre_would_refuse(make: object) -> None:
    with pytest.raises(ValidationError):
        make()  # type: ignore[operator]


def test_bounds_at_the_edge_are_accepted() -> None:
    KioskUsage(counters={"tickets": EXACT_INT_MAX})
    Fault(component="printer", code="jam", detail="line one\nline two\tend")
    StatusMessage(state="online", session=INT64_MAX, boot_id="b", ts=datetime.now(UTC), heartbeat_s=3600)
    assert INT32_MAX < INT64_MAX


def test_an_oversized_envelope_is_refused_where_it_is_built() -> None:
    env = punch(1).model_copy(update={"data": {"staff_id": "S1", "method": "face", "pad": "x" * 20_000}})
    with pytest.raises(ContractError, match="the centre would refuse it"):
        encode_event(env)


def test_a_far_off_clock_is_stored_at_the_receive_time_and_flagged_never_refused() -> None:
    now = datetime.now(UTC)
    far = punch(1).model_copy(update={"ts": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))})
    settled = settle_clock(far, now)
    assert (settled.ts, settled.clock_synced) == (now, False)
    epoch = punch(2).model_copy(update={"ts": datetime(1970, 1, 1, tzinfo=UTC), "clock_synced": False})
    assert settle_clock(epoch, now) is epoch, "a Pi without a real-time clock keeps its own time, already flagged"


def test_every_nested_model_is_expanded_with_its_fields_and_bounds() -> None:
    """GIVEN payloads whose fields hold models (attendance.punch's PunchLiveness, locker.bank's Compartment list)
    THEN the page has a table for each, reached by a link from the field, with every field and its bounds: a
    device maker can build the nested object from the page alone."""
    from protocol.contract import nested
    from protocol.events import REGISTRY, PunchLiveness

    page = render()
    inner = nested([spec.model for spec in REGISTRY.values()])
    assert PunchLiveness in inner
    for model in inner:
        section = page.split(f"### `{model.__name__}`\n", 1)[1].split("\n### ", 1)[0]
        assert all(f"| `{field}` |" in section for field in model.model_fields), model.__name__
        assert f"[{model.__name__}](#{model.__name__.lower()})" in page
    drop = next(line for line in page.split("### `PunchLiveness`", 1)[1].splitlines() if line.startswith("| `drop`"))
    assert "≥ 0, ≤ 1" in drop
