"""bench.json -> bench.md (tables) and bench.png (plot; needs the optional matplotlib)."""
from __future__ import annotations

from pathlib import Path

from .summary import memory_key

MIB = 2 ** 20


def _fraction(cell: dict) -> str:
    return "any" if cell.get("fraction") is None else f"{cell['fraction']:g}"


def _stage_share(cell: dict) -> str:
    shares = cell.get("stage_fraction") or {}
    return ", ".join(f"s{int(s) + 1}: {v:.1%}" for s, v in sorted(shares.items())) or "—"


def _wall(cell: dict) -> str:
    """Median wall time, and the range over rounds when there were several."""
    rounds = cell.get("round_wall_s")
    if not rounds:
        return f"{cell['wall_s']:.3g}"
    return f"{cell['wall_s']:.3g} ({min(rounds):.3g}–{max(rounds):.3g})"


def _check(cell: dict) -> str:
    check = cell.get("check")
    if not check:
        return "—"
    return f"{check['max_abs_diff']:.1e} {'ok' if check['ok'] else 'FAIL'} ({check['against']})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def machine_lines(data: dict) -> list[str]:
    m = data["machine"]
    lines = [f"- machine: {m['cpu']}, {m['cores']} cores; torch threads: {m['threads']}; "
             f"device {m['device']}" + (f" ({m['gpu']}, CUDA {m.get('cuda')})" if m.get("gpu") else ""),
             f"- software: torch {m['torch']}, Python {m['python']}, {m['platform']}"
             + (f"; fused tap kernel: {m['fused_taps']}" if m.get("fused_taps") else ""),
             f"- date: {data.get('date', '?')}; total benchmark time {data.get('elapsed_s', 0):.0f} s",
             f"- command: `{data['command']}`"]
    s = data["settings"]
    rounds = s.get("rounds", 1)
    per_cell = (f"- per cell: a fresh process, 1 warm-up + median of {s['repeats']} timed "
                "forwards" if rounds == 1 else
                f"- per cell: {rounds} rounds (the whole grid once, then again), each a fresh "
                f"process with 1 warm-up + median of {s['repeats']} timed forwards; the cell "
                f"reports the median over its rounds of those medians and of the rounds' peaks "
                f"(wall column: median (lowest–highest round))")
    lines.append(per_cell + "; peak memory = the process's peak RSS (VmHWM)"
                 + (" and torch.cuda.max_memory_allocated" if str(s["device"]).startswith("cuda")
                    else "") + "; MACs counted analytically from the run's own mask (ptflops style)")
    lines.append("- masks: smooth random blobs at the given share of input pixels, given as a "
                 "user mask; 'processed' is the share of the M2AS grid pixels the mask covers "
                 "after max-pooling to that grid")
    return lines


def grid_lines(data: dict) -> list[str]:
    cells = data.get("cells", [])
    memory = memory_key(data)
    out = []
    sizes = list(dict.fromkeys(c["size_label"] for c in cells))
    for size in sizes:
        here = [c for c in cells if c["size_label"] == size]
        fractions = sorted({c["fraction"] for c in here if c.get("fraction") is not None})
        models = list(dict.fromkeys(c["model"] for c in here))
        out += ["", f"### {size}: wall time in seconds (median) by blur %", ""]
        rows = []
        for model in models:
            row = [model]
            for f in fractions:
                cell = next((c for c in here if c["model"] == model
                             and (c.get("fraction") in (f, None))), None)
                row.append(f"{cell['wall_s']:.3g}" if cell and cell.get("status") == "ok"
                           else (cell or {}).get("status", "—"))
            rows.append(row)
        out += _table(["model"] + [f"{f:g} %" for f in fractions], rows)
    out += ["", "### Every cell", ""]
    header = ["size", "model", "blur %", "processed (M2AS grid)", "GMAC", "wall s",
              f"peak {'CUDA' if memory == 'cuda_peak_bytes' else 'RSS'} MiB",
              "max abs(pruned - dense)"]
    rows = []
    for c in cells:
        if c.get("status") != "ok":
            rows.append([c["size_label"], c["model"], _fraction(c), "—", "—", "—", "—",
                         f"{c.get('status')}: {c.get('error') or c.get('note', '')}"])
            continue
        rows.append([c["size_label"], c["model"], _fraction(c), _stage_share(c),
                     f"{c['macs'] / 1e9:.4g}", _wall(c),
                     f"{c[memory] / MIB:.0f}" if c.get(memory) else "—", _check(c)])
    return out + _table(header, rows)


