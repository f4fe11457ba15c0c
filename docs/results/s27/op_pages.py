"""Which aten ops of a model's first forward page in shared-library code (RssFile growth).

Session 27 probe. Run: PYTHONPATH=.:scripts python docs/results/s27/op_pages.py MODEL
Also measures the inputs' preparation (the bench's blob mask) the same way.
"""
from __future__ import annotations

import argparse
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.procfs import kib_field_bytes

MIB = 2 ** 20


def rss_file_mib() -> float:
    return kib_field_bytes("/proc/self/status", "RssFile") / MIB


class PagesByOp(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.grown: dict[str, float] = collections.defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = rss_file_mib()
        out = func(*args, **(kwargs or {}))
        delta = rss_file_mib() - start
        if delta > 0:
            self.grown[str(func)] += delta
        return out


def report(title: str, grown: dict[str, float]) -> None:
    total = sum(grown.values())
    print(f"{title}: +{total:.2f} MiB in ops")
    for name, delta in sorted(grown.items(), key=lambda kv: -kv[1]):
        if delta >= 0.05:
            print(f"  {name}: +{delta:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    add_forward_arguments(parser)
    args = parser.parse_args()
    start = rss_file_mib()
    with PagesByOp() as setup:
        forward = prepare_forward(args)
    print(f"{forward.label}: preparation grew RssFile by {rss_file_mib() - start:.2f} MiB")
    report("preparation", setup.grown)
    start = rss_file_mib()
    with torch.inference_mode(), PagesByOp() as pages:
        forward()
    print(f"first forward grew RssFile by {rss_file_mib() - start:.2f} MiB")
    report("first forward", pages.grown)


if __name__ == "__main__":
    main()
