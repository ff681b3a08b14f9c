"""The attendance terminal's camera and face engine, on real photos (fetched from the package registry
by tests/support/faces.py, never committed) and real video files read by OpenCV (no camera here).

Pinned: who matches and who does not at the default threshold (the distances are printed: run with
-s), the quality gates, confirmation, cooldown, the camera's file and stream behaviour, and the import
that must fail loudly instead of exiting 0. Liveness: tests/test_liveness.py.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera import Camera, CameraConfig, CameraError
from drivers.face import (
    FaceConfig,
    FaceEngine,
    FaceEngineUnavailable,
    FaceGallery,
    FaceMatch,
    FaceReject,
    encode_image,
    load_face_recognition,
)
from drivers.face.engine import Outcome
from tests.support.faces import FRAME_SIZE, PHOTOS, framed, photo, side_by_side, write_video
from tests.support.liveness_media import VIDEO_FPS, genuine

STRANGERS = ("grace_hopper", "astronaut")


@pytest.fixture(scope="session")
def encodings() -> dict[str, list[np.ndarray]]:
    """Every face of every photo, encoded once per session (about 4 s: the photos are large)."""
    return {name: encode_image(np.asarray(photo(name))) for name in PHOTOS}


@pytest.fixture(scope="session")
def gallery(encodings: dict[str, list[np.ndarray]]) -> FaceGallery:
    """obama enrolled with two shots, biden with one."""
    shots = {name: _only_face(encodings, name) for name in ("obama", "obama2", "biden")}
    return FaceGallery({"obama": np.stack([shots["obama"], shots["obama2"]]), "biden": shots["biden"][None]})


def _only_face(encodings: dict[str, list[np.ndarray]], name: str) -> np.ndarray:
    assert len(encodings[name]) == 1, f"{name}: expected one face, found {len(encodings[name])}"
    return encodings[name][0]


def engine(gallery: FaceGallery, **cfg: object) -> FaceEngine:
    return FaceEngine(FaceConfig.model_validate(cfg), gallery)


def run(
    face_engine: FaceEngine, frames: Sequence[np.ndarray], *, start: float = 0.0, step: float = 0.2
) -> list[Outcome]:
    """Frames at 5 per second, as the camera delivers them by default."""
    return [face_engine.process(frame, start + i * step) for i, frame in enumerate(frames)]


def reasons(outcomes: Sequence[Outcome]) -> list[str | None]:
    return [
        o.reason if isinstance(o, FaceReject) else o.staff_id if isinstance(o, FaceMatch) else None for o in outcomes
    ]


EMPTY = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 128, np.uint8)


# -- identity: the threshold on real photos -------------------------------------------------------


def test_the_threshold_separates_the_same_person_from_strangers(
    encodings: dict[str, list[np.ndarray]], gallery: FaceGallery
) -> None:
    """GIVEN obama (2 shots) and biden enrolled WHEN the other photos are matched THEN obama3 is obama
    within the threshold and every face in the strangers' photos is farther than it (with margin)."""
    threshold = FaceConfig().threshold
    obama3 = gallery.match(_only_face(encodings, "obama3"))
    biden = gallery.match(_only_face(encodings, "biden"))
    strangers = {name: [gallery.match(e) for e in encodings[name]] for name in STRANGERS}
    _print_distances(encodings)
    assert obama3[0] == "obama" and obama3[1] < threshold - 0.05, obama3
    assert biden[0] == "biden" and biden[1] < threshold, biden
    for name, found in strangers.items():
        assert found, f"no face found in {name}"
        assert all(d > threshold + 0.15 for _, d in found), (name, found)


def _print_distances(encodings: dict[str, list[np.ndarray]]) -> None:
    names = list(PHOTOS)
    first = {n: encodings[n][0] for n in names}  # astronaut's second "face" is the mission patch
    print("\nface distances (dlib 128-d, Euclidean):")
    print(" " * 13 + "".join(f"{n:>13}" for n in names))
    for a in names:
        print(f"{a:>13}" + "".join(f"{np.linalg.norm(first[a] - first[b]):13.3f}" for b in names))


def test_enrolled_people_are_punched_and_strangers_are_unknown_through_the_engine(gallery: FaceGallery) -> None:
    """GIVEN 640x480 frames of each photo WHEN two frames each go through the engine THEN obama3 and
    biden are punched with a distance under the threshold, the strangers are "unknown"."""
    for name, expected in [("obama3", "obama"), ("biden", "biden")]:
        outcomes = run(engine(gallery, liveness="off"), [framed(name)] * 2)
        assert outcomes[0] is None
        match = outcomes[1]
        assert isinstance(match, FaceMatch) and match.staff_id == expected, (name, outcomes)
        assert match.distance < FaceConfig().threshold and match.frames == 2
        print(f"{name} -> {match.staff_id} at {match.distance:.3f} through the engine")
    for name in STRANGERS:
        outcomes = run(engine(gallery, liveness="off"), [framed(name)] * 2)
        assert reasons(outcomes) == [None, "unknown"], (name, outcomes)


