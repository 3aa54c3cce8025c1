"""End to end through the ``facesearch`` CLI on the embedded store, with real models."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facesearch.cli import EXIT_ERROR, EXIT_PARTIAL, EXIT_USAGE, build_parser, main, settings_from
from hostile_media import png_declaring


def save(array: np.ndarray, path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def variant(image: np.ndarray, i: int) -> np.ndarray:
    """A different photo of the same face: shifted, scaled, mirrored, lighter or darker."""
    h, w = image.shape[:2]
    scale = 0.7 + 0.05 * (i % 7)
    out = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    out = out[(i % 3) * 4 :, (i % 4) * 4 :]
    if i % 2:
        out = out[:, ::-1]
    return np.ascontiguousarray(cv2.convertScaleAbs(out, alpha=0.8 + 0.04 * (i % 10), beta=-10 + 3 * (i % 8)))


def people_folder(root: Path, astronaut: np.ndarray, cameraman: np.ndarray, photos: int) -> Path:
    """``root`` holding ``Eileen_Collins/`` and ``Cameraman/``, ``photos`` variants of each face
    (``0.jpg`` ...), for ``--person-from-folder``."""
    for person, image in (("Eileen_Collins", astronaut), ("Cameraman", cameraman)):
        (root / person).mkdir()
        for i in range(photos):
            Image.fromarray(variant(image, i)).save(root / person / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory, astronaut, cameraman):
    """20 good photos of two people (one folder each) plus 20 broken files of every bad kind."""
    root = tmp_path_factory.mktemp("library")
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("bmp", "BMP"), ("jpeg", "JPEG")]
    for i in range(10):
        for person, image in (("Eileen_Collins", astronaut), ("Cameraman", cameraman)):
            ext, fmt = formats[i % len(formats)]
            save(variant(image, i), root / person / f"{person}_{i:04d}.{ext}", fmt)
    broken = root / "Eileen_Collins"
    jpeg = io.BytesIO()
    Image.fromarray(astronaut).save(jpeg, format="JPEG")
    for i in range(4):
        (broken / f"empty_{i}.jpg").write_bytes(b"")
        (broken / f"truncated_{i}.jpg").write_bytes(jpeg.getvalue()[: 2000 + 500 * i])
        (broken / f"text_{i}.png").write_text("not a photo at all\n" * (i + 1))
        (broken / f"bomb_{i}.png").write_bytes(png_declaring(40_000 + i, 40_000))
        (broken / f"garbage_{i}.webp").write_bytes(b"RIFF" + bytes(range(256)) * (i + 1))
    for i in range(2):
        (broken / f"dangling_{i}.jpg").symlink_to(root / "nowhere" / f"{i}.jpg")
    # Not a photo extension: passed over, not a failure.
    (broken / "notes.txt").write_text("caption file")
    return root


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def test_index_reports_every_bad_file_and_reindexes_nothing(library, capsys, tmp_path):
    data = ["--data-dir", str(tmp_path / "data"), "--embedder", "dlib"]
    code, first = run_json(capsys, ["index", str(library), "--person-from-folder", *data])
    assert code == EXIT_PARTIAL
    assert first["files"] == 42 and first["indexed"] == 20 and first["failed"] == 22
    assert first["faces"] == 20 and first["ignored_other_files"] == 1
    reasons = {f["source"].rsplit("/", 1)[1]: f["error"] for f in first["failures"]}
    assert all("empty file" in reasons[f"empty_{i}.jpg"] for i in range(4))
    assert all("truncated" in reasons[f"truncated_{i}.jpg"] for i in range(4))
    assert all("not an image" in reasons[f"text_{i}.png"] for i in range(4))
    assert all("too large" in reasons[f"bomb_{i}.png"] for i in range(4))
    assert all("not an image" in reasons[f"garbage_{i}.webp"] for i in range(4))
    assert all("not found" in reasons[f"dangling_{i}.jpg"] for i in range(2))

    code, again = run_json(capsys, ["index", str(library), "--person-from-folder", *data])
    assert code == EXIT_PARTIAL
    assert again["indexed"] == 0 and again["skipped_unchanged"] == 20 and again["failed"] == 22
    assert again["index_total_faces"] == first["index_total_faces"] == 20


def test_search_finds_the_person_and_honours_filters(library, capsys, tmp_path, astronaut, cameraman):
    data = ["--data-dir", str(tmp_path / "data"), "--embedder", "dlib"]
    main(["index", str(library / "Eileen_Collins"), "--person", "Eileen_Collins", "--quiet", *data])
    main(["index", str(library / "Cameraman"), "--person", "Cameraman", "--quiet", *data])
    capsys.readouterr()
    query = tmp_path / "query.jpg"
    save(variant(astronaut, 11), query)

    code, result = run_json(capsys, ["search", str(query), "--k", "5", *data])
    assert code == 0
    assert len(result["query_faces"]) == 1 and result["face"] == 0
    assert [h["person"] for h in result["hits"]] == ["Eileen_Collins"] * 5
    hit = result["hits"][0]
    assert set(hit) >= {"score", "person", "source", "box", "face_id"} and len(hit["box"]) == 4
    assert hit["score"] > 0.9

    code, filtered = run_json(capsys, ["search", str(query), "--k", "3", "--person", "Cameraman", *data])
    assert [h["person"] for h in filtered["hits"]] == ["Cameraman"] * 3
    assert filtered["hits"][0]["score"] < hit["score"] - 0.05

    pair = tmp_path / "pair.png"
    save(np.concatenate([cameraman, astronaut], axis=1), pair)
    faces = {}
    for face in ("0", "1"):
        code, picked = run_json(capsys, ["search", str(pair), "--k", "1", "--face", face, *data])
        faces[face] = picked["hits"][0]["person"]
        assert len(picked["query_faces"]) == 2
    assert set(faces.values()) == {"Eileen_Collins", "Cameraman"}
    assert main(["search", str(pair), "--face", "5", *data]) == 1  # as with no face at all
    assert "face 5 does not exist" in capsys.readouterr().err

    code, collapsed = run_json(capsys, ["search", str(query), "--collapse", "person", *data])
    assert [h["person"] for h in collapsed["hits"]] == ["Eileen_Collins", "Cameraman"]


def test_people_are_grouped_named_split_and_merged_from_the_cli(library, capsys, tmp_path, astronaut):
    data = ["--data-dir", str(tmp_path / "data")]
    main(["index", str(library / "Eileen_Collins"), str(library / "Cameraman"), "--quiet", *data])
    capsys.readouterr()
    code, report = run_json(capsys, ["people", "cluster", *data])
    assert code == 0
    assert (report["faces"], report["people"], report["alone"], report["changed"]) == (20, 2, 0, 20)
    code, people = run_json(capsys, ["people", "list", *data])
    assert [(p["face_count"], p["name"]) for p in people] == [(10, None), (10, None)]
    assert people[0]["id"] != people[1]["id"]

    from search_engine.embedding import embedder_info
    from search_engine.index import create_index

    settings = settings_from(build_parser().parse_args(["stats", *data]))
    index = create_index(settings.index, embedder_info(settings.models))
    folders = [{Path(index.get(f).source).parent.name for f in p["face_ids"]} for p in people]
    assert sorted(map(sorted, folders)) == [["Cameraman"], ["Eileen_Collins"]]
    code, again = run_json(capsys, ["people", "cluster", *data])
    assert again["changed"] == 0 and again["examined"] == 0
    code, stats = run_json(capsys, ["stats", *data])
    assert stats["grouped"] == {"people": 2, "faces": 20}

    eileen = next(p for p, f in zip(people, folders) if f == {"Eileen_Collins"})
    other = next(p for p in people if p is not eileen)
    code, named = run_json(capsys, ["people", "name", eileen["id"], "Eileen", *data])
    assert (code, named["name"], named["face_count"]) == (0, "Eileen", 10)
    query = tmp_path / "query.jpg"
    save(variant(astronaut, 11), query)
    code, found = run_json(capsys, ["search", str(query), "--k", "20", "--person", "Eileen", *data])
    assert [h["person"] for h in found["hits"]] == ["Eileen"] * 10
    assert {h["cluster"] for h in found["hits"]} == {eileen["id"]}
    code, split = run_json(capsys, ["people", "split", eileen["id"], *eileen["face_ids"][:3], *data])
    assert split["face_count"] == 3 and split["name"] is None
    code, merged = run_json(capsys, ["people", "merge", eileen["id"], split["id"], *data])
    assert merged["face_count"] == 10 and merged["name"] == "Eileen"
    assert main(["people", "name", other["id"], "Eileen", *data]) == EXIT_ERROR
    assert "merge the two people" in capsys.readouterr().err
    code, moved = run_json(capsys, ["people", "move", eileen["face_ids"][0], "--out", *data])
    assert moved == {"face_id": eileen["face_ids"][0], "person_id": None}
    code, shown = run_json(capsys, ["people", "show", eileen["id"], *data])
    assert shown["face_count"] == 9 and all(Path(f["source"]).parent.name == "Eileen_Collins" for f in shown["faces"])
    code, again = run_json(capsys, ["people", "cluster", "--full", *data])
    code, shown = run_json(capsys, ["people", "show", eileen["id"], *data])
    assert shown["face_count"] == 9 and shown["name"] == "Eileen"
    # The face taken out is the one most like her that is not hers.
    code, more = run_json(capsys, ["search", "--person-id", eileen["id"], "--k", "3", *data])
    assert more["face"] is None and more["hits"][0]["face_id"] == eileen["face_ids"][0]
    assert all(h["cluster"] != eileen["id"] for h in more["hits"])
    assert main(["search", *data]) == EXIT_USAGE


def test_query_without_a_face_fails_clearly(tmp_path):
    blank = tmp_path / "blank.png"
    save(np.full((200, 300, 3), 200, np.uint8), blank)
    done = subprocess.run(
        [sys.executable, "-m", "facesearch", "search", str(blank), "--embedder", "dlib", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == EXIT_ERROR
    assert "no face found in the query image" in done.stderr


def test_bad_query_file_names_it(tmp_path, capsys):
    bad = tmp_path / "query.jpg"
    bad.write_text("nope")
    assert main(["search", str(bad), "--embedder", "dlib", "--data-dir", str(tmp_path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert str(bad) in err and "not an image" in err


def test_serve_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("FACESEARCH_MEDIA_ROOTS", "/from/env")
    args = build_parser().parse_args(["serve", "--media-root", "/a", "--media-root", "/b", "--workers", "3"])
    assert (args.host, args.port, args.threads) == ("127.0.0.1", 8000, 4)
    settings = settings_from(args)
    assert settings.web.media_roots == (Path("/a"), Path("/b")) and settings.models.workers == 3
    assert settings_from(build_parser().parse_args(["serve"])).web.media_roots == (Path("/from/env"),)


def test_calibrate_on_pairs_stores_the_calibration_with_the_index(tmp_path, capsys, astronaut, cameraman):
    """LFW's pairs.txt format over 112 generated photos of two people, one image missing: the
    calibration is fitted on the rest, stored with the index, and --reset removes it."""
    images = tmp_path / "pairs_images"
    people = {"Eileen_Collins": astronaut, "Cameraman": cameraman}
    for person, image in people.items():
        for n in range(1, 57):
            save(variant(image, n), images / person / f"{person}_{n:04d}.jpg")
    lines = ["10\t112"]
    for person in people:
        lines += [f"{person}\t{n}\t{n + 1}" for n in range(1, 57, 2)]
    lines += [f"Eileen_Collins\t{n}\tCameraman\t{57 - n}" for n in range(1, 57)]
    lines.append("Eileen_Collins\t1\tEileen_Collins\t99")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    data = ["--embedder", "dlib", "--data-dir", str(tmp_path / "data")]

    code, report = run_json(capsys, ["calibrate", "--pairs", str(pairs), "--images", str(images), *data])
    assert code == 0 and report["stored"]
    assert report["pairs"]["pairs"] == 112 and report["pairs"]["accuracy"] > 0.95
    assert report["calibration"]["probes"] == 112 and report["calibration"]["model"] == "dlib-r1"
    (missing,) = report["skipped"]
    assert "Eileen_Collins_0099.jpg" in missing and "file not found" in missing
    assert report["verdicts"]["gallery_size"] == 0

    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.types import EmbedderInfo

    index = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", EmbedderInfo("dlib", "r1", 128))
    assert index.get_calibration().to_dict() == report["calibration"]
    _, stats = run_json(capsys, ["stats", *data])
    assert stats["calibration"] == report["calibration"] | {"stored_with_index": True}
    assert stats["verdicts"]["same_person_threshold"] == report["verdicts"]["same_person_threshold"]
    assert main(["calibrate", "--reset", *data]) == 0
    assert "searches now use the shipped one" in capsys.readouterr().out
    assert index.get_calibration() is None
    assert main(["stats", *data]) == 0
    assert "(shipped with facesearch: LFW" in capsys.readouterr().out


def test_calibrate_explains_what_it_lacks(tmp_path, capsys):
    data = ["--embedder", "dlib", "--data-dir", str(tmp_path / "data")]
    assert main(["calibrate", *data]) == EXIT_ERROR
    assert "no face in the index carries a person label" in capsys.readouterr().err
    assert main(["calibrate", "--pairs", str(tmp_path / "pairs.txt"), *data]) == EXIT_USAGE
    assert "--pairs and --images go together" in capsys.readouterr().err
    missing = ["calibrate", "--pairs", str(tmp_path / "pairs.txt"), "--images", str(tmp_path), *data]
    assert main(missing) == EXIT_ERROR
    assert "cannot read the pairs file" in capsys.readouterr().err


def test_duplicates_lists_groups_of_near_identical_photos(tmp_path, capsys, astronaut, cameraman):
    from search_engine.embedding.dlib_resnet import DlibEmbedder
    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.photo_hash import photo_hash
    from search_engine.types import SourceRecord

    model = DlibEmbedder.info
    index = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", model)
    photos = {
        "/archive/astronaut.jpg": astronaut,
        "/archive/astronaut-small.jpg": cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA),
        "/archive/cameraman.png": cameraman,
    }
    index.record_sources(
        [SourceRecord(s, s, model.key, 1, image_hash=photo_hash(image)) for s, image in photos.items()]
        + [SourceRecord("/archive/clip.mp4", "v", model.key, 2, media_type="video")]
    )
    index.close()
    data = ["--data-dir", str(tmp_path / "data"), "--embedder", "dlib"]
    assert main(["duplicates", *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [["/archive/astronaut-small.jpg", "/archive/astronaut.jpg"]]
    assert main(["duplicates", *data]) == 0
    assert "1 groups of near-identical photos (2 of the 3 photos with a hash)" in capsys.readouterr().out
    assert main(["duplicates", *data, "--max-distance", "999"]) == EXIT_USAGE

    # One photo's copies: a recompressed astronaut, which is not indexed itself, finds both astronauts.
    query = tmp_path / "astronaut-copy.jpg"
    Image.fromarray(astronaut).save(query, quality=40)
    assert main(["duplicates", str(query), *data, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(copy["source"] for copy in found) == ["/archive/astronaut-small.jpg", "/archive/astronaut.jpg"]
    assert found == sorted(found, key=lambda copy: (copy["distance"], copy["source"]))
    assert main(["duplicates", str(query), *data, "--k", "1"]) == 0
    assert "1 indexed photos within 48 of 256 hash bits" in capsys.readouterr().out
    assert main(["duplicates", str(query), *data, "--k", "0"]) == EXIT_USAGE
    (tmp_path / "notes.jpg").write_text("not a photo")
    assert main(["duplicates", str(tmp_path / "notes.jpg"), *data]) == EXIT_ERROR
    assert "notes.jpg" in capsys.readouterr().err
