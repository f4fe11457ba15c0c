"""Speed and agreement of the network's floating-point types on one photo crop.

    python scripts/dtype_speed.py PHOTO [--size 1024] [--dtypes fp32 bf16 fp16] [--weights W]

For each dtype: the model in that dtype restores the centre crop once to warm up, then
``--repeats`` times; prints the median time, the share of pixels processed, the PSNR of the
result against the first dtype's, and how many mask pixels agree with it. Used for the
precision table in the README (session 17).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from m2ae_core import deblur, imageio, load_model
from m2ae_core.metrics import psnr


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    side = min(size, image.width, image.height)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def compare(image: Image.Image, dtypes: list[str], weights: str | None, repeats: int) -> list[dict]:
    rows, reference = [], None
    for name in dtypes:
        model = load_model(weights, dtype=name)
        deblur(model, image)  # warm-up: kernels and allocations of this size
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = deblur(model, image)
            seconds.append(time.perf_counter() - start)
        pixels = np.asarray(result.image)
        if reference is None:
            reference = (pixels, result.mask)
        rows.append({"dtype": name, "seconds": statistics.median(seconds),
                     "processed": result.stats["fraction_processed"],
                     "psnr_vs_first": psnr(pixels, reference[0]),
                     "mask_agreement": float((result.mask == reference[1]).mean())})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--size", type=int, default=1024, help="centre crop side (default 1024)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--weights", default=None, help="default: the bundled model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = centre_crop(imageio.read_image(args.photo).convert("RGB"), args.size)
    print(f"{args.photo}: {image.width}x{image.height} crop, {torch.get_num_threads()} threads")
    for row in compare(image, args.dtypes, args.weights, args.repeats):
        print(f"{row['dtype']:>5}: median {row['seconds']:.2f} s, processed "
              f"{row['processed']:.1%}, vs {args.dtypes[0]} {row['psnr_vs_first']:.1f} dB, mask "
              f"agreement {row['mask_agreement']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
