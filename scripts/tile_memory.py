"""Peak memory of an untiled ``deblur`` per input pixel: the calibration behind automatic tiling.

Each (model, size) runs in a fresh process (allocator set up as the ``m2ae`` command does)
that restores a random image with an all-blurred mask (the worst case: every pixel is
processed) and reports its peak resident memory (VmHWM) before and after. The growth between
two sizes, divided by the pixels they differ by, is the memory per pixel; divided by the
model's width and 4 bytes, it is the number of float feature maps of that width the forward
holds at its peak (``m2ae_core.tiling.PEAK_MAPS``).

    python scripts/tile_memory.py --models default paper --sizes 1024x768 2048x1536
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly()
import numpy as np, torch
from m2ae_core import build_model, deblur, load_model
from m2ae_core.benchmark.machine import peak_rss_bytes
spec, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = load_model(device="cpu") if spec == "default" else build_model(spec).eval()
rng = np.random.default_rng(0)
image = rng.random((height, width, 3), dtype=np.float32)
mask = np.ones((height, width), np.float32)
before = peak_rss_bytes()
deblur(model, image, mask=mask, tile=0)
print(json.dumps({"model": spec, "width": model.config.width, "size": [width, height],
                  "peak_before": before, "peak_after": peak_rss_bytes()}))
"""


def measure(spec: str, width: int, height: int) -> dict:
    from m2ae_core.memory import with_huge_pages

    done = subprocess.run([sys.executable, "-c", CHILD, spec, str(width), str(height)],
                          capture_output=True, text=True, env=with_huge_pages(), cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{spec} at {width}x{height} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default", "paper"],
                        help="'default' (the bundled model) or preset names")
    parser.add_argument("--sizes", nargs=2, default=["1024x768", "2048x1536"], metavar="WxH",
                        help="a small and a large size")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    rows = []
    for spec in args.models:
        small, large = (measure(spec, w, h) for w, h in sizes)
        grown = large["peak_after"] - small["peak_after"]
        pixels = sizes[1][0] * sizes[1][1] - sizes[0][0] * sizes[0][1]
        per_pixel = grown / pixels
        row = {"model": spec, "width": large["width"], "bytes_per_pixel": per_pixel,
               "maps_of_width": per_pixel / (4 * large["width"]), "runs": [small, large]}
        rows.append(row)
        print(f"{spec}: width {row['width']}, {per_pixel:.0f} bytes per pixel = "
              f"{row['maps_of_width']:.2f} float maps of the width; peak "
              f"{small['peak_after'] / 2**20:.0f} MiB at {args.sizes[0]}, "
              f"{large['peak_after'] / 2**20:.0f} MiB at {args.sizes[1]}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
