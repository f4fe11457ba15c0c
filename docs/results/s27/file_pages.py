"""Where a model's first forward pages in shared-library code (file-backed RSS), by module.

Session 27 probe. Run: PYTHONPATH=.:scripts python docs/results/s27/file_pages.py MODEL
Prints the modules whose call grew RssFile by >= 0.1 MiB (children counted in their
parents too: read the leaves) and, after the forward, file-backed RSS by mapped file.
"""
from __future__ import annotations

import argparse
import collections
import sys

import torch

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.procfs import kib_field_bytes

MIB = 2 ** 20


def rss_file_mib() -> float:
    return kib_field_bytes("/proc/self/status", "RssFile") / MIB


def rss_by_file() -> dict[str, float]:
    sizes: dict[str, float] = collections.defaultdict(float)
    name = None
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as fh:
        for line in fh:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:" and name and name.startswith("/"):
                sizes[name.rsplit("/", 1)[-1]] += int(head[1]) / 1024
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    add_forward_arguments(parser)
    args = parser.parse_args()
    forward = prepare_forward(args)
    before_forward = rss_file_mib()
    starts: dict[str, float] = {}
    grew: list[tuple[str, float]] = []

    def pre(name):
        def hook(module, inputs):
            starts[name] = rss_file_mib()
        return hook

    def post(name):
        def hook(module, inputs, output):
            delta = rss_file_mib() - starts.pop(name)
            if delta >= 0.1:
                grew.append((name, delta))
        return hook

    for name, module in forward.model.named_modules():
        module.register_forward_pre_hook(pre(name or "model"))
        module.register_forward_hook(post(name or "model"))
    with torch.inference_mode():
        forward()
    after_first = rss_file_mib()
    with torch.inference_mode():
        forward()
    print(f"{forward.label}: RssFile before the forward {before_forward:.1f} MiB, after the "
          f"first {after_first:.1f}, after the second {rss_file_mib():.1f}")
    for name, delta in grew:
        print(f"  {name}: +{delta:.2f} MiB")
    print("  by file:", ", ".join(f"{k} {v:.1f}" for k, v in
                                  sorted(rss_by_file().items(), key=lambda kv: -kv[1])[:8]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
