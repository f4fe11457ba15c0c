"""An upper reference for mask IoU: a mask drawn by someone who can see the sharp image.

    python scripts/mask_oracle.py DATASET [--limit N]

For every local sample of a synthetic dataset (``m2ae synth``) the oracle marks the pixels
where the blurred image visibly differs from the sharp one: the largest channel difference
(0..255), averaged over a square window, above a threshold, then dilated by a few pixels.
It prints the mean local IoU against the ground-truth mask for a grid of (window,
threshold, dilation) and names the best cell.

Why: the ground-truth mask marks every pixel an object covers while it moves, also where a
smooth object looks the same blurred or not, and noise and JPEG hide small changes. No
predictor sees the sharp image, so the best cell says how much of the mask is visible at
all: a learned mask well below it has room to grow, one near it is at the ceiling of
local evidence and can only grow by reasoning about whole objects.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

WINDOWS = (1, 5, 9, 15)
THRESHOLDS = (4, 8, 12, 16, 24)
DILATIONS = (0, 4, 8)


def windowed_difference(blur: torch.Tensor, sharp: torch.Tensor, window: int) -> torch.Tensor:
    """``[1,1,H,W]``: the largest channel difference (0..255) of two ``[1,3,H,W]`` images
    (0..1), averaged over a ``window`` x ``window`` square."""
    difference = (blur - sharp).abs().amax(1, keepdim=True) * 255.0
    if window > 1:
        difference = F.avg_pool2d(difference, window, 1, window // 2,
                                  count_include_pad=False)
    return difference


def mark(difference: torch.Tensor, threshold: float, dilation: int) -> torch.Tensor:
    """Bool ``[H,W]``: ``difference`` above ``threshold``, dilated by ``dilation`` px."""
    marked = (difference > threshold).float()
    if dilation > 0:
        marked = F.max_pool2d(marked, 2 * dilation + 1, 1, dilation)
    return marked[0, 0] > 0


def visible_change(blur: torch.Tensor, sharp: torch.Tensor, *, window: int,
                   threshold: float, dilation: int) -> torch.Tensor:
    """Bool ``[H,W]``: where ``blur`` and ``sharp`` (``[1,3,H,W]``, 0..1) visibly differ."""
    return mark(windowed_difference(blur, sharp, window), threshold, dilation)


def oracle_grid(dataset, *, limit: int | None = None, windows=WINDOWS,
                thresholds=THRESHOLDS, dilations=DILATIONS) -> tuple[list[dict], int]:
    """``(rows, samples)``: one row per cell, ``window``, ``threshold``, ``dilation`` and
    ``iou`` (mean over the local samples that have a mask)."""
    from m2ae_core import metrics
    from m2ae_core.evaluate import EvalError, _read_rgb, masked_samples, sample_kind

    scores = {(w, t, d): [] for w in windows for t in thresholds for d in dilations}
    local = 0
    for sample, blur, truth in masked_samples(dataset):
        if limit is not None and local >= limit:
            break
        if sample_kind(sample, truth) != "local":
            continue
        sharp = _read_rgb(sample.sharp)
        local += 1
        for window in windows:  # the windowed difference once per window, not per cell
            difference = windowed_difference(blur, sharp, window)
            for threshold in thresholds:
                for dilation in dilations:
                    marked = mark(difference, threshold, dilation).numpy()
                    scores[window, threshold, dilation].append(metrics.mask_iou(marked, truth))
    if not local:
        raise EvalError(f"{dataset} has no local samples with a mask")
    rows = [{"window": w, "threshold": t, "dilation": d, "iou": float(np.mean(v))}
            for (w, t, d), v in scores.items()]
    return rows, local


def report(rows: list[dict], samples: int) -> str:
    best = max(rows, key=lambda r: r["iou"])
    lines = ["| window (px) | threshold (of 255) | dilation (px) | mean local IoU |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        cell = f"{r['iou']:.3f}"
        lines.append(f"| {r['window']} | {r['threshold']:g} | {r['dilation']} | "
                     + (f"**{cell}** |" if r is best else f"{cell} |"))
    lines.append(f"\nBest over {samples} local samples: IoU {best['iou']:.3f} (window "
                 f"{best['window']}, threshold {best['threshold']:g}, dilation "
                 f"{best['dilation']}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="synthetic dataset folder (m2ae synth)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N local samples")
    args = parser.parse_args(argv)
    from m2ae_core.evaluate import EvalError

    try:
        rows, samples = oracle_grid(args.dataset, limit=args.limit)
    except EvalError as error:
        print(f"mask_oracle: {error}", file=sys.stderr)
        return 2
    print(report(rows, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