def summary_lines(lines: list[dict]) -> list[str]:
    return _table(["status", "target", "measured", "threshold", "where"],
                  [[line["status"], line["target"], line["value"], line["threshold"],
                    line["where"]] for line in lines])


def tiled_lines(tiled: dict) -> list[str]:
    run, compare = tiled.get("run", {}), tiled.get("compare", {})
    out = ["", "## Tiled run", "",
           f"Model {tiled['model']}, tile {tiled['tile']} (overlap 64, feathered), "
           f"{tiled['fraction']:g} % blob mask, photo `{tiled['photo']}` resized.", ""]
    if run.get("status") == "ok":
        out.append(f"- {tiled['size_label']}: peak RSS {run['peak_rss_bytes'] / 1e9:.2f} GB, "
                   f"{run['tiles']} tiles, {run['wall_s']:.1f} s, "
                   f"pooling context: {run.get('tile_context', 'tile')}")
    else:
        out.append(f"- {tiled['size_label']}: {run.get('error')}")
    if compare.get("status") == "ok":
        out.append(f"- {tiled['compare_size_label']} (fits untiled): tiled vs untiled PSNR "
                   f"{_db(compare['psnr_8bit_db'])} dB (8-bit), "
                   f"{_db(compare['psnr_float_db'])} dB (float), "
                   f"max abs diff {compare['max_abs_diff']:.2e}, {compare['tiles']} tiles")
        if "psnr_8bit_db_tile_context" in compare:
            out.append(f"  - pooling: image-wide (default, two passes, "
                       f"{compare['tiled_s']:.1f} s) as above; per tile (one pass, "
                       f"{compare['tiled_s_tile_context']:.1f} s): "
                       f"{_db(compare['psnr_8bit_db_tile_context'])} dB (8-bit); "
                       f"untiled {compare['untiled_s']:.1f} s")
    else:
        out.append(f"- {tiled['compare_size_label']}: {compare.get('error')}")
    return out


def _db(value) -> str:
    return str(value) if isinstance(value, str) else f"{value:.2f}"


def design_lines(design: dict) -> list[str]:
    out = ["", "## Design study (random weights; a report, not a gate)", "",
           f"{design['size_label']}, {design['fraction']:g} % blob mask, ratios against "
           f"{design['baseline']} measured in the same run "
           f"({design.get('baseline_wall_s', float('nan')):.3g} s).", ""]
    rows = []
    for row in design["rows"]:
        if row.get("wall_ratio") is None:
            rows.append([row["model"], row["variant"], "—", "—", "—", row.get("error", "")])
            continue
        rows.append([row["model"], row["variant"], f"{row['wall_s']:.3g}",
                     f"{row['wall_ratio']:.3f}", f"{row['macs_ratio']:.3f}", ""])
    est = design.get("estimate_both_halves")
    if est:
        rows.append(["(estimate) both halves", "from the per-part profile of paper-pruned: "
                     + est["method"], f"{est['wall_s']:.3g}", f"{est['wall_ratio']:.3f}", "—",
                     f"conv4+conv5 = {est['conv4_conv5_share']:.1%} of the forward"])
    out += _table(["model", "variant", "wall s", "wall / NAFNet", "MACs / NAFNet", "note"], rows)
    out += ["", "The both-halves row is a benchmark-local prototype (`m2ae_core/benchmark/"
                "halves.py`), not part of the model: it would have to be trained that way."]
    return out


