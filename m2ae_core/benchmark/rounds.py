"""Several rounds of the grid, one fresh process per cell and round, merged cell by cell.

On a shared VM one process can run 20 % slower than the next for the same work (its memory
placement, its neighbours), so the single process of a one-round cell can land anywhere in
that band. With rounds, each cell reports the median over its rounds of the per-round
medians (wall time) and of the per-round peaks (memory); the per-round values are kept.
"""
from __future__ import annotations

from statistics import median

MEMORY_KEYS = ("peak_rss_bytes", "cuda_peak_bytes")


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Cells of every round (each round the same cells in the same order) -> one cell each.
    A cell that failed or was skipped in any round is reported as that round's cell."""
    if len(rounds) == 1:
        return rounds[0]
    merged = []
    for cells in zip(*rounds, strict=True):
        failed = next((c for c in cells if c.get("status") != "ok"), None)
        if failed is not None:
            merged.append(failed)
            continue
        cell = dict(cells[0])
        cell["round_wall_s"] = [c["wall_s"] for c in cells]
        cell["wall_s"] = median(cell["round_wall_s"])
        cell["times_s"] = [t for c in cells for t in c["times_s"]]
        for key in MEMORY_KEYS:
            if cells[0].get(key) is not None:
                cell[f"round_{key}"] = [c[key] for c in cells]
                cell[key] = median(cell[f"round_{key}"])
        checks = [c["check"] for c in cells if c.get("check")]
        if checks:  # the worst round's check: every round's output must match
            cell["check"] = max(checks, key=lambda k: (not k["ok"], k["max_abs_diff"]))
        merged.append(cell)
    return merged
