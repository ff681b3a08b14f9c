"""A flapping sensor cannot flood, and the last value is never lost."""

from __future__ import annotations

from agent.roles.debounce import Debouncer


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_first_value_goes_out_at_once_and_repeats_are_silent() -> None:
    clock = Clock()
    d: Debouncer[str] = Debouncer(30, clock)
    assert d.offer("paper", "ok") == "ok"
    clock.t = 100
    assert d.offer("paper", "ok") is None


def test_flapping_within_the_window_yields_one_trailing_event_with_the_latest_value() -> None:
    clock = Clock()
    d: Debouncer[str] = Debouncer(30, clock)
    assert d.offer("paper", "ok") == "ok"
    for i, v in enumerate(["low", "ok", "low", "ok", "low"]):
        clock.t = 1 + i
        assert d.offer("paper", v) is None
    assert d.due() == []
    clock.t = 30
    assert d.due() == [("paper", "low")]
    assert d.due() == []
    assert d.suppressed == 3  # low, low, low were held; the flaps back to "ok" cleared them


def test_a_flap_that_returns_to_the_published_value_sends_nothing() -> None:
    clock = Clock()
    d: Debouncer[str] = Debouncer(30, clock)
    d.offer("cover", "closed")
    clock.t = 5
    d.offer("cover", "open")
    clock.t = 6
    d.offer("cover", "closed")
    clock.t = 40
    assert d.due() == []


def test_keys_are_independent() -> None:
    clock = Clock()
    d: Debouncer[int] = Debouncer(10, clock)
    assert d.offer("a", 1) == 1
    assert d.offer("b", 1) == 1
    clock.t = 1
    assert d.offer("a", 2) is None
    clock.t = 10
    assert d.due() == [("a", 2)]
