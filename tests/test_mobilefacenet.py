"""MobileFaceNet: the torch port against TensorFlow.js itself, then the corrected model on real faces."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from search_engine.embedding.mobilefacenet import (
    FILES,
    MobileFaceNetEmbedder,
    align,
    standardise,
)
from search_engine.errors import ModelUnavailableError
from search_engine.pipeline import FacePipeline

TFJS = Path(__file__).parent / "tfjs"


def run_tensorflow_js(model_json: Path, inputs: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The graph's output as TensorFlow.js computes it (tests/tfjs/run_graph.js, CPU backend)."""
    source, target = tmp_path / "inputs.f32", tmp_path / "outputs.f32"
    np.ascontiguousarray(inputs, np.float32).tofile(source)
    shape = ",".join(str(n) for n in inputs.shape)
    done = subprocess.run(
        [
            "node",
            str(TFJS / "run_graph.js"),
            str(model_json),
            str(source),
            str(target),
            shape,
        ],
        capture_output=True,
        text=True,
        cwd=TFJS,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return np.fromfile(target, np.float32).reshape(len(inputs), -1)


@pytest.fixture(scope="module")
def chips(detector, astronaut, cameraman):
    """Real ArcFace chips (astronaut, cameraman, the astronaut mirrored), standardised as the graph's input."""
    images = [astronaut, cameraman, np.ascontiguousarray(astronaut[:, ::-1])]
    aligned = [align(image, faces[0].landmarks) for image, faces in zip(images, detector.detect(images))]
    return standardise(np.stack(aligned))


def test_uncorrected_port_computes_what_tensorflow_js_computes(mobilefacenet_embedder, chips, tmp_path):
    """With the conversion's two errors left in, torch runs exactly the graph TensorFlow.js runs:
    the weights and ops are read right. Random inputs reach every channel's negative side."""
    literal = MobileFaceNetEmbedder(weights=mobilefacenet_embedder.weights_dir(), corrected=False)
    noise = np.random.default_rng(0).uniform(-1.0, 1.0, (3, 112, 112, 3)).astype(np.float32)
    inputs = np.concatenate([chips, noise])
    expected = run_tensorflow_js(literal.weights_dir() / "mobilefacenet.json", inputs, tmp_path)
    for batch in (1, 4, len(inputs)):
        literal.batch_size = batch
        assert literal.forward(inputs) == pytest.approx(expected, abs=2e-5)
    # As converted, the graph tells nobody apart: that is what the corrections are for.
    assert float(expected[0] @ expected[1]) > 0.999
    corrected = mobilefacenet_embedder.forward(inputs)
    assert float(corrected[0] @ corrected[1]) < 0.5


def variants(image: np.ndarray) -> list[np.ndarray]:
    brighter = cv2.convertScaleAbs(image, alpha=1.2, beta=30)
    smaller = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(image[:, ::-1]), brighter, smaller]


def test_same_face_scores_high_and_strangers_near_zero(
    detector, mobilefacenet_embedder, astronaut, cameraman, lfw_faces
):
    faces = FacePipeline(detector, mobilefacenet_embedder).analyse(
        [astronaut, *variants(astronaut), cameraman, *lfw_faces]
    )
    vectors = [f[0].embedding for f in faces if f]
    assert len(vectors) >= 8
    for vector in vectors:
        assert vector.dtype == np.float32 and vector.shape == (192,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    anchor = vectors[0]
    same = [float(anchor @ v) for v in vectors[1:4]]
    strangers = [float(anchor @ v) for v in vectors[4:]]
    assert min(same) > 0.7
    assert max(strangers) < 0.35


def test_a_query_is_flip_averaged_and_a_stored_face_is_not(detector, mobilefacenet_embedder, astronaut):
    """The mirror pass is paid once per search rather than once per stored face (the embedder's
    docstring has the measurement): a query is the unit sum of the chip's and its mirror image's
    vectors, a stored face the chip's own vector."""
    (faces,) = detector.detect([astronaut])
    chip = align(astronaut, faces[0].landmarks)
    plain, mirror = mobilefacenet_embedder.forward(standardise(np.stack([chip, chip[:, ::-1]])))
    (stored,), (query,) = (mobilefacenet_embedder.embed([(astronaut, faces[:1])], query=q)[0] for q in (False, True))
    assert stored == pytest.approx(plain, abs=1e-6)
    assert query == pytest.approx((plain + mirror) / np.linalg.norm(plain + mirror), abs=1e-6)


def test_missing_or_altered_weights_are_named(mobilefacenet_embedder, tmp_path):
    with pytest.raises(ModelUnavailableError, match="not a folder"):
        MobileFaceNetEmbedder(weights=tmp_path / "nowhere").load()
    with pytest.raises(ModelUnavailableError, match="mobilefacenet.json is not in"):
        MobileFaceNetEmbedder(weights=tmp_path).load()
    for name in FILES:
        shutil.copy(mobilefacenet_embedder.weights_dir() / name, tmp_path / name)
    with open(tmp_path / "mobilefacenet.bin", "r+b") as handle:
        handle.write(b"\0\0\0\0")
    with pytest.raises(ModelUnavailableError, match="sha256 differs"):
        MobileFaceNetEmbedder(weights=tmp_path).load()


def test_a_graph_that_is_not_mobilefacenet_is_refused(mobilefacenet_embedder, tmp_path):
    from search_engine.embedding.mobilefacenet_model import compile_graph
    from search_engine.embedding.tfjs import read_graph_model

    spec = json.loads((mobilefacenet_embedder.weights_dir() / "mobilefacenet.json").read_text())
    shutil.copy(
        mobilefacenet_embedder.weights_dir() / "mobilefacenet.bin",
        tmp_path / "mobilefacenet.bin",
    )
    prelu_constant = next(n for n in spec["modelTopology"]["node"] if n["name"].endswith("Conv2d_0/mul_1"))
    prelu_constant["op"] = "Div"
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelUnavailableError, match="not MobileFaceNet as expected: op Div"):
        compile_graph(read_graph_model(tmp_path / "model.json"))
    spec["weightsManifest"][0]["paths"] = ["missing.bin"]
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelUnavailableError, match="cannot read TensorFlow.js model"):
        read_graph_model(tmp_path / "model.json")
