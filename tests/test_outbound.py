"""What the centre sends devices: a command's broker copy never outlives the command (broker/outbound.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.outbound import command_ttl_s, send_commands
from broker.store.keys import DeviceKey
from protocol.commands import Command
from protocol.ids import uuid7

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def command(left_s: float) -> Command:
    return Command(
        id=uuid7(),
        name="diagnose",
        args={},
        issuer="it",
        issued_at=NOW - timedelta(seconds=5),
        expires_at=NOW + timedelta(seconds=left_s),
    )


class Recorder:
    """A link that takes every publish and remembers its expiry."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> None:
        self.sent.append((topic, expiry_s))

    def send(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> bool:
        raise AssertionError("commands go QoS 1")


def test_the_broker_copy_expires_no_later_than_the_command() -> None:
    """GIVEN what is left of a command's life THEN the broker keeps it the whole seconds left, rounded down: a copy
    rounded up would reach a device after the centre has recorded the command as expired."""
    assert [command_ttl_s(command(s), NOW) for s in (600, 2.9, 1.0, 0.99, 0, -3)] == [600, 2, 1, 0, 0, 0]


async def test_a_command_with_less_than_a_second_left_is_not_sent() -> None:
    link = Recorder()
    sent = await send_commands(link, [(DeviceKey("qp", "a"), command(0.5)), (DeviceKey("qp", "b"), command(30.5))], NOW)
    assert sent == 1
    assert link.sent == [("hall/v1/qp/b/cmd", 30)]

