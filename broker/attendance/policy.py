"""A site's punch policy: which punches count, when a sign-in is late, and the monthly aggregation rule.

Defaults are Qingpu's rules where a seed gives a number (requirements-from-regulations.md §1, §11.3) and the
product's decision where none does (§10 G2-G4, G13, G16-G17); the worked examples in ``examples/`` cite a seed line
for every value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from config.base import Section

Method = Literal["face", "fingerprint", "qr", "card"]
Counted = Literal["late", "early", "missing"]
_QP_METHODS: list[Method] = ["face", "fingerprint", "qr"]  # QP 000:30
_LATE_EARLY: list[Counted] = ["late", "early"]  # WZ 002:10


class MonthlyRule(Section):
    """WZ 002:10: 当月迟到或早退累计4次以上按旷工半天处理. The seed does not say what 8 occurrences mean (G3)."""

    count: int = Field(default=4, ge=1, description="Occurrences in a calendar month that trigger the rule")
    inclusive: bool = Field(default=True, description="以上 includes the number itself: 4 occurrences trigger it")
    mode: Literal["once", "every"] = Field(
        default="once",
        description="once: at most one penalty a month; every: one penalty for each full threshold (8 -> 2)",
    )
    absent_days: float = Field(default=0.5, gt=0, le=31, description="Absence (旷工) each penalty adds, in days")
    counts: list[Counted] = Field(
        default_factory=lambda: _LATE_EARLY.copy(),
        min_length=1,
        description="What is summed: late (迟到), early (早退), missing (未签到/未签退); excused days never count",
    )

    @field_validator("counts")
    @classmethod
    def _unique(cls, value: list[Counted]) -> list[Counted]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a kind twice")
        return value

    def threshold(self) -> int:
        return self.count if self.inclusive else self.count + 1

    def penalty(self, occurrences: int) -> float:
        """Absence days the month's ``occurrences`` add."""
        times = occurrences // self.threshold()
        if self.mode == "once":
            times = min(times, 1)
        return times * self.absent_days


class AbPolicy(Section):
    """AB posts: a window is covered while one of its A/B holders is at the post (QP 000:107, WZ 002:181,
    SJ 001:947); Ningshan also lets a person on leave go only once the substitute has arrived (NS 003:88)."""

    min_gap_min: int = Field(
        default=15,
        ge=1,
        le=240,
        description="Minutes of opening time with no A/B holder at the post that make a coverage gap (no seed gives"
        " one; 15 like the pause alert's default, G9): shorter overlaps of two late arrivals are not reported",
    )
    handover: Literal["notify", "substitute_first"] = Field(
        default="notify",
        description="notify: a gap is reported to window management (原则上AB岗责任人不能同时离岗, QP 000:107;"
        " 窗口负责人应安排顶岗, WZ 002:181); substitute_first: also, a person whose leave of handover_leave_days or"
        " more began before another holder of the window arrived left the post: 旷工 (顶岗人员到岗后,请假人员方可"
        "离开工作岗位,否则视为脱岗或旷工, NS 003:88)",
    )
    handover_leave_days: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Leave from this many days up needs the substitute on site first (凡请假半天(含)以上, NS 003:88)",
    )


class PunchPolicy(Section):
    enabled: bool = Field(
        default=True, description="Judge attendance at this site (off for halls with no attendance rule, G17)"
    )
    methods: list[Method] = Field(
        default_factory=lambda: _QP_METHODS.copy(),
        min_length=1,
        description="Punch methods that count; a punch by another method is ignored and noted",
    )
    punches_per_day: Literal[2, 4] = Field(
        default=2,
        description="2: in before the first session starts, out after the last ends; 4: also out and in around"
        " each break between sessions (lunch)",
    )
    grace_min: int = Field(default=0, ge=0, le=120, description="Minutes of tolerance before late/early (G2: none)")
    in_window_min: int | None = Field(
        default=None,
        ge=0,
        le=720,
        description="A sign-in counts from this long before the first session; None: from the start of the calendar"
        " day, since the seeds set only the latest sign-in (上午8:30前签到, QP 000:30)",
    )
    out_window_min: int | None = Field(
        default=None,
        ge=0,
        le=720,
        description="A sign-out counts until this long after the last session; None: until the end of the calendar"
        " day, since the seeds set only the earliest sign-out (下午5:00后签退, QP 000:30; WZ 002:403)",
    )
    minute_rounding: Literal["minute", "second"] = Field(
        default="minute",
        description="How a punch meets 「8:30前」/「5:00后」 (QP 000:30): minute: in whole minutes as the terminal"
        " shows them (08:30:59 is on time, 16:59:59 a minute early); second: any second past 08:30:00 is a minute"
        " late, any second before 17:00:00 a minute early",
    )
    absent_after_min: int | None = Field(
        default=None, ge=1, description="A sign-in this many minutes late is absence (旷工); None: only late"
    )
    authoritative: Literal["device", "centre"] = Field(
        default="device",
        description="Whose time decides: the terminal's clock when synchronised (NS 003:88, G16), or the centre's"
        " receive time",
    )
    correction_working_days: int = Field(
        default=2,
        ge=0,
        le=30,
        description="Working days after a day in which proof, leave and other exceptions may still be filed;"
        " then the verdict is frozen (QP 000:34, 000:40, 000:43)",
    )
    monthly: MonthlyRule | None = Field(default=None, description="Monthly late/early aggregation (WZ 002:10)")
    ab: AbPolicy = Field(default_factory=AbPolicy, description="AB posts (AB岗): coverage and handover")
    duty_counts: bool = Field(
        default=False,
        description="Weekend/holiday duty is judged like a working day (QP 000:33) instead of left out of"
        " attendance (SJ 001:1039)",
    )
    fault_reach_min: int = Field(
        default=60,
        ge=0,
        le=240,
        description="A terminal fault excuses a missing sign-in if it overlaps the time from this long before the"
        " session starts to its middle, a missing sign-out from the middle to this long after it ends (SJ 001:1040)",
    )

    @field_validator("methods")
    @classmethod
    def _unique(cls, value: list[Method]) -> list[Method]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a method twice")
        return value
