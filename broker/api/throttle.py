"""Failed logins, counted per name, per source and per (name, source), in bounded memory.

The rules:
- Check and count are one step: an attempt is counted as a failure before its password is verified (no
  ``await`` between the check and the count) and taken back only when it succeeds, so parallel guesses
  cannot all slip past the check while the first ones are still being verified.
- A source (client address) has its own limit over every name, so spraying one password over many names, or
  locking many accounts, stops after ``source_max`` failures.
- A name's lock binds strangers only. A source that logged in as that name before ("known") has its own count
  for the name, so a stranger who locks ``wang.li`` from elsewhere does not lock wang.li out of their own
  workstation; the stranger has to come from many addresses to keep going (each limited), which is the cost.
- Memory is bounded without unlocking anybody: when a table is full, only entries whose failures have all left
  the window are dropped; a locked entry is never evicted. A stranger's attempt that would need a new entry in a
  table full of live ones is refused ("busy", counted in ``refused_full``) until the oldest entry expires: a
  flood of addresses or names must not buy untracked, unlimited guesses. A known source is not refused for a
  full source table (its own per-name count bounds it), so the people who work here still log in.
- An IPv6 source counts per /64: one host gets a whole /64, so counting single addresses would give it 2^64
  fresh limits.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


class _Window:
    """key -> the times of its last ``limit`` failures, oldest key first (by last failure)."""

    def __init__(self, limit: int, window_s: float, capacity: int) -> None:
        self.limit, self.window_s, self.capacity = limit, window_s, capacity
        self._times: OrderedDict[Hashable, list[float]] = OrderedDict()

    def _recent(self, key: Hashable, now: float) -> list[float]:
        return [t for t in self._times.get(key, []) if now - t < self.window_s]

    def locked_for(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` may try again (0: it may now)."""
        recent = self._recent(key, now)
        return 0.0 if len(recent) < self.limit else recent[-self.limit] + self.window_s - now

    def full_for(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` finds room (0: it is tracked already, or there is room now)."""
        if key in self._times:
            return 0.0
        self._make_room(now)
        if len(self._times) < self.capacity:
            return 0.0
        _, oldest = next(iter(self._times.items()))
        return max(oldest[-1] + self.window_s - now, 0.001)

    def add(self, key: Hashable, now: float) -> int:
        """Count a failure (the caller made sure of room: full_for); returns how many are now in the window."""
        times = ([*self._recent(key, now), now])[-self.limit :]
        self._times[key] = times
        self._times.move_to_end(key)
        return len(times)

    def take_back(self, key: Hashable, at: float) -> None:
        times = self._times.get(key)
        if times and at in times:
            times.remove(at)

    def clear(self, key: Hashable) -> None:
        self._times.pop(key, None)

    def _make_room(self, now: float) -> None:
        # Oldest-updated first: once the first one still has a failure in the window, so do all after it.
        while len(self._times) >= self.capacity:
            key, times = next(iter(self._times.items()))
            if times and now - times[-1] < self.window_s:
                return
            del self._times[key]

    def __len__(self) -> int:
        return len(self._times)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt that may go on to verify the password; already counted as a failure."""

    name: str
    source: str  # the client's address, as the audit log names it
    unit: str  # what the source limit counts (source_key)
    at: float
    known: bool
    locks: bool  # if it fails, the name (or this known source's count for it) is locked from now on


@dataclass(frozen=True, slots=True)
class Refused:
    # "source": this address failed too often; "name": this name is locked for this address; "busy": a failure
    # table is full of live entries and this attempt would need a new one
    why: str
    retry_after_s: int


def source_key(address: str) -> str:
    """The unit a source limit counts: an IPv4 address, an IPv6 /64 (anything else as given)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        window_s: float,
        source_max_failures: int,
        *,
        capacity: int = 100_000,
        known_days: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_name = _Window(max_failures, window_s, capacity)
        self.by_pair = _Window(max_failures, window_s, capacity)
        self.by_source = _Window(source_max_failures, window_s, capacity)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (name, source) -> last success
        self.known_capacity, self.known_s = capacity, known_days * 86_400
        self._clock = clock
        self.refused_full = 0  # strangers' attempts refused because a table was full of live entries
        self.refused: dict[str, int] = dict.fromkeys(("source", "name", "busy"), 0)  # every refusal, for /metrics

    def begin(self, name: str, address: str) -> Attempt | Refused:
        """Check and count in one step (no ``await`` in here: parallel attempts are counted one by one)."""
        now = self._clock()
        source = source_key(address)
        wait = self.by_source.locked_for(source, now)
        if wait:
            return self._refuse("source", wait)
        known = self._is_known(name, source, now)
        names = self.by_pair if known else self.by_name
        key: Hashable = (name, source) if known else name
        wait = names.locked_for(key, now)
        if wait:
            return self._refuse("name", wait)
        source_full = self.by_source.full_for(source, now)
        wait = names.full_for(key, now) or (0.0 if known else source_full)
        if wait:
            self.refused_full += 1
            return self._refuse("busy", wait)
        if not source_full:
            self.by_source.add(source, now)
        count = names.add(key, now)
        return Attempt(name, address, source, now, known, locks=count >= names.limit)

    def _refuse(self, why: str, wait_s: float) -> Refused:
        self.refused[why] += 1
        return Refused(why, int(wait_s) + 1)

    def succeeded(self, attempt: Attempt) -> None:
        pair = (attempt.name, attempt.unit)
        self.by_source.take_back(attempt.unit, attempt.at)
        self.by_pair.clear(pair)
        self.by_name.take_back(attempt.name, attempt.at)
        self._known.pop(pair, None)
        self._known[pair] = self._clock()
        while len(self._known) > self.known_capacity:  # forgetting one only makes it a stranger again
            self._known.popitem(last=False)

    def _is_known(self, name: str, source: str, now: float) -> bool:
        last = self._known.get((name, source))
        return last is not None and now - last < self.known_s
