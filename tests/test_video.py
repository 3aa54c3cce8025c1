"""Video sampling, change detection, tracking, and video indexing and search with real models."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

import hostile_media
from facesearch.cli import EXIT_PARTIAL, main
from search_engine.errors import ImageError
from search_engine.pipeline import EmbeddedFace
from search_engine.tracking import FaceTracker
from search_engine.types import Box, Detection
from search_engine.video import ChangeDetector, VideoInfo, probe, read_frame, sample_frames
from search_engine.video_indexing import segment_end, segments

from .conftest import FPS, STEP

# --- reading


def test_probe_and_sampling_times(scene):
    info = probe(scene)
    assert (info.width, info.height, info.fps) == (640, 360, FPS)
    assert info.duration == pytest.approx(12.0)
    times = [f.timestamp for f in sample_frames(scene, 2.0)]
    assert times == pytest.approx([i * STEP for i in range(24)])
    later = [f.timestamp for f in sample_frames(scene, 2.0, start=4.0, end=6.0)]
    assert later == pytest.approx([4.0, 4.5, 5.0, 5.5])


def test_read_frame_is_that_frame(scene):
    assert read_frame(scene, 0).std() < 3  # plain grey: no face yet
    with_face = read_frame(scene, 30)  # 3 s: the astronaut is on
    assert np.abs(with_face[80:280, 40:240].astype(int) - 128).mean() > 20
    with pytest.raises(ImageError, match="has no frame 500"):
        read_frame(scene, 500)


def test_unreadable_videos_say_why(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    with pytest.raises(ImageError, match="cannot be decoded as a video") as caught:
        probe(fake)
    assert caught.value.path == str(fake)
    with pytest.raises(ImageError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_segments_cover_the_video():
    info = VideoInfo("v.mp4", 640, 360, 25.0, 7500, 300.0)
    assert segments(info, 120) == [(0, 120), (120, 240), (240, None)]
    assert segments(VideoInfo("v.mp4", 1, 1, 25.0, 25, 1.0), 120) == [(0, None)]
    for length in (1.0, 119.9, 120.0, 300.0, 3600.5):
        for start, end in segments(VideoInfo("v.mp4", 1, 1, 25.0, int(length * 25), length), 120):
            assert segment_end(VideoInfo("v.mp4", 1, 1, 25.0, int(length * 25), length), 120, start) == end


def test_a_stated_length_the_file_cannot_hold_is_replaced_by_the_frames_it_has(tmp_path, astronaut):
    """A damaged Matroska header claimed 136 years for a 3 kB clip: probe counts the frames instead,
    so the video is not planned as millions of segments."""
    frames = [np.ascontiguousarray(np.roll(astronaut[::8, ::8], 4 * i, axis=1)) for i in range(10)]
    clip = hostile_media.encode_video(frames, "mkv")
    at = clip.index(b"\x44\x89\x88")  # Segment Info's Duration: an 8-byte float, in milliseconds
    path = tmp_path / "long.mkv"
    path.write_bytes(clip[: at + 3] + struct.pack(">d", 1e15) + clip[at + 11 :])
    assert probe(path).frames == 10 and probe(path).duration == pytest.approx(1.0)


# --- change detection


def test_change_detector_sees_a_face_arrive_but_not_noise():
    rng = np.random.default_rng(0)
    still = np.full((360, 640, 3), 120, np.uint8)
    detector = ChangeDetector()
    assert detector.changed(still, 0.0)
    noisy = np.clip(still + rng.integers(-3, 4, still.shape), 0, 255).astype(np.uint8)
    assert not detector.changed(noisy, 0.5)
    person = still.copy()
    person[100:180, 500:560] = 230  # a small bright region: a fraction of one grid cell's worth of pixels
    assert detector.changed(person, 1.0)
    assert not detector.changed(person, 2.5)
    assert detector.changed(person, 3.1)  # max_hold (2 s) since the last accepted frame


# --- tracking


def embedded(x: float, vector: np.ndarray) -> EmbeddedFace:
    box = Box(x, 50.0, x + 100.0, 150.0)
    landmarks = ((x + 30, 80.0), (x + 70, 80.0), (x + 50, 100.0), (x + 35, 125.0), (x + 65, 125.0))
    return EmbeddedFace(Detection(box, 0.99, landmarks), vector)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_tracker_links_by_place_and_face():
    a, b = unit(1), unit(2)
    tracker = FaceTracker(link_similarity=0.9, max_gap=1.0)
    tracker.observe(0, 0.0, [embedded(0, a)])
    tracker.observe(5, 0.5, [embedded(10, a)])  # moved a little: same track
    tracker.hold(1.0)  # unchanged frame: still on screen
    tracker.observe(15, 1.5, [embedded(12, b)])  # same place, another face (a cut): new track
    tracker.observe(50, 5.0, [embedded(12, b)])  # back after a long gap: new track
    tracks = tracker.finish()
    assert [(t.start, t.end) for t in tracks] == [(0.0, 1.0), (1.5, 1.5), (5.0, 5.0)]
    assert [len(t.sightings) for t in tracks] == [2, 1, 1]


def test_hold_does_not_revive_a_track_missing_from_the_last_frame():
    a, b = unit(1), unit(2)
    tracker = FaceTracker(link_similarity=0.9, max_gap=1.0)
    tracker.observe(0, 0.0, [embedded(0, a), embedded(300, b)])
    tracker.observe(5, 0.5, [embedded(0, a)])
    tracker.hold(1.0)
    first, second = tracker.finish()
    assert (first.end, second.end) == (1.0, 0.0)


# --- indexing and search with real models


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, scene, astronaut):
    data = tmp_path_factory.mktemp("data")
    folder = scene.parent
    cv2.imwrite(str(folder / "astronaut.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    return data, folder


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_video_tracks_have_the_right_times(indexed, capsys, monkeypatch):
    data, folder = indexed
    monkeypatch.setenv("FACESEARCH_DATA_DIR", str(data))
    code, out = run(capsys, "index", str(folder), "--embedder", "dlib", "--workers", "1", "--json", "--quiet")
    summary = json.loads(out)
    assert code == EXIT_PARTIAL
    assert summary["failed"] == 1 and summary["failures"][0]["source"].endswith("broken.mp4")
    assert "cannot be decoded as a video" in summary["failures"][0]["error"]
    assert summary["indexed"] == 2  # the photo and the clip

    code, out = run(
        capsys, "search", str(folder / "astronaut.jpg"), "--embedder", "dlib", "--media-type", "video", "--json"
    )
    hits = json.loads(out)["hits"]
    assert code == 0 and hits
    best = hits[0]
    assert best["video"] == "scene.mp4" and best["media_type"] == "video"
    assert best["start"] == pytest.approx(2.0, abs=STEP) and best["end"] == pytest.approx(7.0, abs=STEP)
    other = [h for h in hits if h["start"] >= 4.5]
    assert other and other[0]["start"] == pytest.approx(5.0, abs=STEP)
    assert other[0]["end"] == pytest.approx(11.0, abs=STEP)
    assert best["score"] > other[0]["score"]


def test_rerun_indexes_nothing_twice(indexed, capsys, monkeypatch):
    data, folder = indexed
    monkeypatch.setenv("FACESEARCH_DATA_DIR", str(data))
    run(capsys, "index", str(folder), "--embedder", "dlib", "--workers", "1", "--quiet")
    before = json.loads(run(capsys, "stats", "--embedder", "dlib", "--json")[1])["faces"]
    code, out = run(capsys, "index", str(folder), "--embedder", "dlib", "--workers", "1", "--json", "--quiet")
    summary = json.loads(out)
    assert code == EXIT_PARTIAL and summary["skipped_unchanged"] == 2 and summary["indexed"] == 0
    assert json.loads(run(capsys, "stats", "--embedder", "dlib", "--json")[1])["faces"] == before


def test_search_with_a_clip_and_group_by_video(indexed, capsys, monkeypatch, scene):
    data, folder = indexed
    monkeypatch.setenv("FACESEARCH_DATA_DIR", str(data))
    run(capsys, "index", str(folder), "--embedder", "dlib", "--workers", "1", "--quiet")
    code, out = run(
        capsys, "search", str(scene), "--embedder", "dlib", "--face", "0", "--media-type", "photo", "--json"
    )
    result = json.loads(out)
    assert code == 0
    assert len(result["query_faces"]) == 2 and result["query_faces"][0]["start"] == pytest.approx(2.0, abs=STEP)
    assert result["hits"][0]["source"].endswith("astronaut.jpg")

    code, out = run(capsys, "search", str(folder / "astronaut.jpg"), "--embedder", "dlib", "--by-video", "--json")
    videos = json.loads(out)["videos"]
    assert [v["video"] for v in videos] == ["scene.mp4"]
    assert len(videos[0]["moments"]) == 2 and videos[0]["moments"][0]["start"] == pytest.approx(2.0, abs=STEP)
