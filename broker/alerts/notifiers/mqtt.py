"""Alerts on the fleet's own broker, for hall dashboards and big screens: the webhook's JSON, published
at QoS 1 (not retained: a dashboard that connects later must not show an old alert as new).

The notifier holds no connection of its own; it is handed the centre's ``publish`` (for instance
``lambda t, p: client.publish_confirmed(t, p)``), which returns once the broker has PUBACKed.
"""

from __future__ import annotations

import asyncio
import string
from typing import Literal

from pydantic import Field, field_validator

from broker.alerts.notifiers.base import DeliveryError, Message, Publish, payload, to_json
from config.base import Section
from protocol.topics import TopicError, check_segment

PLACEHOLDERS = frozenset({"site", "severity"})


class MqttChannelConfig(Section):
    type: Literal["mqtt"] = Field(default="mqtt", description="Publish alerts on the fleet's MQTT broker")
    topic: str = Field(
        default="hall/v1/{site}/alerts",
        description="Topic template; {site} and {severity} are filled in per alert. No wildcards",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="The broker must confirm within this")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or value.startswith("$"):
            raise ValueError("must be a topic name, not empty and not starting with '$'")
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"bad template: {exc}") from None
        for literal, name, spec, conversion in parts:
            if "+" in literal or "#" in literal:
                raise ValueError("must not contain the wildcards '+' or '#': a message is published to one topic")
            if name is not None and (name not in PLACEHOLDERS or spec or conversion):
                raise ValueError(f"unknown placeholder {{{name}}}: use {{site}} or {{severity}}")
        return value


class MqttNotifier:
    def __init__(self, name: str, cfg: MqttChannelConfig, publish: Publish | None) -> None:
        self.name = name
        self.cfg = cfg
        self._publish = publish

    def topic(self, msg: Message) -> str:
        try:
            site = check_segment(msg.site, "site")
            severity = check_segment(msg.severity, "severity")
        except TopicError as exc:
            raise DeliveryError(self.name, f"cannot build a topic: {exc}", retryable=False) from None
        return self.cfg.topic.format(site=site, severity=severity)

    async def send(self, msg: Message, address: str | None = None) -> None:
        """Publish the JSON form; ``address`` is ignored."""
        topic = self.topic(msg)
        if self._publish is None:
            raise DeliveryError(self.name, f"no MQTT connection to publish {topic} on (the broker link is not up yet)")
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                await self._publish(topic, to_json(payload(msg)))
        except TimeoutError:
            limit = self.cfg.timeout_s
            raise DeliveryError(self.name, f"the broker did not confirm {topic} within {limit} s") from None
        except Exception as exc:
            # ``publish`` is the caller's: MqttError from runtime.transport, or whatever its link raises.
            raise DeliveryError(self.name, f"publish to {topic} failed: {exc}; check the broker link") from exc

    async def aclose(self) -> None:
        """Nothing to release: the connection belongs to whoever passed ``publish``."""
