#!/usr/bin/env python3
"""Converts Intel Open Model Zoo person detectors and person re-identification models from
OpenVINO IR v10 (the hash-listed files in ../shared/models/openvino/, Apache-2.0) to ONNX for
onnxruntime, then checks every ONNX file against the `openvino` runtime on real frames.

    bash infra/models/convert_omz.sh [--ir-dir DIR] [--out-dir models] [--models NAME ...]
    python infra/models/convert_omz.py ...    (needs numpy, onnx, onnxruntime, openvino, opencv)

What it does, per model:

1. Checks the sha256 of the IR files (.xml and .bin) against the values recorded in the IR
   folder's PROVENANCE.md (hard-coded below); any mismatch stops the script before converting.
2. Builds the ONNX graph from the IR itself with the `onnx` helper API, one ONNX op (or a
   constant) per IR layer, for exactly the layer types these five models use (anything else is
   refused with its name). Constant sub-graphs are evaluated here in numpy: shape arithmetic on
   static dimensions, Range/Squeeze over ranks, and the detectors' PriorBoxClustered layers.
   - Batch: the IR is written for batch 1; the ONNX input is [N, 3, H, W] with N dynamic. The
     IR's own reshapes take the batch from the tensor's shape (ShapeOf -> Gather) or copy it
     (special_zero), so they stay dynamic; a reshape that would fix the batch is refused.
   - FP16: the IR's Parameter is f16 and its weights are f16. The ONNX input is float32 and
     every f16 constant is widened to float32 (exact), so there is no Convert layer at all.
   - MVN (mean-variance normalisation per channel, with or without explicit reduction axes):
     InstanceNormalization with unit scale, zero bias and the layer's eps. Refused when the
     normalisation runs across channels.
   - Detectors (person-detection-020x): the graph is cut before DetectionOutput, which has no
     ONNX operator. Outputs: `box_deltas` [N, P, 4] (dx, dy, dw, dh per prior), `class_probs`
     [N, P, 2] (softmax; column 0 = person, column 1 = background) and `priors` [2, P, 4]
     (row 0: prior boxes xmin, ymin, xmax, ymax normalised to the input; row 1: their variances),
     a constant computed from the IR's PriorBoxClustered attributes for the fixed input size.
     The DetectionOutput attributes are printed (and recorded in models/manifest.yaml); the
     decoding runs in numpy in pipeline/vision/detector.py (decode_ssd), which this script uses.
3. Saves the model (opset 17, IR version 8, no timestamps: the bytes depend only on the inputs
   and the onnx version) and prints its sha256 and size.
4. Compares against OpenVINO (CPU plugin, f32 inference precision) running the original IR on
   frames of vtest.avi (the project's footage, `bash infra/local/footage.sh`), downscaled to
   640x480 as the edge sends them:
   - detectors: priors equal OpenVINO's PriorBoxClustered output; raw deltas and class
     probabilities (max abs difference); boxes after numpy decoding + NMS against OpenVINO's
     DetectionOutput: every detection >= 0.3 on either side has a twin on the other side
     (IoU >= 0.95, score within 0.01);
   - re-id models: cosine similarity of ONNX and OpenVINO embeddings on person crops (the
     boxes OpenVINO's 0200 detector finds on those frames), >= 0.999; batch of 16 equals one
     by one.
   Any figure out of tolerance makes the script exit with status 1 (the ONNX file is still
   written, so it can be inspected).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IR_DIR = ROOT.parent / "shared" / "models" / "openvino"

# sha256 of the IR files, as recorded in ../shared/models/openvino/PROVENANCE.md.
IR_SHA256 = {
    "person-reidentification-retail-0288.xml": "fd1af31607b3142fc870ef363c0c63188ab4604b0a18eda79e1467eb65422f74",
    "person-reidentification-retail-0288.bin": "56df7bd67c0f66e33cffd7ed82b761af511159a4b67c6d7834776106e9b56cbe",
    "person-reidentification-retail-0286.xml": "0c50b99e0a81ac102af700c88aa48dad1b265f16fba866d176b06f221e2e9a66",
    "person-reidentification-retail-0286.bin": "b505697b2cae65ed09025193ec04c61c9fba9f9e4f558a32ef326cd60bf923ed",
    "person-detection-0200.xml": "b7c7c743a8062220511af588142efb74194014370d59cbf62ede84d772ccb684",
    "person-detection-0200.bin": "aba627cdd9c6576cf6e7442191b9663811d327f2ea0ffe113fb77ba07c124b58",
    "person-detection-0201.xml": "d24923cce7e0b533023c8e3fed0c37d51ea93a3909e724d926fed8770aa35f48",
    "person-detection-0201.bin": "81ec4d0c1219ec7f00e17102c86900e4253776227137f15e12cda8c7e7994aec",
    "person-detection-0202.xml": "649213976ea433d338752235944c96ce67809d175860b6814778847192497501",
    "person-detection-0202.bin": "c82526a14d4c3c2d4c04e06e1173f573374fb5a2a97393b926f96adbff7b345b",
}

# model -> (kind, output file in --out-dir); 0202 is available but not converted by default.
MODELS = {
    "person-reidentification-retail-0288": ("reid", "person_reid_0288.onnx"),
    "person-reidentification-retail-0286": ("reid", "person_reid_0286.onnx"),
    "person-detection-0200": ("detector", "person_detection_0200.onnx"),
    "person-detection-0201": ("detector", "person_detection_0201.onnx"),
    "person-detection-0202": ("detector", "person_detection_0202.onnx"),
}
DEFAULT_MODELS = [m for m in MODELS if m != "person-detection-0202"]

OPSET = 17
ONNX_IR_VERSION = 8  # loadable by any onnxruntime since 1.10
PRODUCER = "flowpipe infra/models/convert_omz.py"

# Tolerances of the comparison with OpenVINO.
TOL_REID_COSINE = 0.999
TOL_BATCH_DIFF = 1e-4
TOL_PRIORS = 1e-6
TOL_DET_IOU = 0.95
TOL_DET_SCORE = 0.01
DET_REPORT_SCORE = 0.3   # detections compared: score >= this on one side ...
DET_MATCH_SCORE = 0.2    # ... must have a twin scoring >= this on the other side

F16, F32, I32, I64 = "f16", "f32", "i32", "i64"
_IR_DTYPES = {F16: np.float16, F32: np.float32, I32: np.int32, I64: np.int64, "u8": np.uint8, "i8": np.int8}


def log(msg: str) -> None:
    print(f"[convert_omz] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_ir_hashes(ir_dir: Path, models: list[str]) -> None:
    bad = []
    for m in models:
        for ext in (".xml", ".bin"):
            name = m + ext
            path = ir_dir / name
            if not path.is_file():
                bad.append(f"{path}: missing")
                continue
            got = sha256_file(path)
            if got != IR_SHA256[name]:
                bad.append(f"{path}: sha256 {got}, PROVENANCE.md says {IR_SHA256[name]}")
            else:
                log(f"sha256 ok  {name}  {got}")
    if bad:
        raise SystemExit("IR files do not match PROVENANCE.md:\n  " + "\n  ".join(bad))


# ---- IR reading ---------------------------------------------------------------------------------

@dataclass
class Layer:
    id: str
    name: str
    type: str
    version: str
    attrs: dict[str, str]
    in_ports: list[str]                 # input port ids, in order
    out_ports: dict[str, list[int]]     # output port id -> static dims (batch 1)
    const: np.ndarray | None = None


@dataclass
class Ir:
    name: str
    layers: dict[str, Layer]
    edges: dict[tuple[str, str], tuple[str, str]]  # (to layer, to port) -> (from layer, from port)
    order: list[str]

    def producer(self, layer: Layer, i: int) -> tuple[str, str]:
        return self.edges[(layer.id, layer.in_ports[i])]


def _int_list(s: str) -> list[int]:
    return [int(v) for v in s.replace(" ", "").split(",") if v != ""]


def _float_list(s: str) -> list[float]:
    return [float(v) for v in s.replace(" ", "").split(",") if v != ""]


def _bool(s: str | None, default: bool = False) -> bool:
    if s is None:
        return default
    return s.strip().lower() in ("1", "true")


def read_ir(xml_path: Path) -> Ir:
    root = ET.parse(xml_path).getroot()
    if root.get("version") not in ("10", "11"):
        raise SystemExit(f"{xml_path}: IR version {root.get('version')} (expected 10 or 11)")
    blob = xml_path.with_suffix(".bin").read_bytes()
    layers: dict[str, Layer] = {}
    for el in root.find("layers"):
        data = el.find("data")
        attrs = dict(data.attrib) if data is not None else {}
        ins = [p.get("id") for p in el.find("input")] if el.find("input") is not None else []
        outs = {}
        if el.find("output") is not None:
            for p in el.find("output"):
                outs[p.get("id")] = [int(d.text) for d in p.findall("dim")]
        layer = Layer(el.get("id"), el.get("name"), el.get("type"), el.get("version", ""), attrs, ins, outs)
        if layer.type == "Const":
            dt = _IR_DTYPES[attrs["element_type"]]
            off, size = int(attrs["offset"]), int(attrs["size"])
            shape = _int_list(attrs.get("shape", ""))
            arr = np.frombuffer(blob, dtype=dt, count=size // np.dtype(dt).itemsize, offset=off).reshape(shape)
            layer.const = arr.astype(np.float32) if dt in (np.float16, np.float32) else arr.astype(np.int64)
        layers[layer.id] = layer
    edges = {}
    for e in root.find("edges"):
        edges[(e.get("to-layer"), e.get("to-port"))] = (e.get("from-layer"), e.get("from-port"))
    # topological order (Kahn), ties by the file's order
    deps = {lid: {edges[(lid, p)][0] for p in layers[lid].in_ports} for lid in layers}
    order, done = [], set()
    pending = list(layers)
    while pending:
        progressed = False
        rest = []
        for lid in pending:
            if deps[lid] <= done:
                order.append(lid)
                done.add(lid)
                progressed = True
            else:
                rest.append(lid)
        if not progressed:
            raise SystemExit(f"{xml_path}: the graph has a cycle")
        pending = rest
    return Ir(root.get("name"), layers, edges, order)


# ---- IR -> ONNX ---------------------------------------------------------------------------------

@dataclass
class Val:
    """One IR output port: a constant (numpy), or a tensor of the ONNX graph.

    ``dims`` are the IR's static dims (batch 1). A tensor computed from shapes carries
    ``partial``: its values where they do not depend on the batch, None where they do."""
    dims: list[int]
    const: np.ndarray | None = None
    name: str | None = None
    partial: np.ndarray | None = None  # object array, shape vectors only


@dataclass
class Builder:
    ir: Ir
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)   # name -> np.ndarray
    inputs: list = field(default_factory=list)
    used_names: set = field(default_factory=set)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}#{k}"
        self.used_names.add(name)
        return name

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        from onnx import helper
        outs = [self.fresh(base if n_out == 1 else f"{base}:{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0], **attrs))
        return outs

    def const_name(self, v: Val, base: str, dtype=None) -> str:
        """The ONNX name of a value, as an initializer when it is a constant."""
        if v.const is None:
            return v.name
        arr = np.array(v.const if dtype is None else v.const.astype(dtype), order="C")  # keeps 0-d arrays 0-d
        name = self.fresh(base)
        self.inits[name] = arr
        return name


def _partial_of(v: Val) -> np.ndarray | None:
    if v.const is not None:
        return v.const.astype(object)
    return v.partial


def _from_partial(p: np.ndarray, dims: list[int], name: str | None) -> Val:
    if all(x is not None for x in p.reshape(-1)):
        return Val(dims=list(p.shape), const=p.astype(np.int64))
    return Val(dims=dims, name=name, partial=p)


def prior_box_clustered(attrs: dict[str, str], layer_hw: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """OpenVINO PriorBoxClustered-1 for a fixed feature map and image size: [2, H*W*S*4] float32,
    row 0 the boxes (xmin, ymin, xmax, ymax) normalised to the image, row 1 the variances."""
    widths, heights = _float_list(attrs["width"]), _float_list(attrs["height"])
    if len(widths) != len(heights):
        raise SystemExit("PriorBoxClustered: width and height lists differ in length")
    lh, lw = int(layer_hw[0]), int(layer_hw[1])
    img_h = float(attrs.get("img_h", 0) or 0) or float(image_hw[0])
    img_w = float(attrs.get("img_w", 0) or 0) or float(image_hw[1])
    step_w, step_h = float(attrs.get("step_w", 0) or 0), float(attrs.get("step_h", 0) or 0)
    if step_w == 0 and step_h == 0:
        step_w = step_h = float(attrs.get("step", 0) or 0)
    if step_w == 0 and step_h == 0:
        step_w, step_h = img_w / lw, img_h / lh
    offset = float(attrs["offset"])
    variance = _float_list(attrs.get("variance", "")) or [0.1]
    if len(variance) == 1:
        variance = variance * 4
    cy, cx = np.meshgrid((np.arange(lh) + offset) * step_h, (np.arange(lw) + offset) * step_w, indexing="ij")
    cx, cy = cx[:, :, None], cy[:, :, None]                       # [H, W, 1]
    bw, bh = np.asarray(widths)[None, None], np.asarray(heights)[None, None]  # [1, 1, S]
    boxes = np.stack([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                      (cx + bw / 2) / img_w, (cy + bh / 2) / img_h], axis=-1)  # [H, W, S, 4]
    if _bool(attrs.get("clip"), True):
        boxes = np.clip(boxes, 0.0, 1.0)
    boxes = boxes.reshape(-1).astype(np.float32)
    var = np.tile(np.asarray(variance, np.float32), boxes.size // 4)
    return np.stack([boxes, var])


def _strided_slice(x: np.ndarray, layer: Layer, begin, end, stride) -> np.ndarray:
    a = layer.attrs
    for m in ("new_axis_mask", "shrink_axis_mask", "ellipsis_mask"):
        if any(_int_list(a.get(m, "0") or "0")):
            raise SystemExit(f"StridedSlice {layer.name}: {m} is not supported")
    bm, em = _int_list(a.get("begin_mask", "")), _int_list(a.get("end_mask", ""))
    idx = []
    for i in range(len(begin)):
        b = None if (i < len(bm) and bm[i] == 1) else int(begin[i])
        e = None if (i < len(em) and em[i] == 1) else int(end[i])
        idx.append(slice(b, e, int(stride[i]) if stride is not None else 1))
    return x[tuple(idx)]


def _axes(v: Val, rank: int, layer: Layer) -> list[int]:
    if v.const is None:
        raise SystemExit(f"{layer.type} {layer.name}: axes are not constant")
    return [int(a) % rank for a in np.asarray(v.const).reshape(-1)]


def convert_layer(b: Builder, layer: Layer, ins: list[Val]) -> list[Val]:  # noqa: C901 - one branch per op
    t, a, name = layer.type, layer.attrs, layer.name
    out_dims = [layer.out_ports[p] for p in layer.out_ports]
    d0 = out_dims[0] if out_dims else []
    all_const = all(v.const is not None for v in ins)

    def one(onnx_op: str, inputs: list[str], **attrs) -> list[Val]:
        return [Val(d0, name=b.node(onnx_op, inputs, name, **attrs)[0])]

    def data(i: int) -> str:
        return b.const_name(ins[i], f"{name}/in{i}")

    if t == "Multiply" or t == "Add":
        if all_const:
            r = ins[0].const * ins[1].const if t == "Multiply" else ins[0].const + ins[1].const
            return [Val(list(r.shape), const=r)]
        if a.get("auto_broadcast", "numpy") != "numpy":
            raise SystemExit(f"{t} {name}: auto_broadcast {a['auto_broadcast']} not supported")
        return one("Mul" if t == "Multiply" else "Add", [data(0), data(1)])

    if t in ("Convolution", "GroupConvolution"):
        w = ins[1].const
        if w is None:
            raise SystemExit(f"{t} {name}: weights are not constant")
        group = 1
        if t == "GroupConvolution":
            group = w.shape[0]
            w = w.reshape((w.shape[0] * w.shape[1],) + w.shape[2:])
        pad = a.get("auto_pad", "explicit")
        if pad not in ("explicit", "notset", ""):
            raise SystemExit(f"{t} {name}: auto_pad {pad} not supported")
        wname = b.const_name(Val(list(w.shape), const=w), f"{name}/weights")
        return one("Conv", [data(0), wname], kernel_shape=list(w.shape[2:]), strides=_int_list(a["strides"]),
                   dilations=_int_list(a["dilations"]), pads=_int_list(a["pads_begin"]) + _int_list(a["pads_end"]),
                   group=group)

    if t == "Clamp":
        lo = b.const_name(Val([], const=np.array(float(a["min"]), np.float32)), f"{name}/min")
        hi = b.const_name(Val([], const=np.array(float(a["max"]), np.float32)), f"{name}/max")
        return one("Clip", [data(0), lo, hi])
    if t == "ReLU":
        return one("Relu", [data(0)])
    if t == "Sigmoid":
        return one("Sigmoid", [data(0)])
    if t == "PReLU":
        return one("PRelu", [data(0), data(1)])

    if t == "Transpose":
        perm = [int(p) for p in ins[1].const.reshape(-1)]
        if all_const:
            r = np.transpose(ins[0].const, perm)
            return [Val(list(r.shape), const=r)]
        if ins[0].partial is None and perm[0] != 0:
            raise SystemExit(f"Transpose {name}: moves the batch axis")
        return one("Transpose", [data(0)], perm=perm)

    if t == "ShapeOf":
        src = ins[0]
        if src.const is not None:
            return [Val([src.const.ndim], const=np.array(src.const.shape, np.int64))]
        if src.partial is not None:  # the shape of a shape vector: its static length
            return [Val([len(src.dims)], const=np.array(src.dims, np.int64))]
        p = np.array([None] + list(src.dims[1:]), dtype=object)  # dim 0 is the batch
        return [Val([len(src.dims)], name=b.node("Shape", [src.name], name)[0], partial=p)]

    if t == "Gather":
        if ins[2].const is None or ins[1].const is None:
            raise SystemExit(f"Gather {name}: indices and axis must be constant")
        axis = int(ins[2].const.reshape(-1)[0])
        if all_const:
            r = np.take(ins[0].const, ins[1].const, axis=axis)
            return [Val(list(r.shape), const=np.asarray(r))]
        p = _partial_of(ins[0])
        if p is not None:
            r = np.take(p, ins[1].const, axis=axis)
            out = _from_partial(np.asarray(r, dtype=object), d0, None)
            if out.const is not None:
                return [out]
            out.name = b.node("Gather", [data(0), data(1)], name, axis=axis)[0]
            return [out]
        return one("Gather", [data(0), data(1)], axis=axis)

    if t in ("Unsqueeze", "Squeeze"):
        p = _partial_of(ins[0])
        rank_in = len(ins[0].dims) if ins[0].const is None else ins[0].const.ndim
        if len(ins) > 1:
            axes = _axes(ins[1], rank_in + (len(ins[1].const.reshape(-1)) if t == "Unsqueeze" else 0), layer)
        else:
            axes = [i for i, d in enumerate(ins[0].dims) if d == 1]
        if all_const:
            r = ins[0].const
            if t == "Unsqueeze":
                for ax in sorted(axes):
                    r = np.expand_dims(r, ax)
            else:
                r = np.squeeze(r, axis=tuple(axes))
            return [Val(list(r.shape), const=np.asarray(r))]
        if p is not None:
            r = p
            if t == "Unsqueeze":
                for ax in sorted(axes):
                    r = np.expand_dims(r, ax)
            else:
                r = np.squeeze(r, axis=tuple(axes))
            out = _from_partial(np.asarray(r, dtype=object), d0, None)
            if out.const is not None:
                return [out]
            out.name = b.node(t, [data(0), b.const_name(Val([len(axes)], const=np.array(axes, np.int64)),
                                                         f"{name}/axes")], name)[0]
            return [out]
        return one(t, [data(0), b.const_name(Val([len(axes)], const=np.array(axes, np.int64)), f"{name}/axes")])

    if t == "Concat":
        axis = int(a["axis"])
        if all_const:
            r = np.concatenate([v.const for v in ins], axis=axis)
            return [Val(list(r.shape), const=r)]
        parts = [_partial_of(v) for v in ins]
        if all(p is not None for p in parts):
            out = _from_partial(np.concatenate(parts, axis=axis), d0, None)
            if out.const is not None:
                return [out]
            out.name = b.node("Concat", [data(i) for i in range(len(ins))], name, axis=axis)[0]
            return [out]
        return one("Concat", [data(i) for i in range(len(ins))], axis=axis)

    if t == "Reshape":
        special_zero = _bool(a.get("special_zero"))
        shape = ins[1]
        if ins[0].const is not None and shape.const is not None:
            s = [int(v) for v in shape.const.reshape(-1)]
            if special_zero:
                s = [ins[0].const.shape[i] if v == 0 else v for i, v in enumerate(s)]
            r = ins[0].const.reshape(s)
            return [Val(list(r.shape), const=r)]
        if shape.const is not None:
            s = [int(v) for v in shape.const.reshape(-1)]
            if 0 in s and not special_zero:
                raise SystemExit(f"Reshape {name}: a zero dimension without special_zero")
            if ins[0].partial is None and s and s[0] not in (0, -1):
                raise SystemExit(f"Reshape {name}: the target shape {s} would fix the batch")
        return one("Reshape", [data(0), b.const_name(shape, f"{name}/shape", np.int64)])

    if t in ("ReduceProd", "ReduceMean", "ReduceSum", "ReduceMax"):
        keep = _bool(a.get("keep_dims"))
        rank = len(ins[0].dims) if ins[0].const is None else ins[0].const.ndim
        axes = _axes(ins[1], rank, layer)
        p = ins[0].partial
        if p is not None and t == "ReduceProd":
            if all(v is not None for v in p.reshape(-1)):
                r = np.prod(np.asarray(p, dtype=np.int64), axis=tuple(axes), keepdims=keep)
                return [Val(list(r.shape), const=r)]
            out = Val(d0, partial=np.array([None] * max(1, int(np.prod(d0))), dtype=object).reshape(d0))
            out.name = b.node("ReduceProd", [data(0)], name, axes=axes, keepdims=int(keep))[0]
            return [out]
        if all_const:
            fn = {"ReduceProd": np.prod, "ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}[t]
            r = fn(ins[0].const, axis=tuple(axes), keepdims=keep)
            return [Val(list(np.shape(r)), const=np.asarray(r))]
        return one(t, [data(0)], axes=axes, keepdims=int(keep))

    if t == "Range":
        if not all_const:
            raise SystemExit(f"Range {name}: inputs are not constant")
        r = np.arange(*(int(v.const.reshape(-1)[0]) for v in ins), dtype=np.int64)
        return [Val([r.size], const=r)]

    if t == "StridedSlice":
        if all_const:
            r = _strided_slice(ins[0].const, layer, ins[1].const.reshape(-1), ins[2].const.reshape(-1),
                               ins[3].const.reshape(-1) if len(ins) > 3 else None)
            return [Val(list(r.shape), const=np.asarray(r))]
        p = _partial_of(ins[0])
        if p is None or not all(v.const is not None for v in ins[1:]):
            raise SystemExit(f"StridedSlice {name}: only shape arithmetic with constant bounds is supported")
        r = _strided_slice(p, layer, ins[1].const.reshape(-1), ins[2].const.reshape(-1),
                           ins[3].const.reshape(-1) if len(ins) > 3 else None)
        out = _from_partial(np.asarray(r, dtype=object), d0, None)
        if out.const is None:
            raise SystemExit(f"StridedSlice {name}: the slice depends on the batch")
        return [out]

    if t == "SoftMax":
        return one("Softmax", [data(0)], axis=int(a["axis"]))

    if t == "Split":
        axis = int(ins[1].const.reshape(-1)[0]) % len(ins[0].dims)
        n = int(a["num_splits"])
        sizes = [ins[0].dims[axis] // n] * n
        names = b.node("Split", [data(0), b.const_name(Val([n], const=np.array(sizes, np.int64)), f"{name}/split")],
                       name, n_out=n, axis=axis)
        return [Val(d, name=nm) for d, nm in zip(out_dims, names)]

    if t == "MVN":
        rank = len(ins[0].dims)
        if _bool(a.get("across_channels")):
            raise SystemExit(f"MVN {name}: across_channels is not supported")
        if not _bool(a.get("normalize_variance")):
            raise SystemExit(f"MVN {name}: mean-only MVN is not supported")
        axes = _int_list(a["reduction_axes"]) if a.get("reduction_axes") else list(range(2, rank))
        if sorted(axes) != list(range(2, rank)) or rank < 3:
            raise SystemExit(f"MVN {name}: reduction axes {axes} on rank {rank} are not per-channel")
        c = ins[0].dims[1]
        scale = b.const_name(Val([c], const=np.ones(c, np.float32)), f"{name}/scale")
        bias = b.const_name(Val([c], const=np.zeros(c, np.float32)), f"{name}/bias")
        return one("InstanceNormalization", [data(0), scale, bias], epsilon=float(a["eps"]))

    if t in ("MaxPool", "AvgPool"):
        pad = a.get("auto_pad", "explicit")
        if pad not in ("explicit", "notset", ""):
            raise SystemExit(f"{t} {name}: auto_pad {pad} not supported")
        kw = dict(kernel_shape=_int_list(a["kernel"]), strides=_int_list(a["strides"]),
                  pads=_int_list(a["pads_begin"]) + _int_list(a["pads_end"]),
                  ceil_mode=int(a.get("rounding_type", "floor").lower() == "ceil"))
        if t == "AvgPool":
            kw["count_include_pad"] = 0 if _bool(a.get("exclude-pad")) else 1
            return one("AveragePool", [data(0)], **kw)
        return one("MaxPool", [data(0)], **kw)

    if t == "MatMul":
        if _bool(a.get("transpose_a")):
            raise SystemExit(f"MatMul {name}: transpose_a is not supported")
        bv = ins[1]
        if _bool(a.get("transpose_b")):
            if bv.const is None:
                raise SystemExit(f"MatMul {name}: transpose_b of a non-constant is not supported")
            bv = Val(list(bv.const.T.shape), const=np.ascontiguousarray(np.swapaxes(bv.const, -1, -2)))
        return one("MatMul", [data(0), b.const_name(bv, f"{name}/b")])

    if t == "PriorBoxClustered":
        if not all_const:
            raise SystemExit(f"PriorBoxClustered {name}: feature map or image size depends on the batch")
        r = prior_box_clustered(a, ins[0].const.reshape(-1), ins[1].const.reshape(-1))
        return [Val(list(r.shape), const=r)]

    raise SystemExit(f"IR layer type {t} ({name}) is not supported by this converter")


def build_onnx(ir: Ir, kind: str):
    """The ONNX model for an IR; for detectors also the DetectionOutput attributes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = Builder(ir)
    vals: dict[tuple[str, str], Val] = {}
    results: list[Val] = []
    det_layer = None
    det_inputs: list[Val] = []
    inputs = []
    for lid in ir.order:
        layer = ir.layers[lid]
        if layer.type == "Parameter":
            dims = _int_list(layer.attrs["shape"])
            if dims[0] != 1:
                raise SystemExit(f"Parameter {layer.name}: batch {dims[0]} (expected 1)")
            if layer.attrs["element_type"] not in (F16, F32):
                raise SystemExit(f"Parameter {layer.name}: element type {layer.attrs['element_type']}")
            nm = b.fresh(layer.name)
            # f16 in the IR; float32 here (pixel values 0..255 are exact in both).
            inputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["N"] + dims[1:]))
            (port,) = layer.out_ports
            vals[(lid, port)] = Val(dims, name=nm)
            continue
        if layer.type == "Const":
            (port,) = layer.out_ports
            vals[(lid, port)] = Val(list(layer.const.shape), const=layer.const)
            continue
        if layer.type == "Result":
            src = ir.producer(layer, 0)
            if det_layer is None or src[0] != det_layer.id:  # the detectors' Result is cut off
                results.append(vals[src])
            continue
        ins = [vals[ir.producer(layer, i)] for i in range(len(layer.in_ports))]
        if layer.type == "DetectionOutput":
            det_layer, det_inputs = layer, ins
            continue
        outs = convert_layer(b, layer, ins)
        for port, v in zip(layer.out_ports, outs):
            vals[(lid, port)] = v

    outputs, extra = [], {}
    if kind == "detector":
        if det_layer is None:
            raise SystemExit(f"{ir.name}: no DetectionOutput layer")
        loc, conf, priors = det_inputs[:3]
        if priors.const is None:
            raise SystemExit(f"{ir.name}: the priors depend on the batch")
        a = det_layer.attrs
        n_cls = int(a["num_classes"])
        if not _bool(a.get("share_location"), True) or _bool(a.get("variance_encoded_in_target")):
            raise SystemExit(f"{ir.name}: DetectionOutput variant not supported by the numpy decoder")
        if "CENTER_SIZE" not in a.get("code_type", ""):
            raise SystemExit(f"{ir.name}: code type {a.get('code_type')} not supported by the numpy decoder")
        p = priors.const.shape[-1] // 4
        shp = b.const_name(Val([3], const=np.array([0, p, 4], np.int64)), "box_deltas/shape")
        b.node("Reshape", [b.const_name(loc, "loc"), shp], "box_deltas")
        shp = b.const_name(Val([3], const=np.array([0, p, n_cls], np.int64)), "class_probs/shape")
        b.node("Reshape", [b.const_name(conf, "conf"), shp], "class_probs")
        pri = priors.const.reshape(2, p, 4).astype(np.float32)
        b.nodes.append(helper.make_node("Constant", [], ["priors"], name="priors",
                                        value=numpy_helper.from_array(pri, "priors_value")))
        outputs = [helper.make_tensor_value_info("box_deltas", TensorProto.FLOAT, ["N", p, 4]),
                   helper.make_tensor_value_info("class_probs", TensorProto.FLOAT, ["N", p, n_cls]),
                   helper.make_tensor_value_info("priors", TensorProto.FLOAT, [2, p, 4])]
        extra = {"priors": pri, "num_priors": p, "detection_output": {
            "code_type": a["code_type"], "variance_encoded_in_target": _bool(a.get("variance_encoded_in_target")),
            "share_location": _bool(a.get("share_location"), True), "num_classes": n_cls,
            "background_label_id": int(a["background_label_id"]),
            "confidence_threshold": float(a["confidence_threshold"]), "nms_threshold": float(a["nms_threshold"]),
            "top_k": int(a["top_k"]), "keep_top_k": int(a["keep_top_k"]), "normalized": _bool(a.get("normalized")),
            "clip_before_nms": _bool(a.get("clip_before_nms")), "clip_after_nms": _bool(a.get("clip_after_nms")),
            "variances": sorted({tuple(round(float(x), 6) for x in v) for v in pri[1]})}}
    else:
        if len(results) != 1 or results[0].const is not None:
            raise SystemExit(f"{ir.name}: expected one computed output")
        out = results[0]
        final = "reid_embedding"
        b.node("Identity", [out.name], final) if out.name != final else None
        outputs = [helper.make_tensor_value_info(final, TensorProto.FLOAT, ["N"] + out.dims[1:])]

    # keep only what the outputs need
    needed = {o.name for o in outputs}
    kept = []
    for n in reversed(b.nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    kept.reverse()
    inits = [numpy_helper.from_array(arr, nm) for nm, arr in b.inits.items() if nm in needed]
    graph = helper.make_graph(kept, ir.name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER, producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    model.doc_string = (f"OpenVINO Open Model Zoo {ir.name} (Apache-2.0), converted from IR v10 by "
                        f"{PRODUCER} (onnx {onnx.__version__})")
    onnx.checker.check_model(model, full_check=True)
    return model, extra


# ---- comparison with OpenVINO -------------------------------------------------------------------

def footage_frames(path: str | None, every: int, limit: int) -> list[np.ndarray]:
    import cv2
    if not path:
        path = subprocess.run(["bash", str(ROOT / "infra/local/footage.sh")], check=True, capture_output=True,
                              text=True).stdout.strip()
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"cannot open the footage {path}")
    frames, i = [], 0
    while len(frames) < limit:
        ok = cap.grab()
        if not ok:
            break
        if i % every == 0:
            _, img = cap.retrieve()
            h, w = img.shape[:2]
            s = min(640 / w, 480 / h, 1.0)  # as the edge downscales (pipeline.edge.sources.downscale)
            if s < 1.0:
                img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            frames.append(img)
        i += 1
    cap.release()
    if len(frames) < 10:
        raise SystemExit(f"only {len(frames)} frames read from {path}")
    log(f"{len(frames)} frames from {path} (every {every}th, {frames[0].shape[1]}x{frames[0].shape[0]})")
    return frames


def _ov_compiled(xml: Path, extra_outputs: list[str] = ()):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(xml))
    if extra_outputs:
        ops = {op.get_friendly_name(): op for op in model.get_ops()}
        model.add_outputs([ops[n].output(0) for n in extra_outputs])
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})


