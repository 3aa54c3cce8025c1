"""Real models on real and generated images: MTCNN detection, dlib and FaceNet embedding."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from search_engine.config import Settings
from search_engine.embedding import create_embedder
from search_engine.errors import ModelUnavailableError
from search_engine.pipeline import FacePipeline, subject_index
from search_engine.types import Box, Detection


def test_detects_the_astronaut_with_box_and_landmarks(detector, astronaut):
    (faces,) = detector.detect([astronaut])
    assert len(faces) == 1
    face = faces[0]
    assert face.probability > 0.99
    assert face.box.as_list() == pytest.approx([181, 62, 268, 172], abs=8)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    for x, y in face.landmarks:
        assert face.box.x1 <= x <= face.box.x2 and face.box.y1 <= y <= face.box.y2
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_batches_mixed_sizes_and_maps_large_images_back(detector, astronaut, cameraman):
    big = cv2.resize(astronaut, (3200, 3200), interpolation=cv2.INTER_CUBIC)
    blank = np.full((300, 400, 3), 127, np.uint8)
    small, large, camera, empty = detector.detect([astronaut, big, cameraman, blank])
    assert len(small) == 1 and len(large) == 1 and len(camera) == 1 and empty == []
    scale = 3200 / 512
    assert large[0].box.as_list() == pytest.approx([v * scale for v in small[0].box.as_list()], abs=6 * scale)


def test_two_faces_side_by_side(detector, astronaut, cameraman):
    pair = np.ascontiguousarray(np.concatenate([astronaut, cameraman], axis=1))
    (faces,) = detector.detect([pair])
    assert len(faces) == 2
    assert sorted(f.box.center[0] < 512 for f in faces) == [False, True]


def test_cascade_finds_what_facenet_pytorchs_mtcnn_finds(astronaut, cameraman, lfw_faces):
    """search_engine.mtcnn reimplements facenet-pytorch's detect_face loop in batches: same faces,
    probabilities, boxes and landmarks, on photos with one face, two, many candidates and none."""
    import torch
    from facenet_pytorch import MTCNN

    from search_engine.mtcnn import Cascade

    pair = np.ascontiguousarray(np.concatenate([astronaut, cameraman], axis=1))
    crowd = np.ascontiguousarray(np.concatenate([np.concatenate(lfw_faces[:3], axis=1)] * 2, axis=0))
    blank = np.full_like(pair, 127)
    reference = MTCNN(min_face_size=20, keep_all=True, post_process=False).eval()
    cascade = Cascade()
    for batch, min_face in (([pair, blank], 20), ([crowd], 20), ([astronaut, astronaut[:, ::-1]], 40)):
        reference.min_face_size = min_face
        with torch.inference_mode():
            boxes, probs, points = reference.detect(np.stack(batch), landmarks=True)
        found = cascade.detect(np.stack(batch), min_face)
        for ref_boxes, ref_probs, ref_points, faces in zip(boxes, probs, points, found):
            if ref_boxes is None:
                assert len(faces.boxes) == 0
                continue
            order, mine = np.argsort(-ref_probs.astype(float)), np.argsort(-faces.probabilities)
            assert len(mine) == len(order) > 0
            assert faces.boxes[mine] == pytest.approx(ref_boxes[order], abs=1e-3)
            assert faces.probabilities[mine] == pytest.approx(ref_probs[order].astype(float), abs=1e-5)
            assert faces.landmarks[mine] == pytest.approx(ref_points[order], abs=1e-3)


def test_subject_is_the_central_large_face():
    def det(x1, y1, size):
        return Detection(Box(x1, y1, x1 + size, y1 + size), 0.99, ())

    faces = [det(0, 0, 90), det(80, 80, 100), det(190, 190, 20)]
    assert subject_index(faces, 250, 250) == 1
    assert subject_index([], 250, 250) is None
    # A tiny face at the very centre never beats a large one nearby.
    assert subject_index([det(10, 100, 100), det(120, 120, 10)], 250, 250) == 0


def variants(image: np.ndarray) -> list[np.ndarray]:
    brighter = cv2.convertScaleAbs(image, alpha=1.2, beta=30)
    return [np.ascontiguousarray(image[:, ::-1]), brighter]


def test_dlib_vectors_are_unit_and_same_face_is_closer(detector, dlib_embedder, astronaut, cameraman, lfw_faces):
    pipeline = FacePipeline(detector, dlib_embedder)
    images = [astronaut, *variants(astronaut), cameraman, *lfw_faces]
    faces = pipeline.analyse(images)
    assert all(len(f) == 1 for f in faces[:4])
    vectors = [f[0].embedding for f in faces if f]
    for vector in vectors:
        assert vector.dtype == np.float32 and vector.shape == (128,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    anchor = vectors[0]
    same = [float(anchor @ v) for v in vectors[1:3]]
    different = [float(anchor @ v) for v in vectors[3:]]
    assert len(different) >= 4
    assert min(same) > 0.9
    assert min(same) > max(different) + 0.1


def test_embed_keeps_detection_order_across_a_batch(detector, dlib_embedder, astronaut, cameraman):
    pair = np.ascontiguousarray(np.concatenate([astronaut, cameraman], axis=1))
    detections = detector.detect([pair, astronaut])
    vectors = dlib_embedder.embed(list(zip([pair, astronaut], detections)))
    assert [v.shape for v in vectors] == [(2, 128), (1, 128)]
    astronaut_in_pair = next(i for i, d in enumerate(detections[0]) if d.box.center[0] < 512)
    assert float(vectors[0][astronaut_in_pair] @ vectors[1][0]) > 0.95


def test_torch_port_computes_dlibs_own_descriptors(detector, dlib_embedder, astronaut, cameraman, lfw_faces):
    """The network torch runs from the .dat file gives what dlib's own code gives for the same chips."""
    import dlib

    from search_engine.embedding.dlib_resnet import align, model_file

    images = [astronaut, cameraman, *lfw_faces]
    chips = [align(image, faces[0].landmarks) for image, faces in zip(images, detector.detect(images)) if faces]
    chips += [np.ascontiguousarray(chip[:, ::-1]) for chip in chips[:2]] + [np.zeros_like(chips[0])]
    expected = np.asarray(dlib.face_recognition_model_v1(str(model_file())).compute_face_descriptor(chips))
    default = dlib_embedder.batch_size
    try:
        for batch in (1, 3, len(chips)):
            dlib_embedder.batch_size = batch
            assert dlib_embedder.descriptors(np.stack(chips)) == pytest.approx(expected, abs=1e-5)
    finally:
        dlib_embedder.batch_size = default


