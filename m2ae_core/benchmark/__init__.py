"""``m2ae bench``: the performance benchmark of issue 6 (pixel pruning vs NAFNet).

Modules, one job each: ``options`` (CLI), ``runner`` (orchestration), ``child`` (one
measurement per fresh process), ``cell`` / ``tiled`` / ``profiling`` (what a child
measures), ``models`` (model specs), ``workload`` (sizes, blob masks, images, weights),
``halves`` (the both-halves design prototype), ``design`` (design-study rows), ``summary``
(PASS/MISS of the issue's targets), ``report`` (Markdown and PNG), ``machine`` (machine
description, peak memory, timers).
"""
from .options import add_bench_arguments
from .runner import run_bench

__all__ = ["add_bench_arguments", "run_bench"]
