"""What a model does to photos that have no motion blur: run it on a dataset's sharp images.

    python scripts/sharp_input_check.py DATASET [--weights W] [--limit N] [--preserve-sharp]

DATASET is a synthetic dataset folder (``m2ae synth``); its ``sharp/`` images are clean (no
blur, no noise), so a model that leaves sharp content alone returns them unchanged. Prints,
per sample and on average, the PSNR of the output against its own input (how far the model
moves an image it should not touch; identical images count as 100 dB, as in ``m2ae eval``),
how much fine detail the output keeps (its mean step between neighbouring pixels over the
input's: below 1 = smoothed, above 1 = sharpened) and the share of pixels in the mask the
model used (all of them false positives).
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from m2ae_core.self_ensemble import ENSEMBLE_SIZES

IDENTICAL_DB = 100.0  # what m2ae eval counts an infinite PSNR as


def detail(image: torch.Tensor) -> float:
    """Mean absolute step between vertically and horizontally neighbouring pixel values."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return float(dx + dy)


def check_sharp_inputs(model, dataset, *, limit: int | None = None,
                       preserve_sharp: bool = False, ensemble: int = 1) -> list[dict]:
    """One row per sample: ``name``, ``psnr`` (output vs the sharp input), ``detail``
    (:func:`detail` of the output over the input's), ``marked``."""
    from m2ae_core import deblur, metrics
    from m2ae_core.evaluate import _read_rgb, find_samples

    samples = find_samples(dataset)[1][:limit]
    rows = []
    for sample in samples:
        sharp = _read_rgb(sample.sharp)
        result = deblur(model, sharp, preserve_sharp=preserve_sharp, ensemble=ensemble)
        value = metrics.psnr(result.image, sharp)
        rows.append({"name": sample.name,
                     "psnr": IDENTICAL_DB if math.isinf(value) else value,
                     "detail": detail(result.image) / max(detail(sharp), 1e-12),
                     "marked": float(np.mean(result.mask))})
    return rows


def report(rows: list[dict]) -> str:
    lines = ["| sample | PSNR output vs input (dB) | detail kept | marked blurred |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['psnr']:.2f} | {r['detail']:.3f} | {100 * r['marked']:.1f} % |"
              for r in rows]
    mean = {key: np.mean([r[key] for r in rows]) for key in ("psnr", "detail", "marked")}
    lines.append(f"| **mean of {len(rows)}** | **{mean['psnr']:.2f}** | **{mean['detail']:.3f}** "
                 f"| **{100 * mean['marked']:.1f} %** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="synthetic dataset folder (m2ae synth)")
    parser.add_argument("--weights", default=None, help="weights file (default: bundled)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N samples")
    parser.add_argument("--preserve-sharp", action="store_true",
                        help="as m2ae deblur --preserve-sharp")
    parser.add_argument("--ensemble", type=int, choices=ENSEMBLE_SIZES, default=1,
                        help="as m2ae deblur --ensemble")
    args = parser.parse_args(argv)
    from m2ae_core import load_model
    from m2ae_core.evaluate import EvalError

    try:
        rows = check_sharp_inputs(load_model(args.weights), args.dataset, limit=args.limit,
                                  preserve_sharp=args.preserve_sharp, ensemble=args.ensemble)
    except EvalError as error:
        print(f"sharp_input_check: {error}", file=sys.stderr)
        return 2
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
