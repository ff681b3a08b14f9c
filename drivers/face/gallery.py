"""The enrolled faces a terminal matches against, the encoder the centre enrols with, and the one
safe way to import face_recognition.

A gallery lives in memory only: encodings are biometric templates, which never go into events,
logs or MQTT messages (requirements §11.7); nothing here writes them anywhere. Matching is 1:N
over one stacked matrix: every enrolment shot of every staff member is a row, a row->staff index
names the owner, and a person's distance is the minimum over their shots, which is what the
argmin over all rows gives.

The argmin is taken over |m|^2/2 - m.q (the squared distance less the probe's constant |q|^2,
halved): one matrix-vector product with no temporary matrix. ``np.linalg.norm(matrix - q,
axis=1)`` allocates and walks a copy of the whole matrix per probe; at 10,000 staff x 3 shots
(30 MB) it measured 12 ms a probe against 1.4 ms (bench/face.py). The winning row's distance is
then computed exactly.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

ENCODING_DIM = 128

# face_recognition/api.py loads these four at import (the CNN detector too, although we never use it).
_MODEL_FILES = (
    "shape_predictor_68_face_landmarks.dat",
    "shape_predictor_5_face_landmarks.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
    "mmod_human_face_detector.dat",
)
_FIX = (
    "install the face engine's dependencies into this environment: "
    "pip install 'setuptools<82' face_recognition_models dlib-bin "
    "(face_recognition_models needs pkg_resources, which setuptools 82 removed)"
)


class FaceEngineUnavailable(RuntimeError):
    """face_recognition or its models cannot be loaded; ``reason`` is what failed, the message says the fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"face engine unavailable: {reason}; {_FIX}")
        self.reason = reason


def load_face_recognition() -> ModuleType:
    """Import face_recognition, failing loudly.

    When face_recognition_models cannot be imported (setuptools >= 82 has no pkg_resources, or the
    package is missing), ``import face_recognition`` prints a pip hint and calls quit(): SystemExit
    with code 0, so a terminal service would stop looking like a clean exit. We catch that (and
    dlib's RuntimeError for an unreadable model file) and say what is wrong instead.
    """
    hint = io.StringIO()
    try:
        with contextlib.redirect_stdout(hint):  # its hint names a git URL, not the actual fix
            import face_recognition
    except SystemExit:
        raise FaceEngineUnavailable(_diagnose_models()) from None
    except (ImportError, RuntimeError) as exc:
        raise FaceEngineUnavailable(f"import face_recognition failed: {exc}") from exc
    return face_recognition


def _diagnose_models() -> str:
    """Why face_recognition_models does not load, in words (called after the quit() trap fired)."""
    try:
        import face_recognition_models
    except ImportError as exc:
        return f"face_recognition_models cannot be imported ({exc})"
    folder = Path(face_recognition_models.__file__).parent / "models"
    missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
    if missing:
        return f"face_recognition_models lacks {', '.join(missing)} in {folder}"
    return "face_recognition called quit() while importing face_recognition_models"


def encode_image(image_rgb: np.ndarray, *, upsample: int = 1) -> list[np.ndarray]:
    """Every face's 128-d encoding in an RGB photo (enrolment at the centre).

    ``upsample`` 1 finds faces down to about 40 px (0: about 80 px) at four times the detection
    cost; enrolment photos are few, so the default favours finding the face. It also finds more
    that are not faces: at upsample 1 the mission patch on scikit-image's astronaut photo is one.
    Enrol a shot only when exactly one face is found, and have a person check it.
    """
    fr = load_face_recognition()
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    boxes = fr.face_locations(image, number_of_times_to_upsample=upsample, model="hog")
    return [np.asarray(e, dtype=np.float64) for e in fr.face_encodings(image, boxes)]


class FaceGallery:
    """Enrolled staff: staff_id -> (k, 128) encodings, k >= 1 shots. Immutable once built; a new
    version is a new gallery (FaceEngine.set_gallery swaps the reference)."""

    def __init__(self, entries: Mapping[str, np.ndarray], *, version: int = 0) -> None:
        self.version = version
        rows: list[np.ndarray] = []
        owners: list[int] = []
        self._ids: list[str] = []
        for staff_id, shots in entries.items():
            matrix = _shots(staff_id, shots)
            owners.extend([len(self._ids)] * len(matrix))
            self._ids.append(staff_id)
            rows.append(matrix)
        self._matrix = np.vstack(rows) if rows else np.empty((0, ENCODING_DIM))
        self._half_sq_norms = 0.5 * np.einsum("ij,ij->i", self._matrix, self._matrix)
        self._owner = np.asarray(owners, dtype=np.intp)

    def match(self, encoding: np.ndarray) -> tuple[str | None, float]:
        """The nearest staff member and their distance (min over their shots); (None, inf) if empty."""
        if not self._ids:
            return None, math.inf
        probe = np.asarray(encoding, dtype=np.float64).reshape(ENCODING_DIM)
        row = int(np.argmin(self._half_sq_norms - self._matrix @ probe))
        return self._ids[self._owner[row]], float(np.linalg.norm(self._matrix[row] - probe))

    def __len__(self) -> int:
        return len(self._ids)

    def staff(self) -> set[str]:
        return set(self._ids)

    @property
    def shots(self) -> int:
        """Enrolment shots in all (rows of the matrix)."""
        return len(self._matrix)


def _shots(staff_id: str, shots: np.ndarray) -> np.ndarray:
    matrix = np.asarray(shots, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] != ENCODING_DIM:
        raise ValueError(f"staff {staff_id}: encodings must be (k, {ENCODING_DIM}) with k >= 1, not {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"staff {staff_id}: encodings contain NaN or infinity")
    return matrix
