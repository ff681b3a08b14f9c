"""Face recognition for attendance terminals (and the centre's enrolment).

- ``gallery``: FaceGallery (enrolled staff in memory, vectorised 1:N), encode_image (enrolment),
  load_face_recognition (the import that fails loudly instead of exiting 0)
- ``config``: FaceConfig, LivenessLimits and the outcomes FaceMatch / FaceReject / FaceChallenge with their
  LivenessEvidence (light: no OpenCV or dlib)
- ``engine``: FaceEngine (quality gates, threshold, confirmation, liveness, cooldown)
- ``liveness``: Sitting (one attempt: the blink, the steadiness checks, the head turn)

The camera that feeds it is ``drivers.camera``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562), so that importing drivers.face.config does not load OpenCV and dlib.
_WHERE = {
    "REASONS": "config",
    "FaceChallenge": "config",
    "FaceConfig": "config",
    "LivenessEvidence": "config",
    "LivenessLimits": "config",
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
