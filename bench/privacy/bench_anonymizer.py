"""Throughput of the privacy core on this machine: descriptors/s through assign_groups, padding per window.

Run: python bench/privacy/bench_anonymizer.py [--dim 256] [--batch 32]
Why: the processor calls assign_groups for every detected person; this shows
the cost per frame-sized batch and per large batch, with production sizes
(1,024 working dims, 1,000 groups).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.privacy import Anonymizer, PrivacyParams, pad_with_fictitious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=256, help="native descriptor size")
    ap.add_argument("--batch", type=int, default=32, help="descriptors per call (people in one frame)")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    params = PrivacyParams.default()
    t0 = time.perf_counter()
    anon = Anonymizer(params, args.dim)
    print(f"setup (projection + hash family): {1000 * (time.perf_counter() - t0):.0f} ms")
    for batch in (args.batch, 4096):
        x = np.abs(rng.standard_normal((batch, args.dim))).astype(np.float32)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            anon.assign_groups(x)
            n += batch
        dt = time.perf_counter() - t0
        print(f"assign_groups, batch {batch:5d}: {n / dt:9.0f} descriptors/s ({1e3 * dt / (n / batch):.2f} ms/call)")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        pad_with_fictitious({int(g): 1 for g in rng.integers(0, 1000, 80)}, params)
        n += 1
    print(f"pad_with_fictitious (80 real occurrences): {1e3 * (time.perf_counter() - t0) / n:.2f} ms per window")


if __name__ == "__main__":
    main()
