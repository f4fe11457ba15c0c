"""Mask IoU and share of pixels marked, over blur thresholds, on a dataset's local samples.

    python scripts/threshold_sweep.py DATASET [--weights W] [--thresholds 0.5 0.7 0.9]
    python scripts/threshold_sweep.py DATASET --weights W --shake [--thresholds ...]

Runs only the mask predictor (``analyze``), so a sweep costs a fraction of ``m2ae eval``.
Tells whether a different threshold would fix a poor mask: if IoU stays low at every
threshold, the probabilities themselves do not rank the blurred pixels first.

``--shake`` (a model with a shake head, config ``mask_shake_head``) sweeps the shake
threshold instead: a frame whose shake probability exceeds it counts as shaken and is marked
blurred everywhere, any other keeps the per-pixel (local) head's mask at 0.5. Reports the
local and the global samples' mean IoU and how many frames each flags: whether the
image-level decision, not the per-pixel one, is what limits the mask.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def sweep(model, dataset, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """``{"samples": n, "true_fraction": mean, "rows": [{threshold, iou, marked}, ...]}``."""
    from m2ae_core import analyze, metrics
    from m2ae_core.evaluate import _read_mask, _read_rgb, find_samples

    ious = {t: [] for t in thresholds}
    marked = {t: [] for t in thresholds}
    true_fraction = []
    for sample in find_samples(dataset)[1]:
        if sample.mask is None:
            continue
        blur = _read_rgb(sample.blur)
        truth = _read_mask(sample.mask, tuple(blur.shape[-2:]), sample.name)
        if truth.all():  # global samples: every pixel is blurred, nothing to rank
            continue
        true_fraction.append(truth.mean())
        for t in thresholds:
            used = analyze(model, blur, threshold=t).mask
            ious[t].append(metrics.mask_iou(used, truth))
            marked[t].append(used.mean())
    if not true_fraction:
        raise ValueError(f"{dataset} has no local samples with a ground-truth mask")
    rows = [{"threshold": t, "iou": float(np.mean(ious[t])), "marked": float(np.mean(marked[t]))}
            for t in thresholds]
    return {"samples": len(true_fraction), "true_fraction": float(np.mean(true_fraction)),
            "rows": rows}


def report(result: dict) -> str:
    lines = [f"{result['samples']} local samples, {100 * result['true_fraction']:.1f} % of "
             "pixels truly blurred", "", "| threshold | mask IoU | marked blurred |",
             "|---:|---:|---:|"]
    lines += [f"| {r['threshold']:.2f} | {r['iou']:.3f} | {100 * r['marked']:.1f} % |"
              for r in result["rows"]]
    return "\n".join(lines)


def shake_and_local_mask(model, image) -> tuple[float, np.ndarray]:
    """The first M2AS stage's shake probability and its local mask at input size."""
    import torch

    with torch.inference_mode():
        info = model.analyze(image)
    if info is None or info.shake_logit is None:
        raise ValueError("the model has no shake head (config mask_shake_head)")
    local = torch.softmax(info.local_logits.float(), 1)[:, :1] > 0.5
    full = info.at_input(local, tuple(image.shape[-2:]))  # the grid-to-pixels rule of analyze
    return float(torch.sigmoid(info.shake_logit.float()).flatten()[0]), full[0, 0].numpy() > 0.5


def shake_sweep(model, dataset, thresholds=DEFAULT_THRESHOLDS) -> dict:
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


def shake_report(result: dict) -> str:
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
    parser.add_argument("--shake", action="store_true",
                        help="sweep the shake head's threshold instead (see above)")
    args = parser.parse_args(argv)
    if not all(0.0 <= t <= 1.0 for t in args.thresholds):
        parser.error("thresholds must lie within 0..1")
    from m2ae_core import load_model
    from m2ae_core.evaluate import EvalError

    try:
        run, show = (shake_sweep, shake_report) if args.shake else (sweep, report)
        result = run(load_model(args.weights), args.dataset, args.thresholds)
    except (EvalError, ValueError) as error:
        print(f"threshold_sweep: {error}", file=sys.stderr)
        return 2
    print(show(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
