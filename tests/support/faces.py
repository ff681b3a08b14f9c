"""Real face photos for the face engine's tests and bench, fetched from the package registry at test time.

No image is committed: each photo ships inside a registry package, which ``pip download`` fetches
once into a cache (``$HALLFLEET_TESTDATA``, default ``~/.cache/hallfleet-testdata``):

- face_recognition 1.3.0's sdist: tests/test_images/ obama.jpg, obama2.jpg, obama3.jpg, biden.jpg
- matplotlib's wheel: mpl-data/sample_data/grace_hopper.jpg
- scikit-image's wheel: skimage/data/astronaut.png

A failed download raises (the test errors with pip's reason): a face test that skips without its
photos proves nothing (tests/conftest.py). Also here: framing a photo as a 640x480 camera frame,
camera noise, two faces side by side, and short video files for the camera. Blinks and attacks on
liveness: tests/support/liveness_media.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from drivers.face.gallery import load_face_recognition

FRAME_SIZE = (640, 480)  # (width, height), what CameraConfig delivers by default
DOWNLOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class _Package:
    requirement: str
    pip_args: tuple[str, ...]
    members: dict[str, str]  # photo file name -> path inside the archive (after its top folder for an sdist)


_PACKAGES = (
    _Package(
        "face-recognition==1.3.0",
        ("--no-binary", ":all:"),
        {n: f"tests/test_images/{n}" for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")},
    ),
    _Package(
        "matplotlib",
        ("--only-binary", ":all:"),
        {"grace_hopper.jpg": "matplotlib/mpl-data/sample_data/grace_hopper.jpg"},
    ),
    _Package("scikit-image", ("--only-binary", ":all:"), {"astronaut.png": "skimage/data/astronaut.png"}),
)
PHOTOS = {Path(n).stem: n for p in _PACKAGES for n in p.members}  # "obama" -> "obama.jpg", ...


def cache_dir() -> Path:
    return Path(os.environ.get("HALLFLEET_TESTDATA") or Path.home() / ".cache" / "hallfleet-testdata")


def photo_path(name: str) -> Path:
    """The photo's file in the cache, downloading its package first if needed."""
    file_name = PHOTOS[name]
    path = cache_dir() / file_name
    if not path.is_file():
        _fetch(next(p for p in _PACKAGES if file_name in p.members))
    return path


def _fetch(package: _Package) -> None:
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input"]
        cmd += [*package.pip_args, "-d", tmp, package.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cannot fetch test photos: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        archive = next(Path(tmp).iterdir())
        for file_name, member in package.members.items():
            staged = Path(tmp) / file_name
            staged.write_bytes(_read_member(archive, member))
            staged.replace(target / file_name)  # atomic: a half-written photo is never cached


def _read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            extracted = tar.extractfile(f"{top}/{member}")
            if extracted is None:
                raise RuntimeError(f"{archive.name} has no {member}")
            return extracted.read()
    with zipfile.ZipFile(archive) as wheel:
        return wheel.read(member)


@functools.cache
def _photo(name: str) -> np.ndarray:
    array = np.asarray(Image.open(photo_path(name)).convert("RGB"))
    array.flags.writeable = False
    return array


def photo(name: str) -> np.ndarray:
    """The named photo as an RGB array (read-only, cached): obama, obama2, obama3, biden, grace_hopper, astronaut."""
    return _photo(name)


@functools.cache
def face_box(name: str) -> tuple[int, int, int, int]:
    """(top, right, bottom, left) of the photo's face (the biggest one)."""
    boxes = load_face_recognition().face_locations(np.ascontiguousarray(photo(name)), number_of_times_to_upsample=0)
    if not boxes:
        raise RuntimeError(f"no face found in {name}")
    return max(boxes, key=lambda b: b[2] - b[0])


def framed(name: str, face_px: int = 200, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A BGR camera frame of ``size`` with the photo's face ``face_px`` high in the middle (grey around)."""
    top, right, bottom, left = face_box(name)
    scale = face_px / (bottom - top)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(np.asarray(photo(name)), None, fx=scale, fy=scale, interpolation=interpolation)
    width, height = size
    x0 = round((left + right) / 2 * scale) - width // 2
    y0 = round((top + bottom) / 2 * scale) - height // 2
    frame = np.full((height, width, 3), 128, np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + width, image.shape[1]), min(y0 + height, image.shape[0])
    frame[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def side_by_side(left: str, right: str, face_px: int = 180) -> np.ndarray:
    """Two people in one 640x480 frame."""
    half = (FRAME_SIZE[0] // 2, FRAME_SIZE[1])
    return np.hstack([framed(left, face_px, half), framed(right, face_px, half)])


def camera_noise(frame_bgr: np.ndarray, rng: np.random.Generator, sigma: float = 5.0, quality: int = 70) -> np.ndarray:
    """Sensor noise and the camera's JPEG compression: no two frames of a still scene are equal."""
    noisy = np.clip(frame_bgr.astype(np.float32) + rng.normal(0, sigma, frame_bgr.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError("OpenCV cannot round-trip a JPEG")
    return np.asarray(decoded)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """A Motion-JPEG .avi of BGR frames (all the size of the first), as a camera would record them."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path
