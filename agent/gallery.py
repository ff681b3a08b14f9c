"""The terminal's face gallery: applied from sealed updates, kept sealed at rest, open only in memory.

The file holds one sealed body (protocol/gallery.py) under the terminal's gallery key, bound to this
device and its version, and is replaced atomically (write, fsync, rename), so a power cut leaves the
old gallery or the new one, never half of each. Anyone who copies the SD card gets ciphertext.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from config.base import Section, read_secret
from protocol.gallery import (
    GalleryError,
    GalleryUpdate,
    associated_data,
    key_from_text,
    pack,
    seal,
    unpack,
    unseal,
)

if TYPE_CHECKING:  # the gallery's arrays are numpy's, loaded with the face engine only
    import numpy as np

AT_REST = -1  # the "base version" of the at-rest seal: it can never be confused with an update's


class GalleryConfig(Section):
    path: Path = Field(default=Path("/var/lib/hallfleet/gallery.sealed"), description="The sealed gallery file")
    key_file: Path = Field(
        default=Path("gallery-key"),
        description="32-byte AES key in base64, shared with the centre; relative: $CREDENTIALS_DIRECTORY",
    )


@dataclass(frozen=True, slots=True)
class Held:
    version: int
    entries: dict[str, np.ndarray]  # staff_id -> (k, 128)


class GalleryStore:
    def __init__(self, cfg: GalleryConfig, site: str, device: str) -> None:
        self.cfg = cfg
        self.site = site
        self.device = device
        self._key = key_from_text(read_secret(cfg.key_file))

    def load(self) -> Held:
        """What the terminal holds; an empty gallery (version 0) when it never got one. A file that does
        not open raises GalleryError: the key changed or the file was tampered with."""
        try:
            token = self.cfg.path.read_text()
        except FileNotFoundError:
            return Held(0, {})
        head, _, sealed = token.partition("\n")
        version = int(head)
        body = unseal(self._key, sealed, associated_data(self.site, self.device, version, AT_REST))
        return Held(version, {staff: unpack(enc) for staff, enc in body["upsert"].items()})

    def apply(self, held: Held, update: GalleryUpdate) -> tuple[Held, list[str]]:
        """The gallery after ``update`` (saved before it is returned) and the staff it revokes."""
        if update.base_version is not None and update.base_version != held.version:
            raise GalleryError(
                f"this terminal holds gallery version {held.version}, the update is a delta on {update.base_version}:"
                " send a full gallery"
            )
        aad = associated_data(self.site, self.device, update.version, update.base_version)
        body = unseal(self._key, update.sealed, aad)
        entries = {} if update.base_version is None else dict(held.entries)
        removed = _list(body, "remove")
        for staff in removed:
            entries.pop(staff, None)
        upsert = body.get("upsert", {})
        if not isinstance(upsert, dict):
            raise GalleryError("upsert must map staff ids to encodings")
        for staff, enc in upsert.items():
            entries[str(staff)] = unpack(enc)
        new = Held(update.version, entries)
        self.save(new)
        return new, removed

    def save(self, held: Held) -> None:
        body = {"upsert": {staff: pack(enc) for staff, enc in held.entries.items()}}
        sealed = seal(self._key, body, associated_data(self.site, self.device, held.version, AT_REST))
        path = self.cfg.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{held.version}\n{sealed}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # the rename itself survives a power cut once the dir is synced
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise GalleryError(f"{name} must be a list of staff ids")
    return [str(v) for v in value]
