"""How much each model changes each real blurred photo (real photos have no ground truth).

    python scripts/real_photo_changes.py PHOTO_OR_FOLDER [...] --weights A.safetensors [B ...]
        [--names A B] [--save DIR]

Per photo and model: the mean absolute change from the input (0..255), the largest
brightening of a pixel (its largest channel), how many pixels brighten by more than 12/255
(the flat bright patches seen on the clock's dial) and the share of the photo processed. With
two models or more, the mean and largest difference between the first model's output and each
other's. ``--save DIR`` writes each output as ``<photo>.<name>.png`` to look at.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BRIGHTENING_LEVEL = 12  # /255: above the rounding and noise of a restored flat area


def changes(original: np.ndarray, restored: np.ndarray) -> dict:
    """Change statistics of ``restored`` against ``original`` (uint8 HxWx3 each)."""
    diff = restored.astype(np.int16) - original.astype(np.int16)
    brightening = diff.max(-1)
    return {"mean_abs": float(np.abs(diff).mean()), "max_brightening": int(brightening.max()),
            "bright_pixels": int((brightening > BRIGHTENING_LEVEL).sum())}


def report(rows) -> str:
    lines = ["| photo | model | mean abs change | max brightening | pixels > +12 | processed "
             "| vs first model: mean / max |", "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        versus = "–" if row.get("vs_first") is None else \
            f"{row['vs_first'][0]:.2f} / {row['vs_first'][1]}"
        lines.append(f"| {row['photo']} | {row['model']} | {row['mean_abs']:.2f} | "
                     f"{row['max_brightening']:+d} | {row['bright_pixels']} | "
                     f"{100 * row['processed']:.1f} % | {versus} |")
    return "\n".join(lines)


def compare(models: dict, paths, save: Path | None = None) -> list[dict]:
    from PIL import Image

    from m2ae_core import deblur
    from m2ae_core.imageio import read_image

    rows = []
    for path in paths:
        original = np.asarray(read_image(path).convert("RGB"))
        first = None
        for name, model in models.items():
            result = deblur(model, original)
            row = {"photo": path.name, "model": name, **changes(original, result.image),
                   "processed": float(result.stats["fraction_processed"]), "vs_first": None}
            if first is None:
                first = result.image
            else:
                gap = np.abs(result.image.astype(np.int16) - first.astype(np.int16))
                row["vs_first"] = (float(gap.mean()), int(gap.max()))
            if save is not None:
                Image.fromarray(result.image).save(save / f"{path.stem}.{name}.png")
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="photos, or folders of photos")
    parser.add_argument("--weights", nargs="+", required=True, help="weights files to compare")
    parser.add_argument("--names", nargs="+", help="one name per weights file (default: stems)")
    parser.add_argument("--save", type=Path, help="folder for the restored photos")
    args = parser.parse_args(argv)
    names = args.names or [Path(w).stem for w in args.weights]
    if len(names) != len(args.weights):
        parser.error("--names needs one name per weights file")
    from m2ae_core import load_model
    from m2ae_core.cli import collect_inputs  # the folder rules of m2ae deblur
    from m2ae_core.errors import M2AEError

    try:
        models = {name: load_model(w) for name, w in zip(names, args.weights)}
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
        rows = compare(models, collect_inputs(args.sources), args.save)
    except M2AEError as error:
        print(f"real_photo_changes: {error}", file=sys.stderr)
        return 2
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
