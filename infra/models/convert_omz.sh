#!/usr/bin/env bash
# Converts the Open Model Zoo person detectors (person-detection-0200, -0201) and re-identification
# models (person-reidentification-retail-0288, -0286) from the OpenVINO IR files in
# ../shared/models/openvino/ to ONNX in models/, and checks them against the `openvino` runtime on
# vtest.avi frames: infra/models/convert_omz.py does the work (see its docstring); this wrapper
# gives it a throwaway venv with the pinned tools, so openvino and onnx never enter the project's
# environment.
#
#   bash infra/models/convert_omz.sh [--ir-dir DIR] [--out-dir DIR] [--models NAME ...] [--no-check]
#       PYTHON=python3.11   interpreter for the venv
#       VENV=/path/venv     reuse (or create and keep) a venv there instead of a throwaway one
#
# The conversion is byte-reproducible with these tool versions: the sha256 it prints must equal
# models/manifest.yaml's (the script says whether it does). Exit status 1 when an IR file's hash
# differs from PROVENANCE.md or a converted model disagrees with OpenVINO beyond tolerance.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
# The conversion and comparison toolchain, pinned (openvino only to run the IR as the reference).
TOOLS=(onnx==1.23.2 protobuf==7.36.2 numpy==2.4.6 onnxruntime==1.32.0 opencv-python-headless==4.14.0.94
       openvino==2026.4.1)

log() { printf '[convert_omz] %s\n' "$*" >&2; }
die() { printf '[convert_omz] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=python3.11 or similar)"
if [ -n "${VENV:-}" ]; then
  venv="$VENV"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/convert-omz.XXXXXX")"; trap 'rm -rf "$work"' EXIT
  venv="$work/venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  log "venv in $venv ($("$PY" --version))"
  "$PY" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${TOOLS[@]}" || die "installing ${TOOLS[*]} failed"

# the footage for the comparison (downloaded once by the project's own script)
if [[ " $* " != *" --no-check "* && " $* " != *" --footage "* ]]; then
  FOOTAGE="$(bash "$ROOT/infra/local/footage.sh")" || die "infra/local/footage.sh failed (the comparison needs vtest.avi)"
  set -- --footage "$FOOTAGE" "$@"
fi
cd "$ROOT"
status=0
"$venv/bin/python" "$ROOT/infra/models/convert_omz.py" "$@" || status=$?
exit "$status"
