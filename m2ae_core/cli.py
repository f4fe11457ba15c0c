"""``m2ae`` command line: deblur photos, and the project's data/training/evaluation tools."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import M2AEError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif"}
# --format choices -> output suffix
OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "webp": ".webp"}
# the pictures --save-mask / --save-trajectory write beside a result, as <result>_<kind>.png
SIDE_OUTPUTS = ("mask", "trajectory")


def _fail(message: str) -> int:
    print(f"m2ae: error: {message}", file=sys.stderr)
    return 2


def collect_tree(paths: list[str], recursive: bool = False, exclude: Path | None = None,
                 result_suffix: str = "") -> list[tuple[Path, Path]]:
    """(image file, its folder relative to the input folder it was found in) for every input:
    files as given (folder '.'); folders expanded to their image files, sorted, and with
    ``recursive`` also those of their subfolders. So that results never become inputs, a
    folder's walk skips ``exclude`` (the output folder) when it lies inside, and files whose
    name ends with ``result_suffix`` (--name-suffix); hidden subfolders are skipped too."""
    found: list[tuple[Path, Path]] = []
    skipped = exclude.resolve() if exclude is not None else None
    result_endings = tuple(result_suffix + end for end in ("", *(f"_{k}" for k in SIDE_OUTPUTS)))
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            root = path.resolve()
            inside = skipped is not None and skipped != root and skipped.is_relative_to(root)
            candidates = path.rglob("*") if recursive else path.iterdir()
            for p in sorted(candidates):
                relative = p.relative_to(path)
                if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                    continue
                if any(part.startswith(".") for part in relative.parts[:-1]):
                    continue
                if inside and p.resolve().is_relative_to(skipped):
                    continue
                if result_suffix and p.stem.endswith(result_endings):
                    continue
                found.append((p, relative.parent))
        elif path.exists():
            found.append((path, Path(".")))
        else:
            raise M2AEError(f"input '{raw}' does not exist")
    if not found:
        raise M2AEError("no image files found in the given inputs")
    return found


def collect_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to their image files (sorted, not recursive)."""
    return [file for file, _ in collect_tree(paths)]


def plan_outputs(inputs: list[Path], out: Path, single_input_file: bool,
                 suffix: str | None = None, subfolders: list[Path] | None = None,
                 name_suffix: str = "") -> list[Path]:
    """Output file per input: OUT itself for one file with an image suffix, else
    OUT/<subfolder>/<stem><name_suffix><suffix> (``suffix`` defaults to .png; ``subfolders``,
    from :func:`collect_tree`, mirror the input tree and default to none)."""
    if Path(name_suffix).name != name_suffix or name_suffix in (".", ".."):
        raise M2AEError(f"--name-suffix '{name_suffix}' must not contain a path separator")
    if single_input_file and out.suffix.lower() in IMAGE_SUFFIXES:
        from .image_files import SAVE_FORMATS

        if suffix is not None and SAVE_FORMATS.get(out.suffix.lower()) != SAVE_FORMATS[suffix]:
            raise M2AEError(f"-o '{out}' names a {out.suffix} file but --format asks for "
                            f"{suffix}; give one of them")
        targets = [out]
    else:
        subfolders = subfolders or [Path(".")] * len(inputs)
        targets = [out / sub / f"{p.stem}{name_suffix}{suffix or '.png'}"
                   for p, sub in zip(inputs, subfolders)]
        if len(set(targets)) != len(targets):
            raise M2AEError("two inputs share a file name stem; deblur them into separate folders")
    resolved_inputs = {p.resolve() for p in inputs}
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise M2AEError(f"output '{target}' would overwrite an input; choose another -o")
    return targets


def pending_work(targets: list[Path], overwrite: bool, skip_existing: bool) -> list[int]:
    """Indices of the outputs to write. An existing output stops the run unless it is to be
    replaced (``overwrite``) or kept (``skip_existing``: it is complete, since outputs are
    written atomically, so a run that was interrupted continues where it stopped)."""
    if overwrite:
        return list(range(len(targets)))
    existing = [t for t in targets if t.exists()]
    if existing and not skip_existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise M2AEError(f"'{existing[0]}' exists{more}; pass --overwrite to replace, or "
                        "--skip-existing to keep existing results and restore the rest")
    return [i for i, t in enumerate(targets) if not t.exists()]


def _side_path(target: Path, kind: str) -> Path:
    return target.with_name(f"{target.stem}_{kind}.png")


