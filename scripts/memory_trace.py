"""Where resident memory goes during one forward: two benchmark models side by side.

    python scripts/memory_trace.py --models nafnet-w32 paper-pruned --size 2152x1436 \
        --fraction 10 --out docs/results/memory-2152

Each model runs in a fresh process set up like a benchmark cell (``m2ae bench``): the same
allocator policy, inputs, threads and a warm-up forward whose output stays alive during the
traced forward. Resident memory (/proc/self/status: anonymous and file-backed) is sampled
after loading, after making the inputs, after the warm-up, and whenever a module of the
traced forward returns, with the heap's live allocations (``mallinfo2``: what no trim can
return, whoever made them); the table keeps the stages (top-level modules and the items of the
encoder and decoder lists) and the module at the peak. After the forward it splits memory by
mapping (heap, other anonymous memory, torch's code) and measures how much of the heap is free
but still resident (what ``malloc_trim`` returns).
For explaining a peak-memory difference; the issue's numbers come from ``m2ae bench``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from pathlib import Path

STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def heap_in_use_mib() -> float | None:
    """MiB that malloc's arenas hold in live allocations (None without ``mallinfo2``): what
    ``malloc_trim`` cannot return, whatever allocated it (torch, MKL, Python)."""
    from m2ae_core.memory import malloc_stats

    stats = malloc_stats()
    return None if stats is None else stats.uordblks / 2 ** 20


def status_mib() -> dict[str, float]:
    values = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in STATUS_KEYS:
                values[key] = int(rest.split()[0]) / 1024
    values["HeapInUse"] = heap_in_use_mib()
    return values


def mapping_mib() -> dict[str, float]:
    """Resident MiB per kind of mapping: [heap], [anon] (malloc's mmaps and others), torch
    code (libtorch*), other files."""
    totals: dict[str, float] = {}
    kind = None
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if parts and not parts[0].endswith(":"):  # a mapping's header line
                path = parts[5] if len(parts) > 5 else ""
                kind = ("[anon]" if not path else path if path.startswith("[")
                        else "torch code" if "libtorch" in path else "other files")
            elif parts and parts[0] == "Rss:":
                totals[kind] = totals.get(kind, 0.0) + int(parts[1]) / 1024
    return totals


def trace_child(spec_text: str, height: int, width: int, fraction: float, threads: int) -> dict:
    import torch

    from m2ae_core.benchmark.cell import make_inputs
    from m2ae_core.benchmark.machine import set_threads
    from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
    from m2ae_core.memory import return_freed_memory_promptly

    return_freed_memory_promptly()
    set_threads(threads)
    spec = parse_model_spec(spec_text)
    points = [("start", status_mib())]
    model = build_spec_model(spec)
    points.append(("model built", status_mib()))
    image, mask = make_inputs(height, width, fraction if spec.uses_mask else None, "cpu")
    points.append(("inputs made", status_mib()))
    samples = []

    def record(name):
        return lambda module, args, output: samples.append((name, status_mib()))

    with torch.inference_mode():
        output = model(image, mask=mask, pruned=spec.mode != "dense")
        points.append(("after warm-up forward", status_mib()))
        hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
        output = model(image, mask=mask, pruned=spec.mode != "dense")  # noqa: F841 (kept alive)
        for hook in hooks:
            hook.remove()
    peak_name, peak = max(samples, key=lambda s: s[1]["VmRSS"])
    top = [(n, s) for n, s in samples if n.count(".") <= 1]  # stages, blocks lists' items
    points += [(f"traced: {n}", s) for n, s in top]
    points.append((f"traced peak sample: {peak_name}", peak))
    points.append(("after traced forward", status_mib()))
    maps = mapping_mib()
    libc = ctypes.CDLL(None)
    libc.malloc_trim(0)
    heap_trimmed = mapping_mib().get("[heap]", 0.0)
    return {"model": spec_text, "points": points, "peak_module": peak_name,
            "hwm_mib": status_mib()["VmHWM"], "mappings_mib": maps,
            "free_heap_mib": maps.get("[heap]", 0.0) - heap_trimmed}


def run_child(spec: str, args) -> dict:
    from m2ae_core.benchmark.child import child_env

    command = [sys.executable, __file__, "--child", spec, "--size", args.size,
               "--fraction", str(args.fraction), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(args.threads))
    if done.returncode != 0:
        raise SystemExit(f"{spec}: child failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _mib_difference(value: float | None, minus: float | None) -> str:
    return "–" if value is None or minus is None else f"{value - minus:+.0f}"


def markdown(results: list[dict], args) -> str:
    a, b = results
    lines = [f"# Resident memory, {a['model']} vs {b['model']}", "",
             f"- {args.size}, {args.fraction:g} % blob mask (given), {args.threads} threads; "
             "command: `python scripts/memory_trace.py --models "
             f"{a['model']} {b['model']} --size {args.size} --fraction {args.fraction:g} "
             f"--threads {args.threads} --out {args.out}`",
             "- MiB of resident memory: RSS = anonymous + file-backed (code). 'traced:' rows are "
             "the second forward, sampled when each top-level module returns. 'heap' = malloc's "
             "live allocations (mallinfo2), resident or not.", "",
             f"| point | {a['model']} RSS | anon | file | heap | {b['model']} RSS | anon | file | "
             "heap | difference RSS | anon | file | heap |",
             "|---|" + "---:|" * 12]
    other = dict(b["points"])
    for (name, x) in a["points"]:
        y = other.get(name)
        if name.startswith("traced peak sample"):
            y = next(s for n, s in b["points"] if n.startswith("traced peak sample"))
        if y is None:
            continue
        lines.append(f"| {name} | {x['VmRSS']:.0f} | {x['RssAnon']:.0f} | {x['RssFile']:.0f} | "
                     f"{_mib(x['HeapInUse'])} | "
                     f"{y['VmRSS']:.0f} | {y['RssAnon']:.0f} | {y['RssFile']:.0f} | "
                     f"{_mib(y['HeapInUse'])} | "
                     f"{y['VmRSS'] - x['VmRSS']:+.0f} | {y['RssAnon'] - x['RssAnon']:+.0f} | "
                     f"{y['RssFile'] - x['RssFile']:+.0f} | "
                     f"{_mib_difference(y['HeapInUse'], x['HeapInUse'])} |")
    lines += ["", "| after the forward | " + " | ".join(r["model"] for r in results) + " |",
              "|---|---:|---:|"]
    kinds = sorted(set(a["mappings_mib"]) | set(b["mappings_mib"]))
    for kind in kinds:
        if max(r["mappings_mib"].get(kind, 0.0) for r in results) < 0.5:
            continue
        lines.append(f"| {kind} | " + " | ".join(f"{r['mappings_mib'].get(kind, 0.0):.1f}"
                                                for r in results) + " |")
    lines.append("| of the heap: free but resident (malloc_trim returns it) | "
                 + " | ".join(f"{r['free_heap_mib']:.1f}" for r in results) + " |")
    lines.append("| peak (VmHWM) | " + " | ".join(f"{r['hwm_mib']:.0f}" for r in results) + " |")
    lines.append("| peak sampled at | " + " | ".join(r["peak_module"] for r in results) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs=2, default=["nafnet-w32", "paper-pruned"])
    parser.add_argument("--size", default="2152x1436", help="WxH")
    parser.add_argument("--fraction", type=float, default=10.0, help="blur mask, percent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for memory.json and memory.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        print(json.dumps(trace_child(args.child, height, width, args.fraction, args.threads)))
        return
    results = [run_child(spec, args) for spec in args.models]
    report = markdown(results, args)
    print(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        (out / "memory.md").write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
