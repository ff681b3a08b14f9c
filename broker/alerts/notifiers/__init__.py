"""Notifier transports for technician alerts: one file per channel type, each holding its config model
and its class. ``ChannelConfig`` picks the model by ``type``; ``build_notifier`` turns a configured
channel (its name is its key in the config table) into a ``Notifier``.

Adding a channel type: write its file, add its config to ``ChannelConfig`` and a builder to
``BUILDERS`` (tests check the two agree).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from broker.alerts.notifiers.base import DeliveryError, Message, Notifier, Publish
from broker.alerts.notifiers.dingtalk import DingtalkConfig, DingtalkNotifier
from broker.alerts.notifiers.mqtt import MqttChannelConfig, MqttNotifier
from broker.alerts.notifiers.smtp import SmtpConfig, SmtpNotifier
from broker.alerts.notifiers.webhook import WebhookConfig, WebhookNotifier
from broker.alerts.notifiers.wecom import WecomConfig, WecomNotifier

ChannelConfig = Annotated[
    WebhookConfig | SmtpConfig | WecomConfig | DingtalkConfig | MqttChannelConfig,
    Field(discriminator="type"),
]

Builder = Callable[[str, Any, Publish | None], Notifier]

BUILDERS: dict[type, Builder] = {
    WebhookConfig: lambda name, cfg, _publish: WebhookNotifier(name, cfg),
    SmtpConfig: lambda name, cfg, _publish: SmtpNotifier(name, cfg),
    WecomConfig: lambda name, cfg, _publish: WecomNotifier(name, cfg),
    DingtalkConfig: lambda name, cfg, _publish: DingtalkNotifier(name, cfg),
    MqttChannelConfig: lambda name, cfg, publish: MqttNotifier(name, cfg, publish),
}


def build_notifier(name: str, cfg: ChannelConfig, publish: Publish | None = None) -> Notifier:
    """The notifier for channel ``name``; ``publish`` is needed by the mqtt channel only."""
    builder = BUILDERS.get(type(cfg))
    if builder is None:
        raise TypeError(f"channel {name!r}: no notifier registered for {type(cfg).__name__}")
    return builder(name, cfg, publish)


__all__ = [
    "BUILDERS",
    "ChannelConfig",
    "DeliveryError",
    "DingtalkConfig",
    "Message",
    "MqttChannelConfig",
    "Notifier",
    "Publish",
    "SmtpConfig",
    "WebhookConfig",
    "WecomConfig",
    "build_notifier",
]
