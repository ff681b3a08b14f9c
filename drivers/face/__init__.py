"""Face recognition for attendance terminals (and the centre's enrolment).

- ``gallery``: FaceGallery (enrolled staff in memory, vectorised 1:N), encode_image (enrolment),
  load_face_recognition (the import that fails loudly instead of exiting 0)
- ``config``: FaceConfig and the outcomes FaceMatch / FaceReject (light: no OpenCV or dlib)
- ``engine``: FaceEngine (quality gates, threshold, confirmation, liveness, cooldown)

The camera that feeds it is ``drivers.camera``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562), so that importing drivers.face.config does not load OpenCV and dlib.
_WHERE = {
    "REASONS": "config",
    "FaceConfig": "config",
    "FaceMatch": "config",
    "FaceReject": "config",
    "FaceEngine": "engine",
    "FaceEngineUnavailable": "gallery",
    "FaceGallery": "gallery",
    "encode_image": "gallery",
    "load_face_recognition": "gallery",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"drivers.face.{_WHERE[name]}"), name)


__all__ = [
    "REASONS",
    "FaceConfig",
    "FaceEngine",
    "FaceEngineUnavailable",
    "FaceGallery",
    "FaceMatch",
    "FaceReject",
    "encode_image",
    "load_face_recognition",
]
