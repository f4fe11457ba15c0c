"""``m2ae bench`` options, their validation, and the canonical command line of a run."""
from __future__ import annotations

import argparse
import shlex

from ..errors import ConfigError
from .models import DEFAULT_MODELS, parse_model_spec
from .workload import format_size, parse_size

DEFAULT_FRACTIONS = (0, 5, 10, 25, 50, 100)
DEFAULT_SIZES = ("512x512", "1280x720", "2152x1436")
DEFAULT_OUT = "runs/bench"


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    grid = parser.add_argument_group("grid")
    grid.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                      help="model specs: PRESET[-pruned|-dense][/m2as=S,S][/both-halves], or "
                           "'default' (the bundled trained model; skipped with a note when not "
                           "installed). Default: " + " ".join(DEFAULT_MODELS))
    grid.add_argument("--fractions", nargs="+", type=float, default=list(DEFAULT_FRACTIONS),
                      metavar="PERCENT", help="blur fractions in percent of the image's pixels "
                                              "(default: " + " ".join(map(str, DEFAULT_FRACTIONS)) + ")")
    grid.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="WxH",
                      help="image sizes, width x height (default: " + " ".join(DEFAULT_SIZES) + ")")
    grid.add_argument("--repeats", type=int, default=3,
                      help="timed forwards per cell after one warm-up; the median is reported "
                           "(default 3)")
    grid.add_argument("--rounds", type=int, default=1,
                      help="run the grid this many times, every cell in a fresh process each "
                           "round (rounds interleave: all cells once, then again); a cell "
                           "reports the median over its rounds (default 1). Per-process "
                           "speed varies on shared machines; rounds average it out")
    grid.add_argument("--no-grid", action="store_true",
                      help="skip the grid (run only --tiled / --design-study / --profile)")
    run = parser.add_argument_group("run")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    run.add_argument("--dtype", default="fp32",
                     help="the models' precision: fp32 (default, the targets' setting), bf16 or "
                          "fp16; inputs stay fp32 (the network casts them)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads in every measuring process (default: torch's choice)")
    run.add_argument("--out", default=DEFAULT_OUT,
                     help="folder for bench.json, bench.md and bench.png (default %(default)s)")
    run.add_argument("--width", type=int, default=None,
                     help="override the channel width of every preset-built model "
                          "(quick smoke runs; the issue's numbers use the presets as they are)")
    run.add_argument("--seed", type=int, default=0, help="seed of weights, images and masks")
    run.add_argument("--cell-timeout", type=float, default=None,
                     help="seconds after which one measuring process is stopped (default none)")
    extra = parser.add_argument_group("extra runs")
    extra.add_argument("--tiled", action="store_true",
                       help="tiled run: peak RSS of deblur(tile=T) on a big photo, and the PSNR "
                            "between tiled and untiled output on an image that fits untiled")
    extra.add_argument("--tiled-size", default="4096x3072", help="tiled photo size (%(default)s)")
    extra.add_argument("--tiled-compare-size", default="1536x1152",
                       help="size of the tiled-vs-untiled comparison (%(default)s)")
    extra.add_argument("--tile", type=int, default=1024, help="tile side (default %(default)s)")
    extra.add_argument("--tiled-model", default="paper-pruned",
                       help="model of the tiled run (default %(default)s)")
    extra.add_argument("--design-study", action="store_true",
                       help="wall-time ratios vs NAFNet-w32 at 10 %% blur of more masking: "
                            "second block half, M2AS on stage 3, on stages 2+3+4")
    extra.add_argument("--design-size", default=None,
                       help="size of the design study (default: the largest of --sizes)")
    extra.add_argument("--profile", action="store_true",
                       help="per-op and per-part time breakdown (torch.profiler) of one cell")
    extra.add_argument("--profile-cell", default=None, metavar="MODEL:WxH:PERCENT",
                       help="the profiled cell (implies --profile; default: the first pruned "
                            "model, the largest size, the fraction nearest 10 %%)")


def validate(args: argparse.Namespace) -> None:
    """Parse specs and sizes early, so a typo fails before hours of measuring."""
    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    for fraction in args.fractions:
        if not 0 <= fraction <= 100:
            raise ConfigError(f"--fractions are percentages within 0..100, got {fraction:g}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be at least 1")
    if args.profile_cell:
        args.profile = True  # naming a cell to profile asks for the profile
    args.device = args.device or _default_device()
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available here; use cpu")
    import torch

    from ..precision import resolve_dtype

    resolve_dtype(args.dtype, torch.device(args.device))  # ConfigError naming the choices
    try:
        args.specs = [parse_model_spec(m) for m in args.models]
        args.size_list = [parse_size(s) for s in args.sizes]
        parse_size(args.tiled_size), parse_size(args.tiled_compare_size)
        if args.design_size:
            parse_size(args.design_size)
        parse_model_spec(args.tiled_model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not args.no_grid and not (args.specs and args.size_list and args.fractions):
        raise ConfigError("the grid needs --models, --sizes and --fractions (or --no-grid)")


def canonical_command(args: argparse.Namespace) -> str:
    """The full command reproducing this run, every grid option spelled out."""
    parts = ["m2ae", "bench", "--models", *args.models,
             "--fractions", *(f"{f:g}" for f in args.fractions),
             "--sizes", *(format_size(h, w) for h, w in args.size_list),
             "--repeats", str(args.repeats), "--device", args.device]
    if args.rounds > 1:
        parts += ["--rounds", str(args.rounds)]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    if args.dtype != "fp32":
        parts += ["--dtype", args.dtype]
    parts += ["--out", str(args.out)]
    if args.no_grid:
        parts.append("--no-grid")
    if args.width:
        parts += ["--width", str(args.width)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.cell_timeout:
        parts += ["--cell-timeout", f"{args.cell_timeout:g}"]
    if args.tiled:
        parts += ["--tiled", "--tiled-size", args.tiled_size, "--tiled-compare-size",
                  args.tiled_compare_size, "--tile", str(args.tile), "--tiled-model",
                  args.tiled_model]
    if args.design_study:
        parts.append("--design-study")
        if args.design_size:
            parts += ["--design-size", args.design_size]
    if args.profile:
        parts.append("--profile")
        if args.profile_cell:
            parts += ["--profile-cell", args.profile_cell]
    return shlex.join(parts)
