"""A site's 好差评 policy: which levels are negative, the follow-up deadlines, the pause alert and the proxy-rating
heuristics.

The seeds give the targets but few numbers (requirements-from-regulations.md §3, §10 G8/G9, §11.3): SJ 001:896
asks a 100 % reply rate for real-name negative ratings and 100 % rectification of objective ones without a time
limit, so the reply deadline borrows WZ's 2 working days for complaints (002:307, 002:407); the rectification
deadline, the pause limit (G9) and every proxy heuristic are the product's own defaults, set per site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from config.base import Section

if TYPE_CHECKING:  # broker.sites will import this module for SiteConfig.ratings
    from broker.sites import SiteConfig

LEVELS = (1, 2, 3, 4, 5)
TOP_LEVEL = 5


class RatingPolicy(Section):
    enabled: bool = Field(default=True, description="Follow up ratings, flag proxy patterns and watch pauses here")
    negative_levels: list[int] = Field(
        default_factory=lambda: [1, 2],
        min_length=1,
        description="Levels that are a negative rating (差评): 1 非常不满意, 2 不满意 (G8: the seeds name no scale)",
    )
    reply_working_days: int = Field(
        default=2,
        ge=0,
        le=30,
        description="A real-name negative rating is answered by the close of this working day after it arrived"
        " (SJ 001:896 sets only the 100 % rate; WZ's complaint reply limit 002:307 is the default)",
    )
    rectify_working_days: int = Field(
        default=10,
        ge=0,
        le=60,
        description="An objective negative rating (客观差评) is rectified by the close of this working day after it"
        " arrived (SJ 001:896 sets only the 100 % rate; no seed gives a time: product default)",
    )
    pause_alert_min: float = Field(
        default=15,
        gt=0,
        le=480,
        description="Minutes of opening time a pad may show 暂停服务 (QP 000:99) before window management hears of"
        " it, when no B post of the window is at work (G9: no seed limits it; product default)",
    )
    burst_window_s: float = Field(
        default=60, gt=0, le=3600, description="Proxy heuristic: the span in which ratings on one pad are counted"
    )
    burst_count: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Proxy heuristic: more than this many ratings on one pad within burst_window_s is a burst",
    )
    min_human_delay_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Proxy heuristic: a key pressed sooner than this after the service ended is faster than a person",
    )
    late_rating_s: float = Field(
        default=300,
        ge=0,
        le=3600,
        description="Proxy heuristic: an idle pad's rating without a service, this soon after the last service"
        " ended and the only one since, is that service's late rating (the pad's prompt timed out), not a flag",
    )
    staff_key_window_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Proxy heuristic: a rating this soon after a staff key on the same pad (SJ 001:1033)",
    )

    def context_s(self) -> float:
        """How far around a rating the proxy heuristics look at the pad's other ratings."""
        return max(self.burst_window_s, self.late_rating_s)

    @field_validator("negative_levels")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v not in LEVELS]
        if bad:
            raise ValueError(f"{bad} are not rating levels (1 非常不满意 .. 5 非常满意)")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a level twice")
        if TOP_LEVEL in value:
            raise ValueError("5 (非常满意) cannot be a negative level")
        return sorted(value)


def policy_of(cfg: SiteConfig) -> RatingPolicy:
    # SiteConfig gets its ``ratings`` section from the integrator; until then every site has the defaults.
    policy = getattr(cfg, "ratings", None)
    return policy if isinstance(policy, RatingPolicy) else RatingPolicy()