def test_vectorised_match_equals_a_naive_loop_over_1000_identities() -> None:
    """GIVEN 1,000 identities with 1-3 random shots WHEN probes near some shots and random probes are
    matched THEN the stacked-matrix argmin names the same staff and distance as a Python loop."""
    rng = np.random.default_rng(7)
    entries = {f"s{i:04d}": rng.normal(0, 0.09, (int(rng.integers(1, 4)), 128)) for i in range(1000)}
    gallery = FaceGallery(entries)
    near = [entries[f"s{i:04d}"][-1] + rng.normal(0, 0.01, 128) for i in rng.integers(0, 1000, 50)]
    probes = near + list(rng.normal(0, 0.09, (50, 128)))
    for probe in probes:
        staff_id, distance = gallery.match(probe)
        best = min(
            ((sid, min(math.dist(s, probe) for s in shots)) for sid, shots in entries.items()), key=lambda x: x[1]
        )
        assert (staff_id, distance) == (best[0], pytest.approx(best[1], rel=1e-12))
    assert len(gallery) == 1000 and len(gallery.staff()) == 1000


def test_an_empty_gallery_matches_no_one_and_bad_shapes_are_refused() -> None:
    assert FaceGallery({}).match(np.zeros(128)) == (None, math.inf)
    with pytest.raises(ValueError, match=r"\(k, 128\)"):
        FaceGallery({"x": np.zeros((2, 127))})
    with pytest.raises(ValueError, match="NaN"):
        FaceGallery({"x": np.full(128, np.nan)})
    one = FaceGallery({"x": np.ones(128)}, version=3)
    assert one.version == 3 and one.match(np.ones(128)) == ("x", 0.0)


# -- quality gates ---------------------------------------------------------------------------------


def test_two_faces_side_by_side_are_multiple_faces(gallery: FaceGallery) -> None:
    outcome = engine(gallery).process(side_by_side("obama3", "biden"), 0.0)
    assert isinstance(outcome, FaceReject) and outcome.reason == "multiple_faces", outcome
    assert outcome.detail.startswith("2 faces")


def test_a_small_face_in_the_background_does_not_block_a_punch(gallery: FaceGallery) -> None:
    """GIVEN a 200-px face and, in a corner, a 75-px one (someone passing behind) WHEN min_face_px is
    120 THEN only the big face counts and is punched."""
    frame = framed("obama3")
    frame[:150, :150] = framed("biden", 75, (150, 150))
    outcomes = run(engine(gallery, detect_scale=1.0, min_face_px=120, liveness="off"), [frame] * 2)
    assert reasons(outcomes) == [None, "obama"], outcomes


def test_a_tiny_face_is_too_small(gallery: FaceGallery) -> None:
    """GIVEN a face about 70 px high WHEN detecting at full scale THEN too_small, with the size. At the
    default detect_scale 0.5 the detector does not see it at all: an empty view, not a reject."""
    tiny = framed("obama3", face_px=60)
    outcome = engine(gallery, detect_scale=1.0).process(tiny, 0.0)
    assert isinstance(outcome, FaceReject) and outcome.reason == "too_small", outcome
    assert "80 needed" in outcome.detail
    assert engine(gallery).process(tiny, 0.0) is None


def test_a_blurred_face_is_blurry_and_the_sharp_one_passes(gallery: FaceGallery) -> None:
    sharp = framed("obama3")
    outcome = engine(gallery).process(cv2.GaussianBlur(sharp, (0, 0), 6), 0.0)
    assert isinstance(outcome, FaceReject) and outcome.reason == "blurry", outcome
    assert outcome.detail.startswith("sharpness ")
    [match] = run(engine(gallery, liveness="off", confirm_frames=1), [sharp])
    assert isinstance(match, FaceMatch) and (match.staff_id, match.frames) == ("obama", 1), match


# -- confirmation, cooldown, strangers --------------------------------------------------------------


def test_a_punch_needs_confirm_frames_consecutive_matches(gallery: FaceGallery) -> None:
    """GIVEN confirm_frames 3 THEN the third consecutive match punches; an empty frame in between starts
    the count again."""
    face = framed("obama3")
    assert reasons(run(engine(gallery, confirm_frames=3, liveness="off"), [face] * 3)) == [None, None, "obama"]
    broken = [face, face, EMPTY, face, face, face]
    assert reasons(run(engine(gallery, confirm_frames=3, liveness="off"), broken)) == [None] * 5 + ["obama"]


