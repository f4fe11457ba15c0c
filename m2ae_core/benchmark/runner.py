"""``m2ae bench``: run the grid cell by cell in fresh processes, then the extra runs, then
write bench.json, bench.md and bench.png and print the issue's targets."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from ..errors import M2AEError
from ..memory import DEFAULT_THRESHOLD
from .child import run_in_child
from .design import (DESIGN_BASELINE, DESIGN_FRACTION, DESIGN_VARIANTS, design_rows,
                     estimate_both_halves)
from .models import parse_model_spec
from .options import canonical_command, validate
from .report import write_markdown, write_plot
from .rounds import merge_rounds
from .summary import format_lines, summarize
from .workload import format_size, parse_size

MIB = 2 ** 20


class Bench:
    """One benchmark run: its settings, its measured cells and its notes."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.cells: list[dict] = []
        self.notes: list[str] = []
        self.done = 0

    # ------------------------------------------------------------------ one measurement
    def task(self, kind: str, model: str, size, fraction=None, **extra) -> dict:
        a = self.args
        return {"kind": kind, "model": model, "size": list(size), "fraction": fraction,
                "repeats": a.repeats, "device": a.device, "threads": a.threads,
                "dtype": a.dtype,
                "width": a.width, "seed": a.seed, **extra}

    def measure(self, spec, size, fraction, **extra) -> dict:
        cell = {"model": spec.name, "mode": spec.mode, "description": spec.description,
                "size": list(size), "size_label": format_size(*size),
                "fraction": fraction if spec.uses_mask else None}
        if spec.base == "default" and not _default_installed():
            cell.update(status="skipped", note="bundled default weights not installed")
        else:
            cell.update(run_in_child(self.task("cell", spec.name, size, cell["fraction"], **extra),
                                     self.args.cell_timeout))
        self.done += 1
        print(_progress(self.done, cell), flush=True)
        return cell

    def find(self, model: str, size, fraction) -> dict | None:
        for cell in self.cells:
            if cell["model"] == model and cell["size"] == list(size) and (
                    cell["fraction"] is None or cell["fraction"] == fraction):
                return cell
        return None

    # ------------------------------------------------------------------ the grid
    def run_grid(self) -> None:
        """Every round of the grid (``--rounds``), merged cell by cell (:mod:`.rounds`)."""
        specs = self.args.specs
        if any(s.base == "default" for s in specs) and not _default_installed():
            from ..weights import DEFAULT_WEIGHTS

            self.notes.append(f"model 'default' skipped: the bundled weights are not installed "
                              f"yet ({DEFAULT_WEIGHTS})")
        twins = {s.pair_key for s in specs if s.mode == "dense"}
        # A plain backbone ignores the mask and a dense path computes every pixel whatever
        # the mask: both cost the same at every fraction, so they are measured once per size,
        # in the round of the fraction nearest the targets' 10 %, next to the pruned model
        # they are compared with. Pruned cells of the other fractions check against a dense
        # forward of their own.
        plain_at = min(self.args.fractions, key=lambda f: (abs(f - DESIGN_FRACTION), f))
        self.notes.append(f"every measuring process serves allocations of "
                          f"{DEFAULT_THRESHOLD >> 20} MiB or more by mmap, as the m2ae CLI does "
                          "(m2ae_core/memory.py): freed feature maps go back to the OS instead "
                          "of fragmenting the heap")
        if twins and len(self.args.fractions) > 1:
            self.notes.append(f"dense paths are timed at {plain_at:g} % only (their cost does "
                              "not depend on the mask); every pruned cell is still checked "
                              "against a dense forward")
        rounds = []
        try:
            for index in range(self.args.rounds):
                if self.args.rounds > 1:
                    print(f"round {index + 1} of {self.args.rounds}", flush=True)
                self.cells = []
                self._run_grid_round(twins, plain_at)
                rounds.append(self.cells)
        except KeyboardInterrupt:
            if rounds:  # keep what complete rounds measured
                self.notes.append(f"interrupted in round {len(rounds) + 1}: the grid's cells "
                                  f"are the median of the {len(rounds)} complete round(s)")
                self.cells = merge_rounds(rounds)
            raise
        self.cells = merge_rounds(rounds)

    def _run_grid_round(self, twins: set, plain_at: float) -> None:
        specs = self.args.specs
        for size in self.args.size_list:
            for fraction in self.args.fractions:
                outputs = {}
                for spec in specs:
                    if spec.mode in ("plain", "dense") and fraction != plain_at:
                        continue
                    extra = {}
                    paired = (fraction == plain_at and spec.mode in ("pruned", "dense")
                              and spec.pair_key in twins and any(
                                  s.mode == "pruned" and s.pair_key == spec.pair_key
                                  for s in specs))
                    if paired and not spec.both_halves:
                        path = self.scratch / f"{len(self.cells)}.pt"
                        extra["save_output"] = str(path)
                        outputs.setdefault(spec.pair_key, {})[spec.mode] = (path, spec.name)
                    elif spec.mode == "pruned":
                        extra["check"] = "in-cell"
                    self.cells.append(self.measure(spec, size, fraction, **extra))
                self._compare_twins(outputs, size, fraction)

    def _compare_twins(self, outputs: dict, size, fraction) -> None:
        import torch

        from ..precision import resolve_dtype
        from .cell import check_result

        for pair in outputs.values():
            if "pruned" not in pair or "dense" not in pair:
                continue
            (p_path, p_name), (d_path, d_name) = pair["pruned"], pair["dense"]
            cell = self.find(p_name, size, fraction)
            if p_path.is_file() and d_path.is_file() and cell is not None:
                diff = (torch.load(p_path) - torch.load(d_path)).abs().max()
                cell["check"] = check_result(
                    diff, d_name, resolve_dtype(self.args.dtype, torch.device(self.args.device)))
            for path in (p_path, d_path):
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ extra runs
    def run_tiled(self) -> dict:
        a = self.args
        size, compare = parse_size(a.tiled_size), parse_size(a.tiled_compare_size)
        from .tiled import EXAMPLE_PHOTO

        common = {"tile": a.tile}
        print(f"tiled: {a.tiled_model} {a.tiled_size}, tile {a.tile} ...", flush=True)
        run = run_in_child(self.task("tiled", a.tiled_model, size, DESIGN_FRACTION, **common),
                           a.cell_timeout)
        print(f"tiled: compare tiled vs untiled at {a.tiled_compare_size} ...", flush=True)
        comparison = run_in_child(self.task("tile-compare", a.tiled_model, compare,
                                            DESIGN_FRACTION, **common), a.cell_timeout)
        return {"model": a.tiled_model, "size_label": format_size(*size), "tile": a.tile,
                "compare_size_label": format_size(*compare), "fraction": DESIGN_FRACTION,
                "photo": EXAMPLE_PHOTO.name, "run": run, "compare": comparison}

    def run_profile(self, model: str, size, fraction) -> dict:
        print(f"profile: {model} {format_size(*size)} {fraction:g} % ...", flush=True)
        result = run_in_child(self.task("profile", model, size, fraction), self.args.cell_timeout)
        return {"model": model, "size_label": format_size(*size), "fraction": fraction, **result}

    def run_design(self, profile: dict | None) -> dict:
        a = self.args
        size = parse_size(a.design_size) if a.design_size else _largest(a.size_list)
        cells = {}
        for name in (DESIGN_BASELINE,) + tuple(n for n, _ in DESIGN_VARIANTS):
            cell = self.find(name, size, DESIGN_FRACTION)
            if cell is None:
                cell = self.measure(parse_model_spec(name), size, DESIGN_FRACTION)
            cells[name] = cell
        baseline = cells.pop(DESIGN_BASELINE)
        if not (profile and profile["model"] == "paper-pruned"
                and profile["size_label"] == format_size(*size)
                and profile["fraction"] == DESIGN_FRACTION):
            profile = self.run_profile("paper-pruned", size, DESIGN_FRACTION)
        return {"size_label": format_size(*size), "fraction": DESIGN_FRACTION,
                "baseline": DESIGN_BASELINE, "baseline_wall_s": baseline.get("wall_s"),
                "rows": design_rows(list(cells.values()), baseline),
                "estimate_both_halves": estimate_both_halves(cells["paper-pruned"], profile,
                                                             baseline),
                "profile": profile, "cells": [baseline] + list(cells.values())}

    def profile_target(self) -> tuple[str, tuple[int, int], float]:
        a = self.args
        if a.profile_cell:
            try:
                model, size, fraction = a.profile_cell.split(":")
                parse_model_spec(model)
                return model, parse_size(size), float(fraction)
            except ValueError:
                raise M2AEError(f"--profile-cell {a.profile_cell!r} is not MODEL:WxH:PERCENT") from None
        model = next((s.name for s in a.specs if s.mode == "pruned"), "paper-pruned")
        sizes = a.size_list or [parse_size("2152x1436")]
        fractions = a.fractions or [DESIGN_FRACTION]
        return model, _largest(sizes), min(fractions, key=lambda f: (abs(f - DESIGN_FRACTION), f))


