"""Local wPSNR gain per source photo of a synthetic dataset.

    python scripts/gain_by_photo.py DATASET/manifest.json EVAL/results.json [more pairs ...]

Each local sample is credited to every photo its moving objects were cut from (the blurred
pixels are theirs). Prints a Markdown table per pair. When the dataset's images sit next to
its manifest, it also prints how textured the blurred regions are: the mean absolute grey
level step between neighbouring pixels of the sharp image inside the true mask. Used to find
out whether the benchmark's small gain comes from its photos or from its settings
(docs/training-experiments.md, "The benchmark's photos are hard ones").
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image


def gains_by_object_photo(manifest: dict, results: dict) -> dict[str, list[float]]:
    samples = {s["name"]: s for s in manifest["samples"]}
    gains: dict[str, list[float]] = defaultdict(list)
    for row in results["samples"]:
        if row["kind"] != "local":
            continue
        gain = row["weighted_psnr"] - row["input_weighted_psnr"]
        for photo in samples[row["name"]]["objects"]:
            gains[photo].append(gain)
    return dict(gains)


def mask_texture(sharp: np.ndarray, mask: np.ndarray) -> float:
    """Mean |horizontal step| + |vertical step| of a grey image (0..1) where ``mask``."""
    dx = np.abs(np.diff(sharp, axis=1))[:-1]
    dy = np.abs(np.diff(sharp, axis=0))[:, :-1]
    return float((dx + dy)[mask[:-1, :-1]].mean())


def dataset_texture(folder: Path, results: dict) -> float | None:
    """Mean :func:`mask_texture` over the local samples, or None without the images."""
    if not (folder / "sharp").is_dir():
        return None
    from m2ae_core.evaluate import find_samples

    files = {sample.name: sample for sample in find_samples(folder)[1]}
    values = []
    for row in results["samples"]:
        if row["kind"] != "local":
            continue
        sample = files[row["name"]]
        sharp = np.asarray(Image.open(sample.sharp).convert("L"), np.float32) / 255
        values.append(mask_texture(sharp, np.asarray(Image.open(sample.mask).convert("L")) > 127))
    return sum(values) / len(values)


def markdown(title: str, gains: dict[str, list[float]]) -> str:
    lines = [f"### {title}", "", "| object photo | local samples | mean wPSNR gain (dB) |",
             "|---|---:|---:|"]
    for photo, values in sorted(gains.items()):
        lines.append(f"| {photo} | {len(values)} | {sum(values) / len(values):+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path,
                        help="manifest.json results.json pairs")
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give manifest.json / results.json in pairs")
    for manifest_path, results_path in zip(args.files[::2], args.files[1::2]):
        manifest = json.loads(manifest_path.read_text())
        results = json.loads(results_path.read_text())
        print(markdown(str(results_path.parent), gains_by_object_photo(manifest, results)))
        texture = dataset_texture(manifest_path.parent, results)
        if texture is not None:
            print(f"\nmean texture in the blurred regions: {texture:.4f}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