def profile_lines(profile: dict) -> list[str]:
    if profile.get("status") != "ok":
        return ["", "## Profile", "", f"failed: {profile.get('error')}"]
    out = ["", f"## Profile: {profile['model']}, {profile['size_label']}, "
               f"{profile['fraction']:g} % blur, {profile.get('dtype', 'fp32')}", "",
           f"One forward under torch.profiler: {profile['forward_s']:.3g} s "
           f"(profiling adds overhead). Parts (inclusive time; they nest):", ""]
    on_device = any("host_seconds" in p for p in profile["parts"])
    if on_device:
        out[-2] += (" 'seconds' is the time of the part's GPU kernels, 'host seconds' the time"
                    " the host spent in it (launches, index building and waits included).")
    out += _table(["part", "calls", "seconds"] + (["host seconds"] if on_device else [])
                  + ["share"],
                  [[p["part"], p["calls"], f"{p['seconds']:.3f}"]
                   + ([f"{p['host_seconds']:.3f}"] if on_device else []) + [f"{p['share']:.1%}"]
                   for p in profile["parts"]])
    out += ["", "Top ops by self time:", ""]
    out += _table(["op", "calls", "seconds", "share"],
                  [[o["op"], o["calls"], f"{o['seconds']:.3f}", f"{o['share']:.1%}"]
                   for o in profile["ops"]])
    return out


def write_markdown(data: dict, path: Path) -> None:
    lines = ["# M2AE performance benchmark", ""] + machine_lines(data)
    lines += ["", "## Targets (issue 6)", ""] + summary_lines(data["summary"])
    lines += ["", "## Grid"] + grid_lines(data)
    if data.get("tiled"):
        lines += tiled_lines(data["tiled"])
    if data.get("design_study"):
        lines += design_lines(data["design_study"])
    if data.get("profile"):
        lines += profile_lines(data["profile"])
    if data.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in data["notes"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _import_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(data: dict, path: Path) -> str | None:
    """Wall time and GMAC against blur fraction, one column per size. Returns a note instead
    of writing when matplotlib is missing."""
    try:
        plt = _import_pyplot()
    except ImportError:
        return (f"matplotlib is not installed: {path.name} not written "
                "(pip install 'm2ae[bench]' for the plot)")
    cells = [c for c in data.get("cells", []) if c.get("status") == "ok"]
    sizes = list(dict.fromkeys(c["size_label"] for c in cells))
    if not sizes:
        return f"no measured cell: {path.name} not written"
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.5 * len(sizes), 7), squeeze=False)
    for column, size in enumerate(sizes):
        here = [c for c in cells if c["size_label"] == size]
        span = sorted({c["fraction"] for c in here if c.get("fraction") is not None}) or [0, 100]
        for model in dict.fromkeys(c["model"] for c in here):
            mine = sorted((c for c in here if c["model"] == model),
                          key=lambda c: c.get("fraction") or 0)
            for row, key, scale in ((0, "wall_s", 1.0), (1, "macs", 1e-9)):
                ax = axes[row][column]
                if mine[0].get("fraction") is None:  # plain backbone: one value for any mask
                    ax.plot([span[0], span[-1]], [mine[0][key] * scale] * 2, "--", label=model)
                else:
                    ax.plot([c["fraction"] for c in mine], [c[key] * scale for c in mine],
                            "o-", label=model)
        axes[0][column].set_title(size)
        axes[0][column].set_ylabel("wall time, s (median)")
        axes[1][column].set_ylabel("GMAC")
        axes[1][column].set_xlabel("blur fraction, % of pixels")
        for row in (0, 1):
            axes[row][column].set_ylim(bottom=0)
            axes[row][column].grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    machine = data["machine"]
    fig.suptitle(f"M2AE bench — {machine['cpu']}, torch threads: {machine['threads']}, {machine['device']}",
                 fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
