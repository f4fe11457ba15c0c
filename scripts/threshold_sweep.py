"""Mask IoU and share of pixels marked, over blur thresholds, on a dataset's local samples.

    python scripts/threshold_sweep.py DATASET [--weights W] [--thresholds 0.5 0.7 0.9]
    python scripts/threshold_sweep.py DATASET --weights W --shake [--thresholds ...]
    python scripts/threshold_sweep.py DATASET --weights W --shake-edges [--sharp-shares ...]

Runs only the mask predictor (``analyze``), so a sweep costs a fraction of ``m2ae eval``.
Tells whether a different threshold would fix a poor mask: if IoU stays low at every
threshold, the probabilities themselves do not rank the blurred pixels first.

``--shake-edges`` does the same for the camera-shake test from sharp edges
(m2ae_core/shake.py): over sharp-edge criteria x thresholds (per mille), a frame with fewer
sharp edges than the threshold is marked whole; the mask otherwise is the heads' own. It
also reports the mean of local and global IoU, the criterion the test's constants were
chosen by.

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
# the grid the camera-shake test's constants were chosen on (docs/results/shake-edges/)
DEFAULT_EDGE_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
DEFAULT_SHARP_SHARES = (0.6, 0.7, 0.8)


def sweep(model, dataset, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """``{"samples": n, "true_fraction": mean, "rows": [{threshold, iou, marked}, ...]}``."""
    from m2ae_core import analyze, metrics
    from m2ae_core.evaluate import masked_samples

    ious = {t: [] for t in thresholds}
    marked = {t: [] for t in thresholds}
    true_fraction = []
    for _, blur, truth in masked_samples(dataset):
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


def edge_share_and_local_mask(model, image, sharp_shares) -> tuple[list, np.ndarray]:
    """The frame's sharp-edge share (per mille, at the test's working scale) for each
    ``sharp_share``, and the heads' own mask at input size (the shake test off)."""
    import torch

    from m2ae_core import analyze
    from m2ae_core.shake import at_working_scale, sharp_edge_share

    small = at_working_scale(image)
    shares = [float(sharp_edge_share(small, sharp_share=k)[0]) for k in sharp_shares]
    with torch.inference_mode():
        local = analyze(model, image, shake_test=False).mask
    return shares, local


def _frames(model, dataset, decide) -> list:
    """(is global, decision scores, IoU of the local mask, IoU if marked whole) per sample."""
    from m2ae_core import metrics
    from m2ae_core.evaluate import masked_samples, sample_kind

    frames = []
    for sample, blur, truth in masked_samples(dataset):
        scores, local = decide(model, blur)
        frames.append((sample_kind(sample, truth) == "global", scores,
                       metrics.mask_iou(local, truth), float(truth.mean())))
    if not frames:
        raise ValueError(f"{dataset} has no samples with a ground-truth mask")
    return frames


def _flag_rows(frames, settings, flagged_by) -> list[dict]:
    """One row per setting: each kind's mean IoU with flagged frames marked whole."""
    rows = []
    for setting in settings:
        row = dict(setting)
        for kind, is_global in (("local", False), ("global", True)):
            chosen = [f for f in frames if f[0] == is_global]
            flagged = [flagged_by(f[1], setting) for f in chosen]
            ious = [f[3] if flag else f[2] for f, flag in zip(chosen, flagged)]
            row[f"{kind}_iou"] = float(np.mean(ious)) if chosen else None
            row[f"{kind}_flagged"] = int(sum(flagged))
        rows.append(row)
    return rows


def _counts(frames) -> dict:
    return {"local": sum(not f[0] for f in frames), "global": sum(f[0] for f in frames)}