def test_a_file_that_is_not_the_dlib_network_is_refused(tmp_path):
    from search_engine.embedding.dlib_model import read_weights
    from search_engine.embedding.dlib_resnet import model_file

    with pytest.raises(ModelUnavailableError, match="cannot read dlib model file"):
        read_weights(tmp_path / "missing.dat")
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(model_file().read_bytes()[:1_000_000])
    with pytest.raises(ModelUnavailableError, match="is not dlib's face recognition ResNet v1"):
        read_weights(truncated)


@pytest.fixture(scope="module")
def facenet_weights(tmp_path_factory):
    """A state dict in the layout of facenet-pytorch's VGGFace2 checkpoint (random values: no
    pretrained weights can be downloaded here), to exercise the local-file loading path."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    path = tmp_path_factory.mktemp("weights") / "20180402-114759-vggface2.pt"
    torch.save(InceptionResnetV1(pretrained=None, classify=False, num_classes=8631).state_dict(), path)
    return path


def test_facenet_loads_local_weights_and_embeds(facenet_weights, detector, astronaut):
    from search_engine.embedding.facenet import FacenetEmbedder

    embedder = FacenetEmbedder(weights=facenet_weights).load()
    assert embedder.load() is embedder
    (vectors,) = embedder.embed([(astronaut, detector.detect([astronaut])[0])])
    assert vectors.shape == (1, 512) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)


def test_facenet_bad_weights_path_names_it(tmp_path):
    from search_engine.embedding.facenet import FacenetEmbedder

    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelUnavailableError, match=str(missing)):
        FacenetEmbedder(weights=missing).load()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="cannot read FaceNet weights"):
        FacenetEmbedder(weights=junk).load()


def test_auto_takes_mobilefacenet_without_facenet_and_dlib_without_either(tmp_path, caplog, mobilefacenet_embedder):
    from search_engine.embedding import resolve_embedder_name

    settings = Settings.from_env({}).replace(facenet_weights=tmp_path / "missing.pt")
    with caplog.at_level(logging.WARNING):
        assert resolve_embedder_name(settings.models) == "mobilefacenet"
    assert "facenet unavailable" in caplog.text
    caplog.clear()
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING):
        embedder = create_embedder(settings.replace(mobilefacenet_weights=empty).models)
    assert embedder.info.name == "dlib"
    assert "mobilefacenet unavailable" in caplog.text and "Using the offline dlib embedder" in caplog.text
    with pytest.raises(ModelUnavailableError):
        create_embedder(settings.replace(embedder="facenet").models)


def test_similarity_transform_recovers_a_known_one():
    from search_engine.alignment import similarity_transform

    src = np.array([[10, 20], [60, 22], [35, 50], [15, 80], [55, 82]], float)
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -8.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rotation).T + shift
    assert similarity_transform(src, dst) == pytest.approx(np.hstack([scale * rotation, shift[:, None]]))


def test_a_huge_face_embeds_like_a_small_one(detector, dlib_embedder, astronaut):
    big = cv2.resize(astronaut, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    detections = detector.detect([astronaut, big])
    small_vec, big_vec = dlib_embedder.embed(list(zip([astronaut, big], detections)))
    assert float(small_vec[0] @ big_vec[0]) > 0.95


def test_faces_narrower_than_the_minimum_are_dropped_in_source_pixels(astronaut):
    from search_engine.detection import FaceDetector

    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # face about 350 px wide
    (kept,) = FaceDetector(min_face_size=300, max_side=512).load().detect([big])
    (dropped,) = FaceDetector(min_face_size=400, max_side=512).load().detect([big])
    assert len(kept) == 1 and kept[0].box.x2 - kept[0].box.x1 >= 300
    assert dropped == []
