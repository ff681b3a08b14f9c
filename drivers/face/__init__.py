"""Face recognition for attendance terminals (and the centre's enrolment).

- ``gallery``: FaceGallery (enrolled staff in memory, vectorised 1:N), encode_image (enrolment),
  load_face_recognition (the import that fails loudly instead of exiting 0)
- ``engine``: FaceConfig + FaceEngine (quality gates, threshold, confirmation, liveness, cooldown)
  and its outcomes FaceMatch / FaceReject

The camera that feeds it is ``drivers.camera``.
"""

from drivers.face.engine import REASONS, FaceConfig, FaceEngine, FaceMatch, FaceReject
from drivers.face.gallery import FaceEngineUnavailable, FaceGallery, encode_image, load_face_recognition

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
