"""The face thresholds are the site's, set at the centre: SiteConfig.face travels in each attendance terminal's
desired config (retained ``cfg``) through a real Mosquitto, published on the consumer's own session as its job
would; the in-process terminal applies it to its face settings and reports config.applied, which the consumer
stores. A bad value is refused with its field named, at the centre when the site is configured and at the terminal
when a hand-written config carries it; the terminal keeps what it ran."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from agent.agent import Agent
from agent.config import AgentConfig
from broker.attendance.face_settings import FaceSettingsSync, reconcile
from broker.commands import centre_link, set_desired_config
from broker.mosquitto.local import LocalMosquitto
from broker.sites import SiteConfig, Sites
from broker.store.schema import device_configs
from drivers.face.config import FaceConfig, LivenessLimits
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.procs import presence, wait_for
from tests.test_attendance import role, terminal_config

KEY = "qp/att-1"


async def _state(consumer: RunningConsumer, version: int) -> tuple[str, str] | None:
    c = device_configs.c
    row = (await consumer.store.fetch(sa.select(c.state, c.errors).where(c.key == KEY, c.version == version)))[:1]
    return (row[0].state, row[0].errors) if row else None


async def _answered(consumer: RunningConsumer, version: int, state: str) -> bool:
    got = await _state(consumer, version)
    return got is not None and got[0] == state


async def test_a_site_threshold_set_at_the_centre_reaches_the_terminal_which_applies_and_reports_it(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    running: Callable[[Agent | AgentConfig], Agent],
    tmp_path: Path,
) -> None:
    """GIVEN an attendance terminal running its own face settings (the defaults) and an operator's config for it
    (labels) WHEN the site's face settings change at the centre (threshold 0.45, blink_drop 0.25, challenge blink)
    and the sync job runs THEN a new desired version carries them beside the labels, the terminal runs them and
    reports config.applied, stored on that version; a second pass with nothing changed spends no version."""
    agent = running(terminal_config(mosquitto, tmp_path))
    await wait_for(lambda: _online(consumer), 20, "the terminal's birth")
    assert role(agent).face == FaceConfig(), "its own [attendance.face] until the centre's arrive"
    centre = AsyncMqtt(centre_link(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test"))
    await centre.connect()
    try:
        labels = await set_desired_config(consumer.store, centre, KEY, {"labels": {"zone": "entrance"}}, issuer="it")
    finally:
        await centre.disconnect()
    await wait_for(lambda: _answered(consumer, labels.version, "applied"), 15, "the operator's config applied")

    site = SiteConfig.model_validate(
        {"face": {"threshold": 0.45, "challenge": "blink", "limits": {"blink_drop": 0.25}}}
    )
    rx = consumer.consumer.receiver
    assert rx is not None
    job = FaceSettingsSync(consumer.store, Sites({"qp": site}), rx)
    await job.run_once(datetime.now(UTC))
    version = labels.version + 1
    await wait_for(lambda: _answered(consumer, version, "applied"), 15, "the site's face settings applied")

    face = role(agent).face
    assert (face.threshold, face.challenge, face.limits.blink_drop) == (0.45, "blink", 0.25)
    assert face.limits.window_s == LivenessLimits().window_s and face.min_face_px == FaceConfig().min_face_px
    assert agent.config.version == version and agent.config.settings.labels == {"zone": "entrance"}
    assert await reconcile(consumer.store, Sites({"qp": site}), datetime.now(UTC)) == [], "nothing changed"


async def test_a_bad_site_value_is_refused_with_its_field_named_and_the_terminal_keeps_what_it_ran(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    running: Callable[[Agent | AgentConfig], Agent],
    tmp_path: Path,
) -> None:
    """GIVEN a site's face limits with blink_drop 1.5 (a share: below 1) THEN the centre's site config does not
    load, naming face.limits.blink_drop. GIVEN the same value in a hand-written desired config (``hallfleet cfg
    set``) THEN the terminal rejects it, the stored errors name the field, and it keeps its face settings."""
    with pytest.raises(ValidationError, match=r"face\.limits\.blink_drop"):
        SiteConfig.model_validate({"face": {"limits": {"blink_drop": 1.5}}})

    agent = running(terminal_config(mosquitto, tmp_path))
    await wait_for(lambda: _online(consumer), 20, "the terminal's birth")
    centre = AsyncMqtt(centre_link(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test"))
    await centre.connect()
    try:
        bad = await set_desired_config(
            consumer.store, centre, KEY, {"face": {"limits": {"blink_drop": 1.5}, "threshold": 0.45}}, issuer="it"
        )
    finally:
        await centre.disconnect()
    await wait_for(lambda: _answered(consumer, bad.version, "rejected"), 15, "the bad config rejected")
    state = await _state(consumer, bad.version)
    assert state is not None and "face.limits.blink_drop" in state[1], state
    assert role(agent).face == FaceConfig(), "a rejected config never replaces the running one"


async def _online(consumer: RunningConsumer) -> bool:
    return await presence(consumer.store, KEY) == "online"
