"""A site's queue policy: which class each service's waits are judged by, and the limits of the classes.

QP 000:368: 「现场预约等候落实"10,30,60"要求,即一般等候时长不超过10分钟,复杂事项不超过30分钟,特殊情形不得超过60分钟」.
The seed fixes the three limits; which matter is 一般, 复杂 or 特殊 is the hall's to say, so each service's class
is site configuration (a service not listed is 一般, the strictest: an unconfigured hall is judged by the rule's
own default, never let off). "不超过" includes the limit: a wait of exactly 10 minutes keeps the rule.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from config.base import Section
from protocol.queueing import SERVICE_PATTERN

WaitClass = Literal["general", "complex", "special"]
CLASS_ZH: dict[WaitClass, str] = {"general": "一般", "complex": "复杂", "special": "特殊"}
SEED = "QP 000:368"
SEED_LIMITS_MIN: dict[WaitClass, float] = {"general": 10.0, "complex": 30.0, "special": 60.0}


class ServiceConfig(Section):
    name: str = Field(default="", max_length=64, description="What the hall calls it, e.g. 社保综合 (for reports)")
    wait_class: WaitClass = Field(
        default="general",
        description="Which limit of QP 000:368 its waits keep: general (一般, 10 min), complex (复杂事项, 30)"
        " or special (特殊情形, 60)",
    )
    windows: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Windows that call it, besides those seen calling it today (the queue system's assignment)",
    )


class QueuePolicy(Section):
    enabled: bool = Field(default=True, description="Fold ticket steps, alert long waits and report them here")
    limits_min: dict[WaitClass, float] = Field(
        default_factory=lambda: dict(SEED_LIMITS_MIN),
        description="Minutes a ticket may wait per class: QP 000:368 「10,30,60」 (一般 10, 复杂事项 30, 特殊情形 60)",
    )
    services: dict[str, ServiceConfig] = Field(
        default_factory=dict, description="Service code (as the queue system names it) -> its name, class, windows"
    )
    unattended_after_min: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="A window with tickets waiting whose pad shows 暂停服务, or whose A and B posts are both away, is"
        " told to window management after this long, or at once when a ticket is past its limit (no seed: product"
        " default)",
    )

    @model_validator(mode="after")
    def _complete(self) -> QueuePolicy:
        missing = {"general", "complex", "special"} - set(self.limits_min)
        if missing:
            raise ValueError(f"limits_min lacks {sorted(missing)}: each class of QP 000:368 needs its limit")
        if any(not 0 < v <= 480 for v in self.limits_min.values()):
            raise ValueError("each limit is above 0 and at most 480 minutes")
        bad = [code for code in self.services if not re.fullmatch(SERVICE_PATTERN, code)]
        if bad:
            raise ValueError(f"{bad} are not service codes (letters, digits, _ and -, at most 16)")
        return self

    def service(self, code: str) -> ServiceConfig:
        return self.services.get(code) or ServiceConfig()

    def limit_min(self, service: str) -> float:
        return self.limits_min[self.service(service).wait_class]


def queue_policy_of(cfg: object) -> QueuePolicy:
    policy = getattr(cfg, "queueing", None)
    return policy if isinstance(policy, QueuePolicy) else QueuePolicy()