def test_cooldown_blocks_a_second_punch_then_allows_it_later(gallery: FaceGallery) -> None:
    """GIVEN a punch at t=0.2 and cooldown 30 s WHEN the person comes back at t=10 THEN one cooldown
    reject (not one per frame); WHEN they come back at t=31 THEN a second punch. Someone who stays in
    view is punched once."""
    face_engine = engine(gallery, liveness="off", cooldown_s=30)
    face = framed("obama3")
    first = run(face_engine, [face] * 4 + [EMPTY])
    again = run(face_engine, [face] * 3 + [EMPTY], start=10.0)
    later = run(face_engine, [face] * 2, start=31.0)
    assert reasons(first) == [None, "obama", None, None, None]
    assert reasons(again) == [None, "cooldown", None, None]
    assert reasons(later) == [None, "obama"]


def test_a_stranger_in_view_is_unknown_once_per_cooldown(gallery: FaceGallery) -> None:
    """GIVEN a stranger standing at the terminal for 40 s THEN "unknown" at t=0.2 and again after 30 s,
    not on every frame (the engine's state is per streak, so frames 1 s apart are as good as 0.2 s)."""
    face = framed("grace_hopper")
    outcomes = run(engine(gallery, cooldown_s=30), [face] * 41, step=1.0)
    assert [i for i, r in enumerate(reasons(outcomes)) if r] == [1, 31]
    assert all(r in (None, "unknown") for r in reasons(outcomes))


def test_a_new_gallery_applies_from_the_next_frame_and_restarts_the_streak(
    gallery: FaceGallery, encodings: dict[str, list[np.ndarray]]
) -> None:
    """GIVEN a streak of obama under way WHEN a new gallery version arrives THEN the next frame uses it:
    without obama it is a stranger; with obama re-enrolled the count starts again (no carry-over)."""
    face = framed("obama3")
    biden = _only_face(encodings, "biden")
    face_engine = engine(gallery, liveness="off")
    assert face_engine.process(face, 0.0) is None
    face_engine.set_gallery(FaceGallery({"biden": biden}, version=2))
    assert reasons(run(face_engine, [face] * 2, start=0.2)) == [None, "unknown"]
    assert face_engine.gallery.version == 2
    face_engine = engine(gallery, liveness="off")
    assert face_engine.process(face, 0.0) is None
    face_engine.set_gallery(FaceGallery({"obama": _only_face(encodings, "obama"), "biden": biden}, version=3))
    assert reasons(run(face_engine, [face] * 2, start=0.2)) == [None, "obama"]


# -- liveness: tests/test_liveness.py ---------------------------------------------------------------


# -- camera ----------------------------------------------------------------------------------------


async def collect(camera: Camera, limit: int = 100, timeout_s: float = 20.0) -> list[np.ndarray]:
    frames: list[np.ndarray] = []

    async def read() -> None:
        async for frame in camera.frames():
            frames.append(frame)
            if len(frames) >= limit:
                return

    await asyncio.wait_for(read(), timeout_s)
    return frames


def numbered(count: int, size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """Plain frames whose brightness is 10 x their number, so a test can tell which it got."""
    return [np.full((size[1], size[0], 3), 10 * i, np.uint8) for i in range(count)]


def numbers(frames: Sequence[np.ndarray]) -> list[int]:
    return [round(float(f.mean()) / 10) for f in frames]


async def test_a_video_file_through_the_camera_and_engine_gives_one_punch(gallery: FaceGallery, tmp_path: Path) -> None:
    """GIVEN a video of someone who blinks once (warped along the landmarks: tests/support/liveness_media.py) and
    stays in view WHEN Camera.frames() feeds the engine at 5 fps (in a thread, as the role does) THEN exactly
    one FaceMatch, with the blink in its evidence."""
    video = write_video(tmp_path / "desk.avi", genuine("obama3", 2.0, blinks=(0.3,)), fps=VIDEO_FPS)
    face_engine = engine(gallery)
    outcomes = []
    async for frame in Camera(CameraConfig(source=str(video), fps=5)).frames():
        outcomes.append(await asyncio.to_thread(face_engine.process, frame, time.monotonic()))
    assert len(outcomes) == 10
    [match] = [o for o in outcomes if o is not None]
    assert isinstance(match, FaceMatch) and match.staff_id == "obama", outcomes
    assert match.distance < FaceConfig().threshold
    assert match.liveness is not None and match.liveness.blink_s is not None, match


async def test_a_file_is_read_at_fps_on_its_timeline_and_ends(tmp_path: Path) -> None:
    """GIVEN a 10 fps file of 10 frames WHEN read at 5 fps THEN every other frame, in about a second of
    real time, and frames() ends with the file."""
    video = write_video(tmp_path / "n.avi", numbered(10), fps=10)
    started = time.monotonic()
    frames = await collect(Camera(CameraConfig(source=str(video), fps=5)))
    assert numbers(frames) == [0, 2, 4, 6, 8]
    assert 0.7 < time.monotonic() - started < 3.0


async def test_loop_replays_a_file_and_large_frames_are_scaled_down_to_fit(tmp_path: Path) -> None:
    video = write_video(tmp_path / "hd.avi", numbered(4, (1280, 720)), fps=50)
    frames = await collect(Camera(CameraConfig(source=str(video), fps=50, loop=True)), limit=10)
    assert numbers(frames) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert frames[0].shape == (360, 640, 3)


async def test_an_image_sequence_is_a_source_too(tmp_path: Path) -> None:
    for i, frame in enumerate(numbered(3)):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), frame)
    frames = await collect(Camera(CameraConfig(source=str(tmp_path / "f%03d.png"), fps=50)))
    assert numbers(frames) == [0, 1, 2]


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("/nonexistent/desk.avi", "no such file"),
        ("http://127.0.0.1:1/desk.avi", "check the URL"),
        (7, "/dev/video7"),
        (__file__, "cannot decode"),
    ],
)
async def test_a_source_that_cannot_be_opened_is_a_camera_error_that_says_what_to_check(
    source: int | str, says: str
) -> None:
    with pytest.raises(CameraError, match=says) as caught:
        await collect(Camera(CameraConfig(source=source)))
    assert caught.value.source == source


