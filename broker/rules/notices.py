"""What a rule wants people to know. The alerting layer (broker/alerts) routes a notice to recipients by
site, device class, kind, step and severity, renders it in their language and delivers it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "major", "minor", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "info")


@dataclass(frozen=True, slots=True)
class Notice:
    ref: str = field(metadata={"doc": "incident:{id} or task:{id}: what acknowledging or closing refers to"})
    step: str  # opened, warning, breach, dispatch, escalation1, resolved, restock, clean_due, inspection_due ...
    site: str
    device: str  # "*" for the whole site
    device_class: str
    kind: str  # the incident kind (offline, kiosk_down, ...) or the task kind (restock, clean, inspection)
    severity: Severity
    summary_zh: str  # one line saying what is wrong, in Chinese
    summary_en: str  # the same in English
    facts: dict[str, Any] = field(default_factory=dict)  # JSON-able details for machine channels
