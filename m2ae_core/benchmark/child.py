"""Run one measurement in a fresh Python process, so its peak memory is its own.

Parent: :func:`run_in_child` writes the task as JSON to the child's stdin and reads the
result from a JSON file. Child: ``python -m m2ae_core.benchmark.child RESULT.json``
dispatches on ``task["kind"]`` and always writes a result (``status`` "error" with the
message when the measurement raised).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path


def _handlers():
    from .cell import measure_cell
    from .profiling import profile_cell
    from .tiled import measure_tiled, compare_tiled

    return {"cell": measure_cell, "profile": profile_cell, "tiled": measure_tiled,
            "tile-compare": compare_tiled}


def child_env(threads: int | None) -> dict:
    from ..memory import with_huge_pages

    env = with_huge_pages()  # the allocator policy of the m2ae CLI (see m2ae_core/memory.py)
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_in_child(task: dict, timeout: float | None = None) -> dict:
    """Measure ``task`` in a new interpreter; failures come back as ``status: "error"``."""
    with tempfile.TemporaryDirectory(prefix="m2ae-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "m2ae_core.benchmark.child", str(result_path)],
                input=json.dumps(task), text=True, capture_output=True, timeout=timeout,
                env=child_env(task.get("threads")))
        except subprocess.TimeoutExpired:
            return {"status": "error", "error": f"timed out after {timeout:.0f} s"}
        if result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return {"status": "error",
                "error": f"child exited with code {proc.returncode} without a result"
                         + (": " + " | ".join(tail) if tail else "")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result_path = Path(argv[0])
    task = json.loads(sys.stdin.read())
    from ..memory import return_freed_memory_promptly

    return_freed_memory_promptly()  # the allocator policy of the m2ae CLI, for every model
    try:
        result = _handlers()[task["kind"]](task)
    except Exception as exc:  # reported, not raised: one failed cell must not stop the grid
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)}
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