def test_digits_in_source_mean_a_device() -> None:
    assert CameraConfig.model_validate({"source": "0"}).source == 0
    assert CameraConfig(source="rtsp://cam/1").live and CameraConfig(source=0).live
    assert not CameraConfig(source="desk.avi").live


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    gets = 0

    def do_GET(self) -> None:
        type(self).gets += 1
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, type[_CountingHandler]]]:
    """An HTTP server for tmp_path: a stream source that "drops" at the end of each file."""
    handler = type("Handler", (_CountingHandler,), {"gets": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


async def test_a_dropped_stream_is_reopened_with_backoff(
    tmp_path: Path, http_files: tuple[str, type[_CountingHandler]]
) -> None:
    """GIVEN an HTTP stream that ends after 5 frames WHEN read as a live source THEN the camera reopens it
    (counted in drops) and frames keep coming, more than one stream holds."""
    base, handler = http_files
    write_video(tmp_path / "cam.avi", numbered(5), fps=25)
    camera = Camera(CameraConfig(source=f"{base}/cam.avi", fps=20, reopen_initial_s=0.05, reopen_max_s=0.2))
    frames = await collect(camera, limit=12)
    assert len(frames) == 12
    assert camera.drops >= 1 and handler.gets >= 2
    assert set(numbers(frames)) <= set(range(5))


# -- the import guard ------------------------------------------------------------------------------


def _forget_face_recognition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next ``import face_recognition`` run its module code again (undone after the test)."""
    load_face_recognition()  # the real modules are in sys.modules, so monkeypatch restores them
    for name in [m for m in sys.modules if m == "face_recognition" or m.startswith("face_recognition.")]:
        monkeypatch.delitem(sys.modules, name)


def test_missing_models_package_raises_face_engine_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN face_recognition_models cannot be imported WHEN loading THEN FaceEngineUnavailable naming
    it and the fix, not face_recognition's quit() (SystemExit 0)."""
    _forget_face_recognition(monkeypatch)
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(FaceEngineUnavailable, match=r"face_recognition_models cannot be imported.*setuptools<82"):
        load_face_recognition()


def test_an_unreadable_model_file_raises_face_engine_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import face_recognition_models

    _forget_face_recognition(monkeypatch)
    monkeypatch.setattr(face_recognition_models, "pose_predictor_model_location", lambda: "/nonexistent/68.dat")
    with pytest.raises(FaceEngineUnavailable, match="import face_recognition failed"):
        load_face_recognition()


def test_without_pkg_resources_the_plain_import_exits_0_and_ours_fails_loudly() -> None:
    """GIVEN setuptools >= 82 (no pkg_resources), in a fresh interpreter: ``import face_recognition``
    exits with status 0 (the trap: a service would look like it stopped cleanly), while
    load_face_recognition raises FaceEngineUnavailable."""
    block = "import sys; sys.modules['pkg_resources'] = None\n"
    plain = subprocess.run(
        [sys.executable, "-c", block + "import face_recognition\nprint('imported')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0 and "imported" not in plain.stdout and "face_recognition_models" in plain.stdout
    ours = subprocess.run(
        [sys.executable, "-c", block + "from drivers.face import load_face_recognition\nload_face_recognition()"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert ours.returncode == 1, ours
    assert "FaceEngineUnavailable" in ours.stderr and "pkg_resources" in ours.stderr and "setuptools<82" in ours.stderr
