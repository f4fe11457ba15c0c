"""Camera-shake decisions of a model with a shake head, over shake thresholds.

    python scripts/shake_sweep.py DATASET --weights W [--thresholds 0.3 0.5 0.7]

For each threshold tau a frame counts as shaken when its shake probability exceeds tau and is
then marked blurred everywhere; otherwise its mask is the per-pixel (local) head's alone at
0.5. Reports the local and global samples' mean mask IoU and how many frames each flags:
whether the image-level decision, not the per-pixel one, is what limits the mask. Runs only
up to the first M2AS stage (``analyze``).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def shake_and_local_mask(model, image) -> tuple[float, np.ndarray]:
    """The first M2AS stage's shake probability and its local mask at input size."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        info = model.analyze(image)
    if info is None or info.shake_logit is None:
        raise ValueError("the model has no shake head (config mask_shake_head)")
    local = torch.softmax(info.local_logits.float(), 1)[:, :1] > 0.5
    h, w = image.shape[-2:]
    full = F.interpolate(local.float(), scale_factor=info.scale, mode="nearest")[..., :h, :w]
    return float(torch.sigmoid(info.shake_logit.float()).flatten()[0]), full[0, 0].numpy() > 0.5


def sweep(model, dataset, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """``{"local": n, "global": n, "rows": [{threshold, local_iou, global_iou,
    local_flagged, global_flagged}, ...]}``."""
    from m2ae_core import metrics
    from m2ae_core.evaluate import _read_mask, _read_rgb, find_samples, sample_kind

    frames = []  # (is global, shake probability, IoU of the local mask, IoU if all marked)
    for sample in find_samples(dataset)[1]:
        if sample.mask is None:
            continue
        blur = _read_rgb(sample.blur)
        truth = _read_mask(sample.mask, tuple(blur.shape[-2:]), sample.name)
        shake, local = shake_and_local_mask(model, blur)
        frames.append((sample_kind(sample, truth) == "global", shake,
                       metrics.mask_iou(local, truth), float(truth.mean())))
    if not frames:
        raise ValueError(f"{dataset} has no samples with a ground-truth mask")
    rows = []
    for tau in thresholds:
        row = {"threshold": tau}
        for kind, is_global in (("local", False), ("global", True)):
            chosen = [f for f in frames if f[0] == is_global]
            flagged = [f[1] > tau for f in chosen]
            ious = [f[3] if flag else f[2] for f, flag in zip(chosen, flagged)]
            row[f"{kind}_iou"] = float(np.mean(ious)) if chosen else None
            row[f"{kind}_flagged"] = int(sum(flagged))
        rows.append(row)
    return {"local": sum(not f[0] for f in frames), "global": sum(f[0] for f in frames),
            "rows": rows}


def report(result: dict) -> str:
    def iou(value):
        return "–" if value is None else f"{value:.3f}"

    lines = [f"{result['local']} local and {result['global']} global samples", "",
             "| shake threshold | local IoU | local frames flagged | global IoU | "
             "global frames flagged |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['threshold']:.2f} | {iou(r['local_iou'])} | {r['local_flagged']} | "
              f"{iou(r['global_iou'])} | {r['global_flagged']} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="synthetic dataset folder (m2ae synth)")
    parser.add_argument("--weights", default=None, help="weights file (default: bundled)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS)
    args = parser.parse_args(argv)
    if not all(0.0 <= t <= 1.0 for t in args.thresholds):
        parser.error("thresholds must lie within 0..1")
    from m2ae_core import load_model
    from m2ae_core.evaluate import EvalError

    try:
        result = sweep(load_model(args.weights), args.dataset, args.thresholds)
    except (EvalError, ValueError) as error:
        print(f"shake_sweep: {error}", file=sys.stderr)
        return 2
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
