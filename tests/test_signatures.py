"""Device signatures end to end (issue 24): keys made, rotated and revoked by provisioning, pushed to the centre's
store, checked by a real consumer on a real Mosquitto, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import dead_letters, device_keys, events
from hallfleet.cli import main
from protocol import topics
from protocol.envelope import Envelope
from protocol.events import encode_event
from protocol.signing import Signer, as_replayed
from provisioning import centre
from provisioning.operations import DeviceRequest, Provisioner
from runtime.settings import MqttConfig
from tests.support.events import punch
from tests.support.mqtt import publish
from tests.support.procs import wait_for

T_PROVISION = datetime(2026, 1, 5, 9, tzinfo=UTC)
T_ROTATE = datetime(2026, 3, 1, 9, tzinfo=UTC)
T_REVOKE = datetime(2026, 6, 1, 9, tzinfo=UTC)
TOPIC = topics.event("qp", "att-1", "attendance.punch")


class Clock:
    def __init__(self) -> None:
        self.at = T_PROVISION

    def __call__(self) -> datetime:
        return self.at


async def _push(store: Store, prov: Provisioner) -> None:
    async with store.engine.begin() as conn:
        await centre._put_keys(conn, centre.signing_keys(prov.registry.load().accounts))


@pytest.fixture
async def started(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[tuple[Consumer, Store]]:
    store = await Store.open(store_url)
    cfg = ConsumerConfig(
        instance="test",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        store=StoreConfig(url=store_url),
        ingest=IngestConfig(sweep_s=0.1, republish_s=1.0, keys_refresh_s=0.1),
    )
    c = Consumer(cfg, store)
    task = asyncio.create_task(c.run())
    await asyncio.wait_for(c.ready.wait(), 10)
    try:
        yield c, store
    finally:
        c.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


def _signed(signer: Signer, seq: int, at: datetime) -> tuple[Envelope, bytes]:
    env = punch(seq).model_copy(update={"ts": at})
    return env, signer.sign(encode_event(env))


async def _dead(store: Store) -> list[tuple[str, str]]:
    rows = await store.fetch(sa.select(dead_letters).order_by(dead_letters.c.id))
    return [(r.reason, r.detail.split(":", 1)[0]) for r in rows]


async def _stored(store: Store, env: Envelope) -> sa.Row | None:
    rows = await store.fetch(sa.select(events.c.sig_key, events.c.sig).where(events.c.id == env.id))
    return rows[0] if rows else None


async def test_signed_events_are_stored_with_their_signature_and_bad_ones_dead_lettered_with_the_reason(
    mosquitto: LocalMosquitto, started: tuple[Consumer, Store], tmp_path: Path
) -> None:
    """GIVEN a terminal provisioned with a key pushed to the centre WHEN it sends signed, tampered, foreign-key and
    unsigned punches, then rotates (replaying old events), then is revoked THEN each lands where the rules say."""
    consumer, store = started
    clock = Clock()
    prov = Provisioner(tmp_path / "prov", now=clock)
    req = DeviceRequest("qp", "att-1", "attendance", "password", "zhang.wei", "centre.example")
    _, secrets = prov.provision_device(req)
    assert secrets.sign_key is not None
    first = Signer.from_text(secrets.sign_key)
    _, stranger_secrets = Provisioner(tmp_path / "other", now=clock).provision_device(req)
    assert stranger_secrets.sign_key is not None
    stranger = Signer.from_text(stranger_secrets.sign_key)
    await _push(store, prov)

    good, good_raw = _signed(first, 1, T_PROVISION)
    _, tampered = _signed(first, 2, T_PROVISION)
    tampered = tampered.replace(b'"staff_id":"S0002"', b'"staff_id":"S0003"')
    _, foreign = _signed(stranger, 3, T_PROVISION)
    unsigned = encode_event(punch(4))
    await wait_for(lambda: bool(consumer.signatures._keyed), 5, "the key refreshed into the consumer")
    publish(mosquitto.port, [(TOPIC, p, False) for p in (good_raw, tampered, foreign, unsigned)])
    await wait_for(lambda: _stored(store, good), 15, "the signed punch")
    row = await _stored(store, good)
    assert row is not None and (row.sig_key, row.sig) == (first.kid, good_raw.split(b'"s":"')[1][:88].decode())
    await wait_for(lambda: _n(store, 3), 15, "three dead letters")
    assert await _dead(store) == [
        ("bad_signature", "mismatch"),
        ("bad_signature", "unknown_key"),
        ("bad_signature", "unsigned"),
    ]

    # Rotation: the old key still vouches for events signed before it (an outbox replayed after an outage).
    clock.at = T_ROTATE
    _, rotated = prov.rotate("qp.att-1", "zhang.wei")
    assert rotated.sign_key is not None
    second = Signer.from_text(rotated.sign_key)
    await _push(store, prov)
    await wait_for(lambda: second.kid in consumer.signatures._keys, 5, "the rotated key refreshed")
    old, old_raw = _signed(first, 5, datetime(2026, 2, 27, 18, tzinfo=UTC))
    _, late_old = _signed(first, 6, datetime(2026, 3, 2, tzinfo=UTC))
    new, new_raw = _signed(second, 7, datetime(2026, 3, 2, tzinfo=UTC))
    publish(mosquitto.port, [(TOPIC, as_replayed(old_raw), False), (TOPIC, late_old, False), (TOPIC, new_raw, False)])
    await wait_for(lambda: _stored(store, new), 15, "the new key's punch")
    await wait_for(lambda: _stored(store, old), 15, "the replayed punch signed before the rotation")
    await wait_for(lambda: _n(store, 4), 15, "four dead letters")
    assert (await _dead(store))[-1] == ("bad_signature", "retired")

    # Revocation: nothing signed from then on counts, what was signed before still does.
    clock.at = T_REVOKE
    prov.revoke("qp.att-1", "zhang.wei", "stolen", compromised=True)
    await _push(store, prov)
    keys = await store.fetch(sa.select(device_keys).where(device_keys.c.revoked_at.is_not(None)))
    assert {k.key_id for k in keys} == {first.kid, second.kid}
    await wait_for(lambda: consumer.signatures._keys[second.kid].revoked_at is not None, 5, "the revocation")
    before, before_raw = _signed(second, 8, datetime(2026, 5, 30, tzinfo=UTC))
    _, after = _signed(second, 9, datetime(2026, 6, 2, tzinfo=UTC))
    publish(mosquitto.port, [(TOPIC, after, False), (TOPIC, before_raw, False)])
    await wait_for(lambda: _stored(store, before), 15, "the punch signed before the revocation")
    await wait_for(lambda: _n(store, 5), 15, "five dead letters")
    assert (await _dead(store))[-1] == ("bad_signature", "revoked")


async def _n(store: Store, n: int) -> bool:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(dead_letters))) >= n


def test_a_device_whose_keys_the_centre_has_not_been_told_of_is_held_to_the_unsigned_rule(tmp_path: Path) -> None:
    """GIVEN a terminal provisioned (it signs) but no `provision sync` yet WHEN its punch arrives THEN it is stored as
    an unsigned one would be (not dead-lettered), its signature not kept; once any key of that device is known, an
    unknown key is refused, and with require_signatures = all it is refused at once."""
    from broker.ingest.signatures import DeviceSignKey, SignatureError, Signatures

    req = DeviceRequest("qp", "att-1", "attendance", "password", "zhang.wei", "centre.example")
    _, secrets = Provisioner(tmp_path / "prov", now=lambda: T_PROVISION).provision_device(req)
    assert secrets.sign_key is not None
    signer = Signer.from_text(secrets.sign_key)
    _, raw = _signed(signer, 1, T_PROVISION)
    signed = Envelope.model_validate_json(raw)

    assert Signatures(policy="registered").check(signed, raw) is None
    with pytest.raises(SignatureError, match="unknown_key"):
        Signatures(policy="all").check(signed, raw)
    _, other = Provisioner(tmp_path / "other", now=lambda: T_PROVISION).provision_device(req)
    assert other.sign_key is not None
    known = Signer.from_text(other.sign_key)
    keyed = Signatures(policy="registered")
    keyed.replace([DeviceSignKey(known.kid, "qp", "att-1", known.key.public_key(), T_PROVISION, None, None)])
    with pytest.raises(SignatureError, match="unknown_key"):
        keyed.check(signed, raw)


async def _verify_events(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")
    argv = ["audit", "verify", "--month", "2026-01", "--chain", "events", "--config", str(config)]
    rc = await asyncio.to_thread(main, argv)
    return rc, capsys.readouterr().out


async def _tamper(store: Store, env: Envelope, **values: object) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(events.update().where(events.c.id == env.id).values(**values))


async def test_a_stored_punch_altered_afterwards_is_named_by_audit_verify(
    mosquitto: LocalMosquitto,
    started: tuple[Consumer, Store],
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN signed punches stored by the consumer (and one from a device without a key) WHEN a stored punch's
    staff id, time or device is changed in the database, with or without the kept bytes THEN `hallfleet audit
    verify --chain events` exits 1 naming that event and what changed; untouched, it says how many it re-verified
    and how many it could not (issue 24: altering a stored punch is detected by a command a reviewer can run)."""
    consumer, store = started
    prov = Provisioner(tmp_path / "prov", now=lambda: T_PROVISION)
    _, secrets = prov.provision_device(DeviceRequest("qp", "att-1", "attendance", "password", "z", "centre.example"))
    assert secrets.sign_key is not None
    signer = Signer.from_text(secrets.sign_key)
    await _push(store, prov)
    await wait_for(lambda: bool(consumer.signatures._keyed), 5, "the key refreshed into the consumer")
    signed = [_signed(signer, seq, datetime(2026, 1, 6, 8, seq, tzinfo=UTC)) for seq in (1, 2, 3)]
    keyless = punch(1, device="att-2").model_copy(update={"ts": datetime(2026, 1, 6, 8, 30, tzinfo=UTC)})
    outside = _signed(signer, 4, datetime(2026, 2, 2, 8, tzinfo=UTC))  # another month: not this check's
    messages = [(TOPIC, raw, False) for _, raw in (*signed, outside)]
    messages.append((topics.event("qp", "att-2", "attendance.punch"), encode_event(keyless), False))
    publish(mosquitto.port, messages)
    for env in (*(e for e, _ in signed), keyless, outside[0]):
        await wait_for(lambda env=env: _stored(store, env), 15, f"punch {env.seq} of {env.device}")

    rc, out = await _verify_events(store_url, tmp_path, capsys)
    assert rc == 0 and "完好 / intact" in out, out
    assert "3 条已按设备签名复核" in out and "1 条无签名" in out and "0 条签名字节未留存" in out, out

    first, second, third = (e for e, _ in signed)
    stored = {r.id: r for r in await store.fetch(sa.select(events.c.id, events.c.data, events.c.signed))}
    await _tamper(store, first, data=stored[first.id].data.replace('"S0001"', '"S0039"'))
    await _tamper(store, second, ts=datetime(2026, 1, 6, 7, 59, tzinfo=UTC))
    both = {c: getattr(stored[third.id], c).replace('"S0003"', '"S0039"') for c in ("data", "signed")}
    await _tamper(store, third, **both)
    rc, out = await _verify_events(store_url, tmp_path, capsys)
    assert rc == 1 and "已被改动 / TAMPERED" in out, out
    lines = out.splitlines()
    assert any(first.id in line and "data differs from what the device signed" in line for line in lines), out
    assert any(second.id in line and "ts differs" in line for line in lines), out
    assert any(third.id in line and "signature does not hold" in line for line in lines), out
    assert "3 条已按设备签名复核" in out, out
