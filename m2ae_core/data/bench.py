"""The frozen synthetic benchmark: held-out photos, a fixed preset, and ``m2ae synth``.

The benchmark is never stored; ``write_bench`` regenerates it bit for bit from the
held-out photos (same photos, same code, same machine class → byte-identical files).
Training uses only ``photo_paths(root, "train")``, which excludes every held-out photo, so
no benchmark background or object texture is ever seen in training.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import M2AEError
from .synthetic import SynthParams, SyntheticBlurSource, list_photos, write_dataset

# Varied on purpose: indoor still life, night launch scene, mountain landscape, forest
# stream, colourful close-up, portrait-format interior. coffee.png (CC0) and rocket.jpg
# (public domain) are also the photos allowed to become committed demo examples.
HELD_OUT_PHOTOS: tuple[str, ...] = (
    "coffee.png",
    "rocket.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
)

# The other photos of ../shared/data/photos. photo_paths(root, "train") returns every image
# of the folder that is not held out (this list, for the shared folder).
TRAIN_PHOTOS: tuple[str, ...] = (
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Kleiber_by_Lukas_Baubkus.jpg",
    "Picture_0B_by_freespace.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "astronaut.png",
    "chelsea.png",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
)

SPLITS = ("train", "bench")
DEFAULT_PHOTOS = Path("..") / "shared" / "data" / "photos"


@dataclass(frozen=True)
class BenchPreset:
    """A named, frozen way to generate a sample folder."""

    name: str
    seed: int
    count: int
    params: SynthParams = field(default_factory=SynthParams)
    max_side: int = 1024


# 48 samples at 512x512; every 4th is global (12 global, 36 local); mild noise / JPEG as
# in training. Changing anything here changes the benchmark: bump the name.
BENCH_PRESET = BenchPreset(
    name="m2ae-synth-bench-v1",
    seed=20240611,
    count=48,
    params=SynthParams(size=(512, 512), global_every=4, motion_length=(4.0, 48.0),
                       global_motion_length=(4.0, 40.0)),
)

# On-the-fly training distribution (local:global 1:1, DESIGN §4).
TRAIN_PRESET = BenchPreset(name="m2ae-synth-train", seed=0, count=256,
                           params=SynthParams(size=(256, 256), global_prob=0.5))


def photo_paths(root, split: str) -> list[Path]:
    """Photos of ``split`` ("train" or "bench") under the folder ``root``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"photo folder not found: {root} (pass --photos DIR, e.g. ../shared/data/photos)")
    if split == "bench":
        missing = [n for n in HELD_OUT_PHOTOS if not (root / n).is_file()]
        if missing:
            raise FileNotFoundError(f"held-out benchmark photos missing from {root}: "
                                    f"{', '.join(missing)}")
        return [root / n for n in HELD_OUT_PHOTOS]
    held = set(HELD_OUT_PHOTOS)
    paths = [p for p in list_photos(root) if p.name not in held]
    if not paths:
        raise FileNotFoundError(f"no training photos in {root}: it holds no images, or only "
                                f"held-out benchmark photos")
    return paths


def write_bench(root, out_dir, count: int | None = None, *, preset: BenchPreset = BENCH_PRESET,
                progress=None) -> dict:
    """Regenerate the benchmark (its first ``count`` samples; all by default) into
    ``out_dir``; returns the manifest."""
    source = SyntheticBlurSource(photo_paths(root, "bench"), preset.params, preset.seed,
                                 max_side=preset.max_side)
    return write_dataset(source, preset.count if count is None else count, out_dir,
                         extra={"preset": preset.name, "split": "bench"}, progress=progress)


# --------------------------------------------------------------------------------------
# command line: m2ae synth
# --------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512 or 384x512 (HxW), got {text!r}")
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return h, w


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``m2ae synth``."""
    parser.add_argument("--photos", type=Path, default=None, metavar="DIR",
                        help="folder of sharp photos (default: ../shared/data/photos)")
    parser.add_argument("--preset", choices=("bench", "train"), default="bench",
                        help="bench: the frozen benchmark from held-out photos (default); "
                             "train: samples from the training photos")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help=f"number of samples (default: {BENCH_PRESET.count} for bench, "
                             f"{TRAIN_PRESET.count} for train)")
    parser.add_argument("--size", type=_parse_size, default=None, metavar="HxW",
                        help="sample size (default: 512x512 for bench, 256x256 for train)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed (default: the preset's; a different seed or size is not "
                             "the frozen benchmark)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="output folder (blur/ sharp/ mask/ trajectory/ manifest.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into OUT even if it is not empty")
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Write a sample folder; one summary line on stdout, or one error line on stderr."""
    try:
        preset = BENCH_PRESET if args.preset == "bench" else TRAIN_PRESET
        root = args.photos if args.photos is not None else Path.cwd() / DEFAULT_PHOTOS
        count = preset.count if args.count is None else args.count
        if count <= 0:
            raise ValueError(f"--count must be positive, got {count}")
        params = preset.params
        if args.size is not None:
            params = params.replace(size=args.size)
        seed = preset.seed if args.seed is None else args.seed
        if seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"output exists and is not a folder: {out}")
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            raise FileExistsError(f"output folder is not empty: {out} (use --overwrite)")
        split = "bench" if args.preset == "bench" else "train"
        source = SyntheticBlurSource(photo_paths(root, split), params, seed,
                                     max_side=preset.max_side)
        frozen = args.preset == "bench" and params == BENCH_PRESET.params \
            and seed == BENCH_PRESET.seed
        name = preset.name if (frozen or args.preset == "train") else f"{preset.name}-custom"
        start = time.perf_counter()
        manifest = write_dataset(source, count, out, extra={"preset": name, "split": split})
        seconds = time.perf_counter() - start
    except (M2AEError, OSError, ValueError) as exc:
        print(f"m2ae synth: error: {exc}", file=sys.stderr)
        return 1
    n_global = sum(r["is_global"] for r in manifest["samples"])
    h, w = params.size
    print(f"wrote {count} {name} samples ({count - n_global} local, {n_global} global, "
          f"{h}x{w}, seed {seed}) from {len(source.paths)} photos to {out} in {seconds:.1f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="m2ae synth",
                                     description="Write synthetic local-motion-blur samples.")
    add_synth_arguments(parser)
    return run_synth(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
