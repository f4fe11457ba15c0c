"""Evaluate a model on a folder of blurred/sharp pairs (DESIGN §6) and write a report.

Dataset layouts
---------------
* **synthetic** (``m2ae synth`` / ``write_dataset``): ``blur/NAME.png``, ``sharp/NAME.png``,
  optional ``mask/NAME.png`` (white = blurred), ``trajectory/NAME.npy`` ([2,2,H,W]) and
  ``manifest.json`` (sample order and ``is_global``). Without a manifest the names are the
  image stems of ``blur/`` and a sample is global when its mask is all blurred.
* **pairs** (e.g. the real GoPro pairs): ``<stem>_blur<suffix>.<ext>`` with its partner
  ``<stem>_sharp<suffix>.<ext>`` in one folder (``Flower_blur1.png`` / ``Flower_sharp1.png``),
  optionally ``<stem>_mask<suffix>.<ext>``; the suffix is empty or does not start with a
  letter (``photo_blurry.jpg`` is not a pair file). Other files are ignored. Without a mask
  only PSNR/SSIM are defined and the sample is in neither the local nor the global subset
  (only in "all").

Per sample (restored image and, as the baseline, the blurred input, both against the sharp
ground truth; definitions in :mod:`m2ae_core.metrics`): PSNR, SSIM, weighted PSNR/SSIM and
sharp PSNR (on the ground-truth mask), mask IoU/F1 of the mask the model used, trajectory EPE
on the ground-truth mask (plain and start/end-symmetric), MACs, dense MACs, the fraction of
pixels processed, seconds, and peak GPU memory on CUDA.

Aggregates are means over the samples of each subset (local, global, all) where the metric
is defined; an infinite PSNR (identical images) counts as :data:`PSNR_CAP` dB in a mean. In
``results.json`` an undefined value is ``null`` and an infinite one the string ``"inf"``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import imageio, metrics
from .errors import M2AEError
from .self_ensemble import ENSEMBLE_SIZES, views

__all__ = ["PSNR_CAP", "SUBSETS", "IMAGE_METRICS", "EvalSample", "find_samples", "evaluate",
           "aggregate", "write_report", "format_markdown", "add_eval_arguments", "run_eval",
           "main"]

PSNR_CAP = 100.0
SUBSETS = ("local", "global", "all")
IMAGE_METRICS = ("psnr", "ssim", "weighted_psnr", "weighted_ssim", "sharp_psnr")
OTHER_METRICS = ("mask_iou", "mask_f1", "epe", "epe_sym", "fraction_processed", "macs",
                 "dense_macs", "seconds", "peak_memory_mb")
METRICS = (IMAGE_METRICS + tuple(f"input_{m}" for m in IMAGE_METRICS) + OTHER_METRICS)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

ProgressCallback = Callable[[int, int], None]  # (samples done, total); may raise to abort


class EvalError(M2AEError):
    """A dataset folder that cannot be evaluated (message: one line, says what to do)."""


@dataclass
class EvalSample:
    """Where one sample's files are; ``kind`` is "local", "global" or None (unknown)."""

    name: str
    blur: Path
    sharp: Path
    mask: Path | None = None
    trajectory: Path | None = None
    kind: str | None = None


# --------------------------------------------------------------------------- finding samples