def shake_sweep(model, dataset, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """``{"local": n, "global": n, "rows": [{threshold, local_iou, global_iou,
    local_flagged, global_flagged}, ...]}``: frames whose shake probability exceeds the
    threshold are marked whole."""
    frames = _frames(model, dataset, shake_and_local_mask)
    rows = _flag_rows(frames, [{"threshold": t} for t in thresholds],
                      lambda shake, setting: shake > setting["threshold"])
    return {**_counts(frames), "rows": rows}


def edges_sweep(model, dataset, thresholds=DEFAULT_EDGE_THRESHOLDS,
                sharp_shares=DEFAULT_SHARP_SHARES) -> dict:
    """As :func:`shake_sweep` for the camera-shake test from sharp edges
    (m2ae_core/shake.py): frames with fewer sharp edges than the threshold (per mille) are
    marked whole, for each ``sharp_share`` x threshold; rows add ``sharp_share``."""
    frames = _frames(model, dataset,
                     lambda m, image: edge_share_and_local_mask(m, image, sharp_shares))
    settings = [{"sharp_share": k, "threshold": t} for k in sharp_shares for t in thresholds]
    column = {k: i for i, k in enumerate(sharp_shares)}  # a frame's scores follow sharp_shares
    rows = _flag_rows(frames, settings, lambda shares, setting:
                      shares[column[setting["sharp_share"]]] < setting["threshold"])
    return {**_counts(frames), "rows": rows}


def shake_report(result: dict) -> str:
    def iou(value):
        return "–" if value is None else f"{value:.3f}"

    edges = "sharp_share" in result["rows"][0]
    lines = [f"{result['local']} local and {result['global']} global samples", ""]
    if edges:
        lines += ["| sharp share | fewer sharp edges than (per mille) | local IoU | local frames "
                  "flagged | global IoU | global frames flagged | mean IoU |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines += ["| shake threshold | local IoU | local frames flagged | global IoU | "
                  "global frames flagged |", "|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        cells = [f"{r['threshold']:.2f}", iou(r["local_iou"]), str(r["local_flagged"]),
                 iou(r["global_iou"]), str(r["global_flagged"])]
        if edges:
            both = (None if r["local_iou"] is None or r["global_iou"] is None
                    else (r["local_iou"] + r["global_iou"]) / 2)
            cells = [f"{r['sharp_share']:.2f}"] + cells + [iou(both)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="synthetic dataset folder (m2ae synth)")
    parser.add_argument("--weights", default=None, help="weights file (default: bundled)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help=f"default {' '.join(map(str, DEFAULT_THRESHOLDS))}; with "
                             f"--shake-edges, per mille: {' '.join(map(str, DEFAULT_EDGE_THRESHOLDS))}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--shake", action="store_true",
                      help="sweep the shake head's threshold instead (see above)")
    mode.add_argument("--shake-edges", action="store_true",
                      help="sweep the camera-shake test from sharp edges instead (see above)")
    parser.add_argument("--sharp-shares", type=float, nargs="+", default=DEFAULT_SHARP_SHARES,
                        help="with --shake-edges: the sharp-edge criteria to try")
    args = parser.parse_args(argv)
    if args.shake_edges:
        thresholds = args.thresholds or DEFAULT_EDGE_THRESHOLDS
        if not all(t >= 0 for t in thresholds) or not all(0 < k <= 1 for k in args.sharp_shares):
            parser.error("edge thresholds must be >= 0 and sharp shares within (0, 1]")
    else:
        thresholds = args.thresholds or DEFAULT_THRESHOLDS
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            parser.error("thresholds must lie within 0..1")
    from m2ae_core import load_model
    from m2ae_core.evaluate import EvalError

    try:
        model = load_model(args.weights)
        if args.shake_edges:
            result, show = edges_sweep(model, args.dataset, thresholds, args.sharp_shares), \
                shake_report
        else:
            run, show = (shake_sweep, shake_report) if args.shake else (sweep, report)
            result = run(model, args.dataset, thresholds)
    except (EvalError, ValueError) as error:
        print(f"threshold_sweep: {error}", file=sys.stderr)
        return 2
    print(show(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
