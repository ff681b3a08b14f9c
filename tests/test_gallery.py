"""Sealed face galleries: what the wire and the disk hold, deltas and full updates, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.gallery import GalleryConfig, GalleryStore, Held
from protocol.gallery import (
    GalleryError,
    GalleryUpdate,
    associated_data,
    key_to_text,
    new_key,
    pack,
    seal,
    unpack,
    unseal,
)

RNG = np.random.default_rng(5)


def shots(k: int = 2) -> np.ndarray:
    return RNG.normal(0, 0.1, (k, 128))


def store(tmp_path: Path, key: bytes, device: str = "att-1") -> GalleryStore:
    key_file = tmp_path / "gallery-key"
    key_file.write_text(key_to_text(key))
    return GalleryStore(GalleryConfig(path=tmp_path / "gallery.sealed", key_file=key_file), "qp", device)


def update(
    key: bytes, version: int, base: int | None, upsert: dict[str, np.ndarray], remove: list[str] = ()
) -> GalleryUpdate:  # type: ignore[assignment]
    body = {"upsert": {s: pack(e) for s, e in upsert.items()}, "remove": list(remove)}
    return GalleryUpdate(
        version=version, base_version=base, sealed=seal(key, body, associated_data("qp", "att-1", version, base))
    )


def test_encodings_survive_packing_at_float32_precision() -> None:
    e = shots(3)
    assert np.allclose(unpack(pack(e)), e, atol=1e-6)
    with pytest.raises(GalleryError, match=r"\(k, 128\)"):
        pack(np.zeros((2, 64)))


def test_a_seal_opens_only_with_its_key_device_and_version() -> None:
    key = new_key()
    aad = associated_data("qp", "att-1", 3, 2)
    token = seal(key, {"upsert": {}, "remove": ["S1"]}, aad)
    assert unseal(key, token, aad) == {"upsert": {}, "remove": ["S1"]}
    for wrong_key, wrong_aad in [
        (new_key(), aad),
        (key, associated_data("qp", "att-2", 3, 2)),  # replayed to another terminal
        (key, associated_data("qp", "att-1", 4, 2)),  # replayed as another version
    ]:
        with pytest.raises(GalleryError, match="does not open"):
            unseal(wrong_key, token, wrong_aad)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(GalleryError):
        unseal(key, tampered, aad)


def test_full_then_delta_then_a_delta_on_the_wrong_base_is_refused(tmp_path: Path) -> None:
    key = new_key()
    s = store(tmp_path, key)
    held = s.load()
    assert held == Held(0, {})
    held, revoked = s.apply(held, update(key, 1, None, {"S1": shots(), "S2": shots()}))
    assert (held.version, sorted(held.entries), revoked) == (1, ["S1", "S2"], [])
    held, revoked = s.apply(held, update(key, 2, 1, {"S3": shots()}, ["S1"]))
    assert (held.version, sorted(held.entries), revoked) == (2, ["S2", "S3"], ["S1"])
    with pytest.raises(GalleryError, match="holds gallery version 2, the update is a delta on 1"):
        s.apply(held, update(key, 3, 1, {"S4": shots()}))
    held, _ = s.apply(held, update(key, 5, None, {"S9": shots()}))  # a full one replaces everything
    assert sorted(held.entries) == ["S9"]


def test_the_gallery_at_rest_is_ciphertext_and_reloads(tmp_path: Path) -> None:
    key = new_key()
    s = store(tmp_path, key)
    enc = {"S0001": shots()}
    s.apply(Held(0, {}), update(key, 1, None, enc))
    raw = (tmp_path / "gallery.sealed").read_bytes()
    assert b"S0001" not in raw and enc["S0001"].astype(np.float32).tobytes()[:16] not in raw
    again = s.load()
    assert again.version == 1 and np.allclose(again.entries["S0001"], enc["S0001"], atol=1e-6)
    with pytest.raises(GalleryError, match="does not open"):
        store(tmp_path, new_key()).load()  # another key: the file is useless to whoever copies it


def test_a_bad_key_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "gallery-key").write_text("not base64!")
    with pytest.raises(GalleryError, match="base64"):
        GalleryStore(GalleryConfig(path=tmp_path / "g", key_file=tmp_path / "gallery-key"), "qp", "att-1")


def test_gallery_enrol_is_retired_and_points_to_the_gated_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the old second door `hallfleet gallery enrol SITE STAFF photo...` (no consent record, no quality
    gates) WHEN run THEN it refuses with exit code 2, names `hallfleet provision staff` with its consent file,
    and opens no store: no face gets in without consent."""
    from hallfleet.cli import main

    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "never.db"}"\n')
    code = main(["gallery", "enrol", "qp", "S0001", str(tmp_path / "a.jpg"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert "hallfleet provision staff --site SITE --photos DIR --consent consent.csv" in err and "停用" in err
    assert not (tmp_path / "never.db").exists()


def test_gallery_help_does_not_list_the_retired_enrol(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN the retired `gallery enrol` WHEN `hallfleet gallery --help` is shown THEN it is in neither the usage
    line nor the rows (it still answers when run, test above), while the live commands are listed."""
    from hallfleet.cli import main

    with pytest.raises(SystemExit) as done:
        main(["gallery", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "enrol" not in out and "SUPPRESS" not in out, out
    assert all(name in out for name in ("revoke", "status", "key")), out


async def _consent(store: Any, staff_id: str, *, withdrawn: bool = False) -> None:
    import sqlalchemy as sa

    from broker.store.schema import staff_consents

    now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.insert(staff_consents).values(
                site="qp", staff_id=staff_id, purpose="face_attendance", given_at=now, recorded_at=now,
                recorded_by="wm", evidence="同意书 2026-001", withdrawn_at=now if withdrawn else None,
                withdrawn_by="wm" if withdrawn else None,
            )
        )  # fmt: skip


# (case, consent on record, enrolled?) — README: no consent, no face.
CONSENT_CASES = [
    ("no consent on record: refused", None, False),
    ("consent withdrawn: refused", "withdrawn", False),
    ("consent on record: enrolled", "given", True),
]


@pytest.mark.parametrize(("case", "consent", "enrolled"), CONSENT_CASES, ids=[c[0] for c in CONSENT_CASES])
async def test_the_store_step_itself_refuses_a_face_without_consent(
    store_url: str, case: str, consent: str | None, enrolled: bool
) -> None:
    """Issue 17 item 9, one enrolment path: the retired CLI was one door around the consent record; the store step
    every enrolment goes through (gallery.enrol / enrol_in, which `provision staff` calls) now checks it too, so
    no other caller can add a face without a consent not withdrawn. Nothing is written when it refuses."""
    import sqlalchemy as sa

    from broker import gallery
    from broker.store.db import Store
    from broker.store.schema import face_gallery, gallery_sites

    store = await Store.open(store_url)
    try:
        if consent is not None:
            await _consent(store, "S0001", withdrawn=consent == "withdrawn")
        at = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
        if enrolled:
            assert await gallery.enrol(store, "qp", "S0001", list(shots()), by="wm", at=at) == 1, case
        else:
            with pytest.raises(gallery.GalleryAdminError, match="no consent on record"):
                await gallery.enrol(store, "qp", "S0001", list(shots()), by="wm", at=at)
        faces = await store.fetch(sa.select(face_gallery.c.staff_id))
        versions = await store.fetch(sa.select(gallery_sites.c.version))
        assert ([f.staff_id for f in faces], len(versions)) == ((["S0001"], 1) if enrolled else ([], 0)), case
    finally:
        await store.close()