def _largest(sizes):
    return max(sizes, key=lambda s: s[0] * s[1])


def _default_installed() -> bool:
    from .. import weights

    return Path(weights.DEFAULT_WEIGHTS).is_file()


def _progress(index: int, cell: dict) -> str:
    head = (f"[{index}] {cell['size_label']} "
            f"{'any' if cell['fraction'] is None else format(cell['fraction'], 'g') + ' %'} "
            f"{cell['model']}: ")
    if cell.get("status") != "ok":
        return head + f"{cell.get('status')}: {cell.get('error') or cell.get('note', '')}"
    text = (f"{cell['wall_s']:.3g} s, {cell['macs'] / 1e9:.4g} GMAC, "
            f"peak RSS {cell['peak_rss_bytes'] / MIB:.0f} MiB")
    if cell.get("cuda_peak_bytes"):
        text += f", CUDA peak {cell['cuda_peak_bytes'] / MIB:.0f} MiB"
    check = cell.get("check")
    if check:
        text += f", |pruned-dense| {check['max_abs_diff']:.1e} {'ok' if check['ok'] else 'FAIL'}"
    return head + text


def run_bench(args: argparse.Namespace) -> int:
    from .machine import machine_info

    try:
        validate(args)
    except M2AEError as exc:
        print(f"m2ae: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = canonical_command(args)
    print(f"m2ae bench -> {out}\n{command}", flush=True)
    started = time.perf_counter()
    data = {"schema": 1, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command, "argv": sys.argv,
            "machine": machine_info(args.device, args.threads),
            "settings": {"models": args.models, "fractions": args.fractions,
                         "sizes": [format_size(*s) for s in args.size_list],
                         "repeats": args.repeats, "rounds": args.rounds,
                         "device": args.device, "dtype": args.dtype,
                         "threads": args.threads, "width": args.width, "seed": args.seed}}
    with tempfile.TemporaryDirectory(prefix="m2ae-bench-out-") as scratch:
        bench = Bench(args, Path(scratch))
        try:
            if not args.no_grid:
                bench.run_grid()
            if args.tiled:
                data["tiled"] = bench.run_tiled()
            profile = None
            if args.profile:
                profile = bench.run_profile(*bench.profile_target())
                data["profile"] = profile
            if args.design_study:
                data["design_study"] = bench.run_design(profile)
        except M2AEError as exc:
            print(f"m2ae: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            bench.notes.append("interrupted: the results are partial")
            print("m2ae: interrupted; writing the partial results", file=sys.stderr)
    data["cells"] = bench.cells
    data["elapsed_s"] = time.perf_counter() - started
    data["summary"] = summarize(data)
    plot_note = write_plot(data, out / "bench.png")
    if plot_note:
        bench.notes.append(plot_note)
    data["notes"] = bench.notes
    (out / "bench.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    write_markdown(data, out / "bench.md")
    print("\n".join(["", "targets (issue 6):"] + format_lines(data["summary"])))
    for note in bench.notes:
        print(f"note: {note}")
    written = ["bench.json", "bench.md"] + ([] if plot_note else ["bench.png"])
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    return 0