def run_deblur(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import imageio
    from .inference import deblur
    from .photo_metadata import read_metadata
    from .progress import ProgressBar
    from .visualize import trajectory_to_rgb
    from .weights import load_model

    try:
        tree = collect_tree(args.inputs, args.recursive, exclude=Path(args.output),
                            result_suffix=args.name_suffix)
        inputs, subfolders = [file for file, _ in tree], [sub for _, sub in tree]
        single = len(inputs) == 1 and not Path(args.inputs[0]).is_dir()
        suffix = OUTPUT_FORMATS[args.format] if args.format else None
        targets = plan_outputs(inputs, Path(args.output), single, suffix, subfolders,
                               args.name_suffix)
        work = pending_work(targets, args.overwrite, args.skip_existing)
        if len(work) < len(inputs):
            print(f"m2ae: {len(inputs) - len(work)} of {len(inputs)} outputs exist already; "
                  "keeping them (--skip-existing)", file=sys.stderr)
        if not work:
            return 0
        model = load_model(args.weights, device=args.device, dtype=args.dtype)
    except (M2AEError, ValueError, OSError) as exc:
        return _fail(str(exc))

    bar = ProgressBar(len(work), "deblur")
    failures = 0
    for index, job in enumerate(work):
        source, target = inputs[job], targets[job]
        try:
            image = imageio.read_image(source, max_pixels=args.max_pixels)
            mask = _mask_for(args.mask, source, args.max_pixels, subfolders[job])
            result = deblur(model, image, mask=mask, threshold=args.threshold,
                            preserve_sharp=args.preserve_sharp, tile=args.tile,
                            tile_context=args.tile_context, pruned=not args.dense,
                            shake_test=not args.no_shake_test, ensemble=args.ensemble,
                            progress=_step_progress(bar, index, source.name))
            target.parent.mkdir(parents=True, exist_ok=True)
            # the input's colour profile and EXIF: the pixels are still in its colour space
            imageio.save_image(result.image, target, metadata=read_metadata(source))
            if args.save_mask:
                imageio.save_image((result.mask * 255).astype(np.uint8), _side_path(target, "mask"))
            if args.save_trajectory and result.trajectory is not None:
                imageio.save_image(trajectory_to_rgb(result.trajectory),
                                   _side_path(target, "trajectory"))
            stats = result.stats
            note = (f"{source.name}: {stats['fraction_processed']:.1%} processed, "
                    f"{stats['macs'] / 1e9:.1f}/{stats['dense_macs'] / 1e9:.1f} GMAC, "
                    f"{stats['seconds']:.1f}s -> {target}")
            if model.intro.weight.dtype != torch.float32:
                note += f" ({str(model.intro.weight.dtype).removeprefix('torch.')})"
            if stats["ensemble"] > 1:
                note += f" (self-ensemble of {stats['ensemble']})"
            if stats.get("camera_shake"):
                note += " (camera shake: whole frame restored)"
            if not bar.enabled:
                print(note)
        except KeyboardInterrupt:
            bar.close()
            print(f"m2ae: interrupted at '{source}'; files already written are complete "
                  "(run the same command with --skip-existing to restore the rest)",
                  file=sys.stderr)
            return 130
        except (M2AEError, ValueError, OSError) as exc:
            failures += 1
            bar.close() if bar.enabled else None
            print(f"m2ae: error: {source}: {exc}", file=sys.stderr)
        bar.update(index + 1, source.name)
    bar.close()
    if failures:
        print(f"m2ae: {failures} of {len(work)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _step_progress(bar, index: int, name: str):
    """deblur's per-tile callback, moving the bar within input ``index``: a big photo takes
    minutes on a CPU, and a bar that only counts photos would stand still meanwhile. It counts
    network steps: with the whole image's context (the default) every tile runs twice, and a
    self-ensemble runs every view."""
    def report(done: int, total: int) -> None:
        if total > 1:
            bar.update(index + done / total, f"{name} step {done}/{total}")
    return report


def _mask_for(mask_arg: str | None, source: Path, max_pixels: int,
              subfolder: Path = Path(".")):
    """--mask FILE applies to every input; --mask DIR looks for DIR/<subfolder>/<stem>.<image
    suffix> (the input's place in a --recursive tree), then DIR/<stem>.<image suffix>."""
    if mask_arg is None:
        return None
    from . import imageio

    path = Path(mask_arg)
    if path.is_dir():
        for folder in dict.fromkeys((path / subfolder, path)):
            for suffix in sorted(IMAGE_SUFFIXES):
                candidate = folder / f"{source.stem}{suffix}"
                if candidate.exists():
                    return imageio.read_image(candidate, max_pixels=max_pixels)
        raise M2AEError(f"no mask named '{source.stem}.*' in '{path / subfolder}' or '{path}'"
                        if subfolder != Path(".") else
                        f"no mask named '{source.stem}.*' in '{path}'")
    return imageio.read_image(path, max_pixels=max_pixels)


def _pixel_count(text: str) -> int:
    """--max-pixels: a positive whole number of pixels, also written as 150e6 or 150_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got '{text}'")
    return int(value)


def add_deblur_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder (or an output file name for a single input file); "
                             "results are <name>.png unless --format says otherwise (16-bit "
                             "inputs stay 16-bit in PNG and TIFF; the colour profile and EXIF "
                             "are kept)")
    parser.add_argument("--name-suffix", default="", metavar="TEXT",
                        help="appended to each result's name, e.g. _sharp: photo.jpg -> "
                             "photo_sharp.png (lets results sit next to their photos: -o the "
                             "photos' folder; files in the input folders whose name already ends "
                             "with it are taken for results and skipped)")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="also restore the images in the input folders' subfolders (hidden "
                             "ones and the output folder skipped); results mirror the tree under "
                             "the output folder")
    parser.add_argument("--format", choices=sorted(OUTPUT_FORMATS), default=None,
                        help="file type of the results written into the output folder "
                             "(default png; jpg is written at quality 95 without chroma "
                             "subsampling; mask and trajectory pictures stay PNG)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint: .safetensors / .pth file, a folder with config.json + "
                             "model.safetensors, or a Hugging Face repo id (default: the bundled model)")
    parser.add_argument("--mask", default=None,
                        help="user blur mask (white = blurred) replacing the prediction: one image "
                             "for all inputs, or a folder with one mask per input stem")
    from .image_files import MAX_PIXELS

    parser.add_argument("--max-pixels", type=_pixel_count, default=MAX_PIXELS,
                        help=f"largest image accepted, width x height (default {MAX_PIXELS:,}); "
                             "raise it for bigger photos you trust, e.g. 150e6 (automatic "
                             "tiling keeps them within the free memory)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="blur probability above which a pixel is restored (default 0.5)")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile side in pixels for big images; 0 = never tile; default: "
                             "automatic (whole when it fits in half the free memory, else the "
                             "largest tiles that do)")
    from .inference import TILE_CONTEXTS

    parser.add_argument("--tile-context", choices=TILE_CONTEXTS, default="image",
                        help="what the network's global pooling sees when tiling: the whole image "
                             "(default; as untiled, two passes, about 2x time) or each tile alone")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default cpu)")
    parser.add_argument("--dtype", default="auto",
                        help="auto (default): bf16 on a CPU that computes it natively "
                             "(AVX512-BF16 or AMX; 1.3-1.8x faster, 40%% less memory, results "
                             "within 0.01 dB), else fp32; or fp32, bf16, fp16 (fp16 is slow "
                             "on CPUs)")
    parser.add_argument("--preserve-sharp", action="store_true",
                        help="keep pixels outside the (feathered) blur mask exactly as in "
                             "the input; inside a predicted mask, blend toward the input "
                             "where the blur probability is low")
    from .self_ensemble import ENSEMBLE_SIZES

    parser.add_argument("--ensemble", type=int, choices=ENSEMBLE_SIZES, default=1,
                        help="restore this many mirrored / rotated copies and average them "
                             "(self-ensemble): blurred regions a little sharper, the background "
                             "less altered, for N times the time (default 1; 8 = best)")
    parser.add_argument("--dense", action="store_true",
                        help="run the dense masked path instead of the pixel-pruned one (same result, slower)")
    parser.add_argument("--no-shake-test", action="store_true",
                        help="do not let the model's camera-shake test mark a whole frame as "
                             "blurred (for a moving subject on a plain, featureless backdrop)")
    parser.add_argument("--save-mask", action="store_true", help="also write <name>_mask.png")
    parser.add_argument("--save-trajectory", action="store_true",
                        help="also write <name>_trajectory.png, a colour-wheel picture of the motion "
                             "(hue = direction, saturation = speed)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace existing output files (inputs are never overwritten)")
    existing.add_argument("--skip-existing", action="store_true",
                          help="keep existing output files and restore only the inputs without "
                               "one (continues an interrupted folder run: outputs are written "
                               "whole or not at all)")
    parser.set_defaults(handler=run_deblur)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2ae",
        description="M2AE: remove local motion blur from photos, spending compute only on "
                    "blurred pixels.",
        epilog="Run 'm2ae COMMAND --help' for the options of each command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_deblur_arguments(commands.add_parser(
        "deblur", help="restore images (files or folders)",
        description="Restore locally motion-blurred images with the bundled or a given model."))
    for spec in MODULE_COMMANDS:
        _add_module_command(commands, *spec)
    _add_demo_command(commands)
    return parser


# Commands living in their own modules: (name, module, help, description). Each module
# provides add_<name>_arguments(parser) and run_<name>(args) -> int.
MODULE_COMMANDS = [
    ("synth", ".data.bench", "write a synthetic local-blur dataset",
     "Render (blur, sharp, mask, trajectory) samples; --preset bench regenerates the frozen "
     "benchmark."),
    ("eval", ".evaluate", "evaluate a model on blurred/sharp pairs",
     "PSNR, SSIM, weighted PSNR/SSIM, sharp-pixel PSNR, mask IoU/F1, trajectory EPE, MACs and "
     "seconds; writes results.json and results.md."),
    ("train", ".training.trainer", "train a model from a YAML/TOML config",
     "Train (and exactly resume) a model; multi-process with torchrun. See configs/."),
    ("bench", ".benchmark", "performance benchmark: pruned vs dense vs NAFNet",
     "Wall time, peak memory and MACs of the pruned and dense paths and the plain NAFNet "
     "backbone across blur fractions and sizes, one fresh process per cell; writes bench.json, "
     "bench.md and bench.png (the plot needs: pip install -e '.[bench]')."),
]


def _add_module_command(commands, name: str, module_name: str, summary: str,
                        description: str) -> None:
    import importlib

    module = importlib.import_module(module_name, __package__)
    parser = commands.add_parser(name, help=summary, description=description)
    getattr(module, f"add_{name}_arguments")(parser)
    parser.set_defaults(handler=getattr(module, f"run_{name}"))


def _add_demo_command(commands) -> None:
    """``m2ae demo``: run demo/app.py of the checkout (the demo is not part of the package)."""
    demo = commands.add_parser("demo", help="launch the Gradio demo (the Hugging Face Space app)",
                               description="Serve the M2AE web demo: upload, restore, compare. "
                                           "Needs a checkout of the repository (demo/app.py) "
                                           "and Gradio: pip install -e '.[demo]'.")
    demo.add_argument("--model", help="weights: file, folder or Hub repo id "
                                      "(default: $M2AE_MODEL, else the bundled model)")
    demo.add_argument("--device", help="cpu, cuda, ... (default: $M2AE_DEVICE, else cuda if available)")
    demo.add_argument("--dtype", help="auto, fp32, bf16, fp16 (default: $M2AE_DTYPE, else auto: "
                                      "bf16 on a CPU with native bf16, else fp32)")
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    demo.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    demo.add_argument("--max-pixels", type=int, help="largest accepted image in pixels "
                                                     "(default: $M2AE_DEMO_MAX_PIXELS or 16,000,000)")
    demo.add_argument("--concurrency", type=int, help="restorations running at once (default 1)")
    demo.add_argument("--share", action="store_true", help="also open a public gradio.live link")

    def run_demo(args: argparse.Namespace) -> int:
        import importlib.util

        candidates = [Path(__file__).resolve().parents[1] / "demo" / "app.py",
                      Path.cwd() / "demo" / "app.py"]
        app = next((c for c in candidates if c.is_file()), None)
        if app is None:
            return _fail("demo/app.py not found (looked in " + ", ".join(map(str, candidates))
                         + "); the demo ships with the repository, not the package: run "
                           "'m2ae demo' from a checkout, or 'python demo/app.py'")
        if importlib.util.find_spec("gradio") is None:
            return _fail("the demo needs Gradio: pip install -e '.[demo]'")
        spec = importlib.util.spec_from_file_location("m2ae_demo_app", app)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        forwarded = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                     if name in ("model", "device", "dtype", "host", "port", "max_pixels",
                                 "concurrency")
                     and value is not None] + (["--share"] if args.share else [])
        module.main(forwarded)
        return 0

    demo.set_defaults(handler=run_demo)


HEAVY_COMMANDS = {"deblur", "eval", "train", "demo"}  # worth a restart with huge pages


def _command_name(args: list[str]) -> str | None:
    """The subcommand in a raw argument list (the top-level parser has no option that takes
    a value, so it is the first word that is not an option)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    from .memory import restart_with_huge_pages, return_freed_memory_promptly

    if argv is None and _command_name(sys.argv[1:]) in HEAVY_COMMANDS:
        # The process is the command's own (console script / python -m), never a caller's.
        # Restart before building the parser: that imports torch, which would then be
        # imported twice (~1.4 s here).
        restart_with_huge_pages("m2ae_core.cli", sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return_freed_memory_promptly()  # this process is ours: keep peak memory low and stable
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