def _ort(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes (xmin, ymin, xmax, ymax)."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-12)


def detector_input(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    from pipeline.vision.detector import omz_blob
    return omz_blob(frame, h, w)


def compare_detector(model_name: str, xml: Path, onnx_path: Path, extra: dict, frames: list[np.ndarray]) -> bool:
    from pipeline.vision.detector import decode_ssd
    do = extra["detection_output"]
    ir = read_ir(xml)
    det = next(layer for layer in ir.layers.values() if layer.type == "DetectionOutput")
    loc_name, conf_name, prior_name = (ir.layers[ir.producer(det, i)[0]].name for i in range(3))
    compiled = _ov_compiled(xml, [loc_name, conf_name, prior_name])
    sess = _ort(onnx_path)
    _, _, h, w = (d.get_length() for d in compiled.inputs[0].get_partial_shape())
    ok = True
    worst_iou, worst_score, unmatched, n_cmp, raw_loc, raw_conf, prior_diff = 1.0, 0.0, 0, 0, 0.0, 0.0, 0.0
    t_ov, t_onnx = [], []
    for k, frame in enumerate(frames):
        x = detector_input(frame, h, w)
        t = time.perf_counter()
        res = compiled([x.astype(np.float16)])
        t_ov.append(time.perf_counter() - t)
        t = time.perf_counter()
        deltas, probs, priors = sess.run(["box_deltas", "class_probs", "priors"], {sess.get_inputs()[0].name: x})
        t_onnx.append(time.perf_counter() - t)
        ov_det = res[compiled.outputs[0]].reshape(-1, 7)
        ov_loc = res[compiled.outputs[1]].reshape(deltas.shape)
        ov_conf = res[compiled.outputs[2]].reshape(probs.shape)
        ov_pri = res[compiled.outputs[3]].reshape(priors.shape)
        raw_loc = max(raw_loc, float(np.abs(ov_loc - deltas).max()))
        raw_conf = max(raw_conf, float(np.abs(ov_conf - probs).max()))
        prior_diff = max(prior_diff, float(np.abs(ov_pri - priors).max()),
                         float(np.abs(extra["priors"] - priors).max()))
        ov_det = ov_det[: np.argmax(ov_det[:, 0] < 0) if (ov_det[:, 0] < 0).any() else len(ov_det)]
        ov_boxes, ov_scores = ov_det[:, 3:7], ov_det[:, 2]
        if k == 0 and len(ov_det):
            labels = set(ov_det[:, 1].astype(int).tolist())
            if labels - {0}:
                log(f"unexpected OpenVINO labels {labels}")
                ok = False
        boxes, scores = decode_ssd(deltas[0], probs[0], priors, score_threshold=do["confidence_threshold"],
                                   iou_threshold=do["nms_threshold"], top_k=do["top_k"], keep_top_k=do["keep_top_k"],
                                   label=1 - do["background_label_id"])
        for (ab, as_), (bb, bs) in (((ov_boxes, ov_scores), (boxes, scores)), ((boxes, scores), (ov_boxes, ov_scores))):
            sel = as_ >= DET_REPORT_SCORE
            cand = bs >= DET_MATCH_SCORE
            if not sel.any():
                continue
            n_cmp += int(sel.sum())
            if not cand.any():
                unmatched += int(sel.sum())
                continue
            iou = _iou(ab[sel], bb[cand])
            j = iou.argmax(1)
            best = iou[np.arange(len(j)), j]
            unmatched += int((best < 0.5).sum())
            m = best >= 0.5
            if m.any():
                worst_iou = min(worst_iou, float(best[m].min()))
                worst_score = max(worst_score, float(np.abs(as_[sel][m] - bs[cand][j[m]]).max()))
    print(f"{model_name}: {len(frames)} frames; priors max |diff| vs OpenVINO PriorBoxClustered {prior_diff:.2e}; "
          f"raw deltas max |diff| {raw_loc:.2e}, class probabilities max |diff| {raw_conf:.2e}; "
          f"boxes >= {DET_REPORT_SCORE} (both directions, {n_cmp} comparisons): min IoU with twin {worst_iou:.4f}, "
          f"max score diff {worst_score:.5f}, without twin {unmatched}; "
          f"median ms OpenVINO {1000 * np.median(t_ov):.1f}, onnxruntime {1000 * np.median(t_onnx):.1f}")
    if prior_diff > TOL_PRIORS:
        log(f"FAIL {model_name}: priors differ from OpenVINO's by {prior_diff}")
        ok = False
    if worst_iou < TOL_DET_IOU or worst_score > TOL_DET_SCORE or unmatched:
        log(f"FAIL {model_name}: boxes out of tolerance (IoU >= {TOL_DET_IOU}, score within {TOL_DET_SCORE}, "
            f"every box with a twin)")
        ok = False
    # dynamic batch: two frames at once give the same outputs as one by one
    xs = np.concatenate([detector_input(f, h, w) for f in frames[:3]])
    d_b, p_b = sess.run(["box_deltas", "class_probs"], {sess.get_inputs()[0].name: xs})
    diff = 0.0
    for i in range(len(xs)):
        d1, p1 = sess.run(["box_deltas", "class_probs"], {sess.get_inputs()[0].name: xs[i:i + 1]})
        diff = max(diff, float(np.abs(d1 - d_b[i:i + 1]).max()), float(np.abs(p1 - p_b[i:i + 1]).max()))
    print(f"{model_name}: batch of {len(xs)} vs one by one: max |diff| {diff:.2e}")
    if diff > TOL_BATCH_DIFF:
        log(f"FAIL {model_name}: batched outputs differ")
        ok = False
    return ok and worst_iou >= TOL_DET_IOU


def person_crops(frames: list[np.ndarray], ir_dir: Path, limit: int) -> list[np.ndarray]:
    """Person crops for the re-id check: boxes >= 0.5 from OpenVINO's own person-detection-0200."""
    compiled = _ov_compiled(ir_dir / "person-detection-0200.xml")
    _, _, h, w = (d.get_length() for d in compiled.inputs[0].get_partial_shape())
    crops = []
    for frame in frames:
        det = compiled([detector_input(frame, h, w).astype(np.float16)])[compiled.outputs[0]].reshape(-1, 7)
        fh, fw = frame.shape[:2]
        for _, _, s, x1, y1, x2, y2 in det:
            if s < 0.5:
                continue
            x1, x2 = int(np.clip(x1 * fw, 0, fw)), int(np.clip(x2 * fw, 0, fw))
            y1, y2 = int(np.clip(y1 * fh, 0, fh)), int(np.clip(y2 * fh, 0, fh))
            if x2 - x1 >= 4 and y2 - y1 >= 8:
                crops.append(frame[y1:y2, x1:x2])
        if len(crops) >= limit:
            break
    return crops[:limit]


def compare_reid(model_name: str, xml: Path, onnx_path: Path, crops: list[np.ndarray]) -> bool:
    from pipeline.vision.reid import crop_blob
    compiled = _ov_compiled(xml)
    sess = _ort(onnx_path)
    inp = sess.get_inputs()[0].name
    x = np.concatenate([crop_blob(c, 256, 128) for c in crops])
    ov_emb = np.concatenate([compiled([x[i:i + 1].astype(np.float16)])[compiled.outputs[0]] for i in range(len(x))])
    one = np.concatenate([sess.run(None, {inp: x[i:i + 1]})[0] for i in range(len(x))])
    batched = np.concatenate([sess.run(None, {inp: x[i:i + 16]})[0] for i in range(0, len(x), 16)])

    def unit(e):
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    cos = (unit(ov_emb) * unit(one)).sum(1)
    bdiff = float(np.abs(unit(one) - unit(batched)).max())
    rel = float(np.abs(ov_emb - one).max() / np.abs(ov_emb).max())
    print(f"{model_name}: {len(x)} person crops; cosine(ONNX, OpenVINO) min {cos.min():.7f} "
          f"(1 - cosine at most {max(0.0, 1 - float(cos.min())):.1e}); max |diff| relative to max |value| {rel:.2e}; batch 16 vs one by one "
          f"(unit vectors) max |diff| {bdiff:.2e}")
    ok = True
    if cos.min() < TOL_REID_COSINE:
        log(f"FAIL {model_name}: cosine {cos.min():.5f} < {TOL_REID_COSINE}")
        ok = False
    if bdiff > TOL_BATCH_DIFF:
        log(f"FAIL {model_name}: batched embeddings differ by {bdiff}")
        ok = False
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, metavar="IR_DIR|OUT.onnx",
                    help="the IR folder (as --ir-dir), or an ONNX file named as in MODELS (e.g. "
                         "models/person_reid_0288.onnx): convert that model only, to that path")
    ap.add_argument("--ir-dir", type=Path, default=DEFAULT_IR_DIR, help="folder of the IR files (%(default)s)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models", help="where the ONNX files go (%(default)s)")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS), metavar="NAME",
                    help=f"models to convert (default: {' '.join(DEFAULT_MODELS)}; also person-detection-0202)")
    ap.add_argument("--footage", help="video for the comparison (default: bash infra/local/footage.sh)")
    ap.add_argument("--frames", type=int, default=40, help="frames compared (every 20th of the clip)")
    ap.add_argument("--crops", type=int, default=160, help="person crops compared for the re-id models")
    ap.add_argument("--no-check", action="store_true", help="convert only, skip the OpenVINO comparison")
    args = ap.parse_args(argv)
    targets: dict[str, Path] = {}  # model -> explicit output path
    by_file = {fname: m for m, (_, fname) in MODELS.items()}
    for p in args.paths:
        if p.suffix == ".onnx":
            if p.name not in by_file:
                ap.error(f"{p.name} is not one of {', '.join(by_file)}")
            targets[by_file[p.name]] = p
        else:
            args.ir_dir = p
    if targets:
        args.models = list(targets)
    sys.path.insert(0, str(ROOT))  # the run-time decoding and preprocessing are the project's own

    import onnx
    ir_dir = args.ir_dir.resolve()
    log(f"IR folder {ir_dir}")
    needed = list(args.models)
    if not args.no_check and any(MODELS[m][0] == "reid" for m in needed) and "person-detection-0200" not in needed:
        needed.append("person-detection-0200")  # its boxes give the person crops
    check_ir_hashes(ir_dir, needed)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for m in args.models:
        kind, fname = MODELS[m]
        ir = read_ir(ir_dir / f"{m}.xml")
        model, extra = build_onnx(ir, kind)
        out = targets.get(m, args.out_dir / fname)
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(out))
        built[m] = (out, extra)
        ins = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
        outs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
                for o in model.graph.output]
        log(f"{m}: {len(model.graph.node)} nodes, input {ins}, outputs {outs}")
        if kind == "detector":
            log(f"{m}: DetectionOutput {extra['detection_output']}")

    ok = True
    if not args.no_check:
        import openvino
        import onnxruntime
        log(f"comparing with openvino {openvino.__version__} (onnxruntime {onnxruntime.__version__})")
        frames = footage_frames(args.footage, 20, args.frames)
        for m in args.models:
            out, extra = built[m]
            if MODELS[m][0] == "detector":
                ok &= compare_detector(m, ir_dir / f"{m}.xml", out, extra, frames)
        reid = [m for m in args.models if MODELS[m][0] == "reid"]
        if reid:
            crops = person_crops(frames, ir_dir, args.crops)
            for m in reid:
                ok &= compare_reid(m, ir_dir / f"{m}.xml", built[m][0], crops)

    print()
    manifest = ROOT / "models" / "manifest.yaml"
    listed = manifest.read_text() if manifest.is_file() else ""
    for m, (out, _) in built.items():
        sha = sha256_file(out)
        note = "= models/manifest.yaml" if sha in listed else "NOT in models/manifest.yaml"
        print(f"sha256 {sha}  {out.stat().st_size:>9} bytes  {out}  ({note})")
    if not ok:
        log("FAILED: at least one model is out of tolerance (see above)")
        return 1
    log("all models within tolerance" if not args.no_check else "converted (no comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
