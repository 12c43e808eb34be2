"""Model manifest and loader: every model the processor runs is listed in models/manifest.yaml
with its source package, licence, file and sha256. Weights load offline from models/ (or from
FLOW_MODELS_DIR); nothing is ever fetched from a hub.

``load_onnx_model(name)`` verifies the file against the manifest's sha256, builds one
onnxruntime InferenceSession with explicit thread settings (intra-op N, inter-op 1, sequential
execution) and runs a warm-up inference, so the first real frame does not pay for the graph's
lazy initialisation. ``shared_onnx_model`` caches that session per process: one session per
worker, shared by every detector built in it.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.settings import REPO_ROOT

DEFAULT_MODELS_DIR = REPO_ROOT / "models"


class ModelError(RuntimeError):
    """A model cannot be loaded; the message says what to do."""


class ModelNotFound(ModelError):
    pass


class ModelHashMismatch(ModelError):
    pass


def models_dir() -> Path:
    return Path(os.environ.get("FLOW_MODELS_DIR") or DEFAULT_MODELS_DIR)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    file: str
    sha256: str | None
    licence: str
    source: dict[str, Any] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)
    input: Any = None
    output: Any = None
    preprocessing: str | None = None
    base_dir: Path = DEFAULT_MODELS_DIR

    @property
    def path(self) -> Path:
        return self.base_dir / self.file

    def how_to_get(self) -> str:
        src = self.source or {}
        pkg = f"{src.get('package')}=={src.get('version')}" if src.get("package") else "its source package"
        script = (self.conversion or {}).get("script")
        if script:
            return (f"run `bash {script} {self.path}` (it converts {pkg} from {src.get('registry', 'the registry')} "
                    f"in a throwaway venv), then put the sha256 it prints into models/manifest.yaml if it differs; "
                    f"or restore the committed file with `git checkout -- models/{self.file}`")
        return f"install {pkg} from {src.get('registry', 'its registry')} and copy its weights to {self.path}"


def load_manifest(directory: Path | str | None = None) -> dict[str, ModelSpec]:
    base = Path(directory) if directory is not None else models_dir()
    path = base / "manifest.yaml"
    if not path.is_file():
        raise ModelNotFound(f"model manifest {path} not found: set FLOW_MODELS_DIR to the folder holding "
                            f"manifest.yaml and the model files (the repository's models/)")
    doc = yaml.safe_load(path.read_text()) or {}
    specs: dict[str, ModelSpec] = {}
    for m in doc.get("models", []):
        specs[m["name"]] = ModelSpec(
            name=m["name"], role=m.get("role", ""), file=str(m.get("file", "")), sha256=m.get("sha256"),
            licence=str(m.get("licence", "")), source=m.get("source") or {}, conversion=m.get("conversion") or {},
            input=m.get("input"), output=m.get("output"), preprocessing=m.get("preprocessing"), base_dir=base)
    return specs


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(spec: ModelSpec) -> Path:
    """The model's file, after checking it exists and its sha256 is the manifest's."""
    if not spec.sha256:
        raise ModelError(f"model {spec.name!r} has no sha256 in models/manifest.yaml: it is not a file model")
    path = spec.path
    if not path.is_file():
        raise ModelNotFound(f"model file for {spec.name!r} is missing: {path}. To get it, {spec.how_to_get()}.")
    got = sha256_of(path)
    if got != spec.sha256:
        raise ModelHashMismatch(
            f"model file {path} for {spec.name!r} has sha256 {got}, but models/manifest.yaml says {spec.sha256}: "
            f"the file is corrupt, truncated or from another conversion. To fix it, {spec.how_to_get()}.")
    return path


@dataclass
class OnnxModel:
    spec: ModelSpec
    session: Any  # onnxruntime.InferenceSession
    threads: int
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype
    output_names: list[str]
    warmup_ms: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        # onnxruntime's run() is thread-safe, but one session is sized for one caller at a time
        # (intra-op threads = the worker's cores): serialise callers instead of oversubscribing.
        with self.lock:
            return self.session.run(self.output_names, {self.input_name: x})


_ORT_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(float16)": np.float16}


def load_onnx_model(name: str, *, threads: int = 1, manifest_dir: Path | str | None = None,
                    warmup: bool = True) -> OnnxModel:
    """One onnxruntime session for the named manifest model, verified and warmed up."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    specs = load_manifest(manifest_dir)
    if name not in specs:
        raise ModelNotFound(f"model {name!r} is not in {models_dir() if manifest_dir is None else manifest_dir}"
                            f"/manifest.yaml (known: {', '.join(sorted(specs))})")
    spec = specs[name]
    path = verify(spec)
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - it is a project dependency
        raise ModelError("onnxruntime is not installed: `pip install onnxruntime==1.32.0` "
                         "(pinned in pyproject.toml)") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: the converted graph's unused-initialiser warnings are noise
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime could not load {path} for {spec.name!r}: {e}. "
                         f"To rebuild it, {spec.how_to_get()}.") from e
    inp = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
    dtype = np.dtype(_ORT_DTYPES.get(inp.type, np.float32))
    model = OnnxModel(spec=spec, session=session, threads=threads, input_name=inp.name, input_shape=shape,
                      input_dtype=dtype, output_names=[o.name for o in session.get_outputs()], warmup_ms=0.0)
    if warmup:
        t0 = time.perf_counter()
        model.run(np.zeros(shape, dtype))
        model.warmup_ms = (time.perf_counter() - t0) * 1000
    return model


_shared: dict[tuple[str, int, str], OnnxModel] = {}
_shared_lock = threading.Lock()


def shared_onnx_model(name: str, *, threads: int = 1, manifest_dir: Path | str | None = None) -> OnnxModel:
    """The process's one session for (model, threads, models dir), loaded on first use."""
    key = (name, threads, str(Path(manifest_dir) if manifest_dir is not None else models_dir()))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = load_onnx_model(name, threads=threads, manifest_dir=manifest_dir)
        return _shared[key]
