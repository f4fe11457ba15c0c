"""Design study: what more masking would buy on this machine (random weights; a report).

Variants, all at the same size and a 10 % blob mask, as wall-time and MAC ratios against
the plain NAFNet-w32 measured in the same run:

* the paper (M2AS on stage 4, only the first half of each block masked) — the model as built;
* the same with the second half masked too — a benchmark-local prototype (:mod:`.halves`),
  measured, plus an estimate from the per-part profile of the paper variant as a cross-check;
* M2AS also on stage 3, and on stages 2+3+4 (``m2as_stages`` of the config).
"""
from __future__ import annotations

from .profiling import FOLDED_LABEL

DESIGN_FRACTION = 10
DESIGN_BASELINE = "nafnet-w32"
DESIGN_VARIANTS = (
    ("paper-pruned", "M2AS on stage 4, first half of each block masked (the paper; as built)"),
    ("paper-pruned/both-halves", "M2AS on stage 4, both halves masked "
                                 "(prototype: conv4 and conv5 on the mask too)"),
    ("paper-pruned/m2as=2,3", "M2AS on stages 3+4, first half masked"),
    ("paper-pruned/m2as=1,2,3", "M2AS on stages 2+3+4, first half masked"),
)
# Parts the prototype moves onto the mask. conv4 is profiled together with the deformable
# conv's static pass where the two are folded (the pruned path): counting that part whole
# also shrinks the on-mask taps, which stay, so the estimate remains a lower bound.
MASKED_BY_PROTOTYPE = ("m2as block: conv4", FOLDED_LABEL, "m2as block: conv5")


def design_rows(cells: list[dict], baseline: dict | None) -> list[dict]:
    """One row per measured variant: ratios against the baseline cell."""
    descriptions = dict(DESIGN_VARIANTS)
    rows = []
    for cell in cells:
        row = {"model": cell["model"], "variant": descriptions.get(cell["model"], cell["model"]),
               "status": cell.get("status")}
        if cell.get("status") == "ok" and baseline and baseline.get("status") == "ok":
            row.update(wall_s=cell["wall_s"], macs=cell["macs"],
                       wall_ratio=cell["wall_s"] / baseline["wall_s"],
                       macs_ratio=cell["macs"] / baseline["macs"],
                       stage_fraction=cell.get("stage_fraction"))
        else:
            row["error"] = cell.get("error") or (baseline or {}).get("error")
        rows.append(row)
    return rows


def estimate_both_halves(paper_cell: dict | None, profile: dict | None,
                         baseline: dict | None) -> dict | None:
    """Wall time of the both-halves variant estimated from the paper variant's profile:
    conv4 and conv5 of the M2AS blocks shrink to the masked share of the grid. Ignores the
    gather/scatter the masking adds, so it is a lower bound."""
    if not (paper_cell and profile and baseline) or profile.get("status") != "ok" \
            or paper_cell.get("status") != "ok" or baseline.get("status") != "ok":
        return None
    parts = {p["part"]: p["share"] for p in profile.get("parts", [])}
    share = sum(parts.get(name, 0.0) for name in MASKED_BY_PROTOTYPE)
    fractions = paper_cell.get("stage_fraction") or {}
    q = max(fractions.values()) if fractions else DESIGN_FRACTION / 100
    wall = paper_cell["wall_s"] * (1 - (1 - q) * share)
    return {"conv4_conv5_share": share, "stage_fraction": q, "wall_s": wall,
            "wall_ratio": wall / baseline["wall_s"],
            "method": "paper-pruned wall x (1 - (1 - masked share) x profiled share of the "
                      "M2AS blocks' conv4 + conv5); no gather/scatter overhead: a lower bound"}