def _image_with_stem(folder: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _synthetic_samples(root: Path) -> tuple[list[EvalSample], dict]:
    manifest: dict = {}
    if (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            records = [(str(r["name"]), bool(r["is_global"])) for r in manifest["samples"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalError(f"{root / 'manifest.json'} is not a valid sample manifest "
                            f"({type(exc).__name__}: {exc}); regenerate it with m2ae synth"
                            ) from None
    else:
        stems = sorted(p.stem for p in (root / "blur").iterdir()
                       if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        records = [(stem, None) for stem in stems]
    samples = []
    for name, is_global in records:
        blur = _image_with_stem(root / "blur", name)
        sharp = _image_with_stem(root / "sharp", name)
        if blur is None or sharp is None:
            missing = "blur" if blur is None else "sharp"
            raise EvalError(f"sample {name!r} has no {missing}/{name}.png in {root}")
        mask = _image_with_stem(root / "mask", name) if (root / "mask").is_dir() else None
        trajectory = root / "trajectory" / f"{name}.npy"
        kind = None if is_global is None else ("global" if is_global else "local")
        samples.append(EvalSample(name, blur, sharp, mask,
                                  trajectory if trajectory.is_file() else None, kind))
    info = {key: manifest[key] for key in ("preset", "split", "generator", "seed", "size")
            if key in manifest}
    return samples, info


def _pair_samples(root: Path) -> list[EvalSample]:
    files = {p.name: p for p in root.iterdir()
             if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES}
    samples = []
    for name in sorted(files):
        path = files[name]
        stem, sep, suffix = path.stem.rpartition("_blur")
        if not sep or not stem or suffix[:1].isalpha():  # "x_blurry.jpg" is no pair file
            continue
        sharp = _image_with_stem(root, f"{stem}_sharp{suffix}")
        if sharp is None:
            raise EvalError(f"{path.name} has no partner {stem}_sharp{suffix}{path.suffix} "
                            f"in {root}")
        mask = _image_with_stem(root, f"{stem}_mask{suffix}")
        samples.append(EvalSample(f"{stem}{suffix}", path, sharp, mask))
    return samples


def find_samples(dataset_dir) -> tuple[str, list[EvalSample], dict]:
    """``(layout, samples, info)`` of a dataset folder: layout "synthetic" or "pairs"."""
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise EvalError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise EvalError(f"dataset path is not a folder: {root}")
    if (root / "blur").is_dir() and (root / "sharp").is_dir():
        layout = "synthetic"
        samples, info = _synthetic_samples(root)
    else:
        layout, info = "pairs", {}
        samples = _pair_samples(root)
    if not samples:
        raise EvalError(f"no samples in {root}: expected blur/ and sharp/ subfolders "
                        "(m2ae synth) or <name>_blur*.png + <name>_sharp*.png pairs")
    return layout, samples, info


# --------------------------------------------------------------------------- reading files

def _read_rgb(path: Path):
    """float32 tensor [1,3,H,W] in 0..1 (16-bit files keep their precision)."""
    tensor, _ = imageio.to_tensor(imageio.read_image(path))
    return tensor


def _read_mask(path: Path, shape: tuple[int, int], name: str) -> np.ndarray:
    image = imageio.read_image(path)
    if isinstance(image, np.ndarray):  # 16-bit colour PNG
        arr = image[..., 0] > 32767
    else:
        arr = np.asarray(image.convert("L")) > 127
    if arr.shape != shape:
        raise EvalError(f"sample {name!r}: mask {path.name} is {arr.shape[1]}x{arr.shape[0]} "
                        f"but the image is {shape[1]}x{shape[0]}")
    return arr


def masked_samples(dataset_dir):
    """(sample, blurred image [1,3,H,W], ground-truth mask bool [H,W]) for each sample of a
    dataset that has a mask, in order: what the mask studies in scripts/ walk over."""
    for sample in find_samples(dataset_dir)[1]:
        if sample.mask is None:
            continue
        blur = _read_rgb(sample.blur)
        yield sample, blur, _read_mask(sample.mask, tuple(blur.shape[-2:]), sample.name)


def sample_kind(sample: EvalSample, gt_mask: np.ndarray | None) -> str | None:
    """"local" or "global": the manifest's word, else an all-ones mask means global."""
    if sample.kind is not None or gt_mask is None:
        return sample.kind
    return "global" if gt_mask.all() else "local"


def _read_trajectory(path: Path, shape: tuple[int, int], name: str) -> np.ndarray:
    try:
        traj = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EvalError(f"sample {name!r}: cannot read {path.name}: {exc}") from None
    if traj.ndim == 3 and traj.shape[0] == 4:
        traj = traj.reshape(2, 2, *traj.shape[1:])
    if traj.shape != (2, 2) + tuple(shape):
        raise EvalError(f"sample {name!r}: trajectory {path.name} has shape {traj.shape}, "
                        f"expected (2, 2, {shape[0]}, {shape[1]})")
    return traj


# --------------------------------------------------------------------------- evaluation

def _finite_or_none(value: float | None) -> float | None:
    """None for undefined (nan) values; inf is kept (identical images)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _uint8(image) -> np.ndarray:
    """The 8-bit HWC version the metrics compare (quantised once, reused by every metric)."""
    return metrics.quantize(image).astype(np.uint8)


def _image_metrics(image: np.ndarray, gt: np.ndarray,
                   mask: np.ndarray | None) -> dict[str, float | None]:
    plain, weighted = metrics.ssim_and_weighted(image, gt, mask)
    out: dict[str, float | None] = {
        "psnr": metrics.psnr(image, gt), "ssim": plain,
        "weighted_psnr": None, "weighted_ssim": None, "sharp_psnr": None}
    if mask is not None:
        out["weighted_psnr"] = metrics.weighted_psnr(image, gt, mask)
        out["weighted_ssim"] = weighted
        out["sharp_psnr"] = metrics.sharp_psnr(image, gt, mask)
    return {key: _finite_or_none(value) for key, value in out.items()}


def _device_of(model):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return None


def _evaluate_sample(model, sample: EvalSample, threshold: float, pruned: bool,
                     preserve_sharp: bool = False, ensemble: int = 1) -> dict:
    from .inference import deblur

    blur = _read_rgb(sample.blur)
    sharp = _read_rgb(sample.sharp)
    h, w = blur.shape[-2:]
    if tuple(sharp.shape[-2:]) != (h, w):
        raise EvalError(f"sample {sample.name!r}: blurred image is {w}x{h} but the sharp one "
                        f"is {sharp.shape[-1]}x{sharp.shape[-2]}")
    if min(h, w) < metrics.SSIM_WINDOW:
        raise EvalError(f"sample {sample.name!r} is {w}x{h}; SSIM needs at least "
                        f"{metrics.SSIM_WINDOW}x{metrics.SSIM_WINDOW} pixels")
    gt_mask = _read_mask(sample.mask, (h, w), sample.name) if sample.mask else None
    gt_traj = _read_trajectory(sample.trajectory, (h, w), sample.name) \
        if sample.trajectory else None
    kind = sample_kind(sample, gt_mask)

    device = _device_of(model)
    cuda = device is not None and device.type == "cuda"
    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats(device)
    result = deblur(model, blur, threshold=threshold, pruned=pruned,
                    preserve_sharp=preserve_sharp, ensemble=ensemble)
    peak = None
    if cuda:
        import torch
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20

    record: dict[str, Any] = {"name": sample.name, "kind": kind, "height": int(h),
                              "width": int(w),
                              "gt_mask_fraction": None if gt_mask is None
                              else float(gt_mask.mean())}
    gt8, blur8 = _uint8(sharp), _uint8(blur)
    record.update(_image_metrics(_uint8(result.image), gt8, gt_mask))
    record.update({f"input_{k}": v for k, v in _image_metrics(blur8, gt8, gt_mask).items()})
    record["mask_iou"] = record["mask_f1"] = record["epe"] = record["epe_sym"] = None
    if gt_mask is not None:
        record["mask_iou"] = metrics.mask_iou(result.mask, gt_mask)
        record["mask_f1"] = metrics.mask_f1(result.mask, gt_mask)
        if gt_traj is not None and result.trajectory is not None:
            record["epe"] = _finite_or_none(
                metrics.endpoint_error(result.trajectory, gt_traj, gt_mask))
            record["epe_sym"] = _finite_or_none(
                metrics.endpoint_error(result.trajectory, gt_traj, gt_mask, symmetric=True))
    stats = result.stats
    record.update({"fraction_processed": float(stats["fraction_processed"]),
                   "macs": int(stats["macs"]), "dense_macs": int(stats["dense_macs"]),
                   "seconds": float(stats["seconds"]), "peak_memory_mb": peak})
    return record


def _mean(values: list, psnr_like: bool) -> float | None:
    kept = [min(v, PSNR_CAP) if psnr_like else v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def aggregate(samples: list[dict]) -> dict[str, dict]:
    """Means per subset ("local", "global", "all"): ``{subset: {"n", "counts", metric...}}``.

    A metric's mean is over the samples where it is defined (``counts[metric]`` of them);
    infinite PSNRs count as :data:`PSNR_CAP`.
    """
    out = {}
    for subset in SUBSETS:
        chosen = [s for s in samples if subset == "all" or s.get("kind") == subset]
        row: dict[str, Any] = {"n": len(chosen), "counts": {}}
        for metric in METRICS:
            values = [s.get(metric) for s in chosen]
            row[metric] = _mean(values, "psnr" in metric)
            row["counts"][metric] = sum(v is not None for v in values)
        out[subset] = row
    return out


def _model_info(model) -> dict:
    config = getattr(model, "config", None)
    source = getattr(model, "m2ae_source", None)
    return {"name": getattr(config, "name", type(model).__name__),
            "source": str(source) if source is not None else "(in memory)",
            "config": config.to_dict() if hasattr(config, "to_dict") else None,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "device": str(_device_of(model)),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def evaluate(model, dataset_dir, *, threshold: float = 0.5, pruned: bool = True,
             preserve_sharp: bool = False, limit: int | None = None,
             progress: ProgressCallback | None = None, ensemble: int = 1) -> dict:
    """Run :func:`~m2ae_core.inference.deblur` on every sample of ``dataset_dir``.

    ``preserve_sharp``: as in ``deblur`` (input kept outside the feathered predicted mask,
    blended in by the blur probability inside it). ``ensemble``: as in ``deblur``
    (self-ensemble over that many mirrored / rotated views).
    ``limit``: only the first N samples (in manifest / name order). ``progress(done,
    total)`` is called after each sample (raise from it to abort). Returns
    ``{"model", "dataset", "settings", "samples": [per-sample dict], "aggregates":
    {"local", "global", "all"}}`` (see the module docstring for the metrics).
    """
    if limit is not None and int(limit) <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    views(ensemble)  # refuse a bad size before the first sample
    layout, samples, info = find_samples(dataset_dir)
    if limit is not None:
        samples = samples[:int(limit)]
    records = []
    for index, sample in enumerate(samples):
        records.append(_evaluate_sample(model, sample, threshold, pruned, preserve_sharp,
                                        ensemble))
        if progress is not None:
            progress(index + 1, len(samples))
    kinds = [r["kind"] for r in records]
    dataset = {"path": str(Path(dataset_dir).expanduser().resolve()), "layout": layout,
               "samples": len(records), "local": kinds.count("local"),
               "global": kinds.count("global"), **info}
    has_stages = bool(getattr(getattr(model, "config", None), "m2as_stages", ()))
    settings = {"threshold": float(threshold), "pruned": bool(pruned and has_stages),
                "preserve_sharp": bool(preserve_sharp), "ensemble": int(ensemble),
                "limit": None if limit is None else int(limit), "psnr_cap": PSNR_CAP}
    return {"model": _model_info(model), "dataset": dataset, "settings": settings,
            "samples": records, "aggregates": aggregate(records)}


# --------------------------------------------------------------------------- report

def _json_safe(value):
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


_QUALITY_COLUMNS = (("PSNR", "psnr", 2), ("SSIM", "ssim", 4), ("wPSNR", "weighted_psnr", 2),
                    ("wSSIM", "weighted_ssim", 4), ("sharp PSNR", "sharp_psnr", 2))
_COST_COLUMNS = (("mask IoU", "mask_iou", 3, 1), ("mask F1", "mask_f1", 3, 1),
                 ("EPE px", "epe", 2, 1), ("EPE sym px", "epe_sym", 2, 1),
                 ("processed %", "fraction_processed", 1, 100),
                 ("GMACs", "macs", 2, 1e-9), ("dense GMACs", "dense_macs", 2, 1e-9),
                 ("seconds", "seconds", 3, 1), ("peak MiB", "peak_memory_mb", 0, 1))


def _fmt(value, digits: int, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "inf"
    return f"{value * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _quality_table(rows: list[tuple[str, dict]], first: str) -> list[str]:
    header = [first, "n"] if first == "subset" else [first, "kind"]
    for title, _, _ in _QUALITY_COLUMNS:
        header += [f"{title} in", f"{title} out"]
    body = []
    for label, row in rows:
        cells = [label, str(row["n"]) if first == "subset" else (row.get("kind") or "–")]
        for _, key, digits in _QUALITY_COLUMNS:
            cells += [_fmt(row.get(f"input_{key}"), digits), _fmt(row.get(key), digits)]
        body.append(cells)
    return _table(header, body)


def _cost_table(rows: list[tuple[str, dict]], first: str, columns) -> list[str]:
    body = [[label] + [_fmt(row.get(key), digits, scale) for _, key, digits, scale in columns]
            for label, row in rows]
    return _table([first] + [title for title, *_ in columns], body)


def format_markdown(results: dict, command: str | None = None) -> str:
    """The report as Markdown: header, subset tables (input vs restored), per-sample tables."""
    model, data, settings = results["model"], results["dataset"], results["settings"]
    aggregates, samples = results["aggregates"], results["samples"]
    columns = [c for c in _COST_COLUMNS if any(s.get(c[1]) is not None for s in samples)]
    lines = ["# M2AE evaluation", "",
             f"- Model: `{model['name']}` from `{model['source']}` "
             f"({model['parameters']:,} parameters, {model['device']}, {model['dtype']})",
             f"- Dataset: `{data['path']}` ({data['layout']} layout"
             + (f", preset `{data['preset']}`" if data.get("preset") else "")
             + f"; {data['samples']} samples: {data['local']} local, {data['global']} global)",
             f"- Settings: threshold {settings['threshold']}, "
             f"{'pruned' if settings['pruned'] else 'dense'} path"
             + (", input kept outside the predicted mask and blended in by blur probability "
                "(preserve_sharp)" if settings.get("preserve_sharp") else "")
             + (f", self-ensemble of {settings['ensemble']} views"
                if settings.get("ensemble", 1) > 1 else "")
             + (f", first {settings['limit']} samples" if settings.get("limit") else ""),
             f"- Command: `{command or results.get('command') or shlex.join(sys.argv)}`", "",
             "Input = the blurred image vs ground truth (baseline); out = the restored image. "
             "wPSNR / wSSIM: over the ground-truth blur mask only; sharp PSNR: outside it. "
             f"Means over the samples where a metric is defined; an infinite PSNR counts as "
             f"{PSNR_CAP:g} dB. '–' = not defined.", "",
             "## Image quality", ""]
    subset_rows = [(name, aggregates[name]) for name in SUBSETS]
    lines += _quality_table(subset_rows, "subset")
    lines += ["", "## Mask, trajectory and cost", ""]
    lines += _cost_table(subset_rows, "subset", columns)
    sample_rows = [(s["name"], s) for s in samples]
    lines += ["", "## Per sample", ""]
    lines += _quality_table(sample_rows, "sample")
    lines += [""]
    lines += _cost_table(sample_rows, "sample", columns)
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def write_report(results: dict, out_dir, command: str | None = None) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; returns both paths.

    ``command`` (default: ``results["command"]``, else this process's command line) is
    recorded in both files.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise EvalError(f"output exists and is not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    command = command or results.get("command") or shlex.join(sys.argv)
    payload = _json_safe({**results, "command": command})
    json_path, md_path = out / "results.json", out / "results.md"
    _write_text(json_path, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    _write_text(md_path, format_markdown(results, command))
    return json_path, md_path


# --------------------------------------------------------------------------- command line

def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``m2ae eval``."""
    parser.add_argument("--weights", default=None, metavar="W",
                        help="checkpoint: .safetensors / .pth file, a folder with config.json + "
                             "model.safetensors, or a Hugging Face repo id (default: the "
                             "bundled model)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder: blur/ sharp/ mask/ trajectory/ (m2ae synth) or "
                             "<name>_blur*.png + <name>_sharp*.png pairs")
    parser.add_argument("-o", "--output", default=None, metavar="OUT",
                        help="write OUT/results.json and OUT/results.md (default: only print "
                             "the summary)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="blur probability above which a pixel is restored (default 0.5)")
    parser.add_argument("--dense", action="store_true",
                        help="run the dense masked path instead of the pixel-pruned one")
    parser.add_argument("--preserve-sharp", action="store_true",
                        help="keep the input outside the (feathered) predicted mask, as "
                             "m2ae deblur --preserve-sharp does")
    parser.add_argument("--ensemble", type=int, choices=ENSEMBLE_SIZES, default=1,
                        help="self-ensemble over N mirrored / rotated views, as m2ae deblur "
                             "--ensemble does (default 1)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="evaluate only the first N samples")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default cpu)")
    parser.add_argument("--dtype", default=None,
                        help="fp32 (default: exact benchmark numbers), bf16, fp16 or auto, as m2ae deblur --dtype")
    return parser


def _command_line(args: argparse.Namespace) -> str:
    parts = ["m2ae", "eval"]
    if args.weights is not None:
        parts += ["--weights", str(args.weights)]
    parts += ["--data", str(args.data)]
    if args.output is not None:
        parts += ["-o", str(args.output)]
    if args.threshold != 0.5:
        parts += ["--threshold", f"{args.threshold:g}"]
    if args.dense:
        parts.append("--dense")
    if args.preserve_sharp:
        parts.append("--preserve-sharp")
    if args.ensemble != 1:
        parts += ["--ensemble", str(args.ensemble)]
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    if args.device is not None:
        parts += ["--device", str(args.device)]
    if args.dtype is not None:
        parts += ["--dtype", str(args.dtype)]
    return shlex.join(parts)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate and report; the subset table on stdout, or one error line on stderr."""
    from .progress import ProgressBar
    from .weights import load_model

    bar: ProgressBar | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(total, "eval")
        bar.update(done)

    try:
        if args.limit is not None and args.limit <= 0:
            raise ValueError(f"--limit must be positive, got {args.limit}")
        if not 0.0 <= args.threshold <= 1.0:
            raise ValueError(f"--threshold must be within 0..1, got {args.threshold}")
        find_samples(args.data)  # fail on a bad folder before loading the model
        model = load_model(args.weights, device=args.device, dtype=args.dtype)
        results = evaluate(model, args.data, threshold=args.threshold, pruned=not args.dense,
                           preserve_sharp=args.preserve_sharp, limit=args.limit,
                           progress=progress, ensemble=args.ensemble)
        results["command"] = _command_line(args)
        written = write_report(results, args.output) if args.output is not None else None
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("m2ae eval: interrupted", file=sys.stderr)
        return 130
    except (M2AEError, OSError, ValueError, RuntimeError) as exc:
        if bar is not None:
            bar.close()
        text = str(exc).strip().splitlines()
        print(f"m2ae eval: error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    if bar is not None:
        bar.close()
    subset_rows = [(name, results["aggregates"][name]) for name in SUBSETS]
    print("\n".join(_quality_table(subset_rows, "subset")))
    if written is not None:
        print(f"wrote {written[0]} and {written[1]}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="m2ae eval",
                                     description="Evaluate a model on blurred/sharp pairs.")
    add_eval_arguments(parser)
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
