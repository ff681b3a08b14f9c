"""Per-site policy of the proxy-clocking checks (broker/attendance/proxy_clocking.py): light, so the site config can
hold it without loading the store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Section


class ProxyClockingPolicy(Section):
    enabled: bool = Field(default=True, description="Look for proxy-clocking patterns in this hall's punches")
    chain_count: int = Field(
        default=3,
        ge=2,
        le=50,
        description="chain: this many different staff punched in a row at one terminal, each soon after the last",
    )
    chain_gap_s: float = Field(
        default=6.0,
        gt=0,
        le=600,
        description="chain: ... each within this of the one before. A face punch takes a person stepping up, a "
        "blink (0.4-1.5 s) and stepping away: a queue of real people leaves more than this between punches",
    )
    travel_s: float = Field(
        default=120.0,
        ge=0,
        le=86400,
        description="too_fast: the same person punched at two terminals less than this apart (0: off)",
    )
    same_place: list[list[str]] = Field(
        default_factory=list,
        description="too_fast: groups of terminals that stand side by side (device ids); moving between them is "
        "never too fast",
    )
    fallback_s: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="after_refusal: a fingerprint or QR punch this soon after the face terminal refused that "
        "person as not live (0: off)",
    )
    on_leave: bool = Field(default=True, description="on_leave: flag punches inside the person's approved leave")
    confirmed: Literal["not_counted", "noted"] = Field(
        default="not_counted",
        description="A punch a reviewer confirmed as proxy clocking (属实代打卡): not_counted, the day is judged "
        "without it (非正常考勤 unless evidence is filed within the correction deadline); noted: it still "
        "counts and is only listed",
    )
    lookback_days: int = Field(
        default=2, ge=1, le=31, description="Local days re-read each tick (punches a terminal sent late included)"
    )
