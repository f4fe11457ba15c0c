"""Wall time and MACs of the pruned vs dense path (and the plain backbone) on one image size.

    python benchmarks/pruned_vs_dense.py --preset paper --size 1024 --fraction 0.1

Random weights (timing does not depend on training); blob-shaped user mask of the given
fraction; median of --repeats runs after one warm-up. Prints a table and writes --json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from m2ae_core import build_model
from m2ae_core.macs import StagePixels, count_macs


def blob_mask(height: int, width: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """Smooth random blobs covering ``fraction`` of the image (not scattered pixels)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, max(2, height // 128), max(2, width // 128), generator=gen)
    smooth = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    if fraction <= 0:
        return torch.zeros(1, 1, height, width, dtype=torch.bool)
    cut = smooth.flatten().quantile(1 - fraction) if fraction < 1 else smooth.min()
    return smooth >= cut


def activate_all_branches_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fresh models have beta = gamma = 0 (every block an identity) and a zero motion analyzer;
    give them small random values so the pruned-vs-dense check compares real computation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif "motion_analyzer" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * (1.0 if name.endswith("bias") else 0.01))
    return model


def time_call(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--baseline", default="nafnet-w32")
    parser.add_argument("--size", default="1024", help="N or HxW")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x")) if "x" in args.size else (int(args.size),) * 2

    torch.manual_seed(0)
    model = activate_all_branches_(build_model(args.preset)).eval()
    baseline = activate_all_branches_(build_model(args.baseline)).eval()
    image = torch.rand(1, 3, h, w)
    mask = blob_mask(h, w, args.fraction)
    rows = []
    with torch.inference_mode():
        t_pruned, pruned = time_call(lambda: model(image, mask=mask, pruned=True), args.repeats)
        t_dense, dense = time_call(lambda: model(image, mask=mask, pruned=False), args.repeats)
        t_base, _ = time_call(lambda: baseline(image), args.repeats)
    counts = {s.stage: StagePixels(s.masked_pixels, s.dilated_pixels) for s in pruned.stages}
    diff = float((pruned.image - dense.image).abs().max())
    rows.append(("pruned", args.preset, count_macs(model.config, h, w, counts), t_pruned))
    rows.append(("dense", args.preset, count_macs(model.config, h, w), t_dense))
    rows.append(("plain", args.baseline, count_macs(baseline.config, h, w), t_base))
    print(f"{h}x{w}, mask {float(mask.float().mean()):.1%} of pixels, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'path':8s} {'model':12s} {'GMAC':>9s} {'seconds':>8s}")
    for path, name, macs, seconds in rows:
        print(f"{path:8s} {name:12s} {macs / 1e9:9.1f} {seconds:8.2f}")
    print(f"max |pruned - dense| = {diff:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": [h, w], "fraction": float(mask.float().mean()), "max_abs_diff": diff,
                       "rows": [dict(zip(("path", "model", "macs", "seconds"), r)) for r in rows]},
                      fh, indent=2)


if __name__ == "__main__":
    main()
