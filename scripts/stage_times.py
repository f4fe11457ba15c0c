"""Seconds per stage inside whole forwards of a benchmark model (hooks around the stages).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python scripts/stage_times.py \
        MODEL [--fraction 10] [--size 2152x1436] [--forwards 3]

MODEL is a `m2ae bench` model spec (``nafnet-w32``, ``paper-pruned``, ...). Prints, for every
forward after the first, the forward's seconds and those of the full-resolution encoder stage,
the deepest encoder stage (M2AS in ``paper``), the middle blocks and the last decoder stage.
For telling whether a block costs in the network what it costs alone
(``scripts/block_bench.py``); the issue's numbers come from ``m2ae bench``.
"""
from __future__ import annotations

import argparse
import time

import torch

from forward_setup import add_forward_arguments, prepare_forward


def timed_stages(model) -> dict[str, float]:
    """Hooks that store each chosen stage's seconds of the latest forward in the dict."""
    deepest = f"encoders.{len(model.encoders) - 1}"
    last_decoder = f"decoders.{len(model.decoders) - 1}"
    seconds: dict[str, float] = {}
    for name, module in model.named_modules():
        if name in ("encoders.0", deepest, "middle_blks", last_decoder):
            module.register_forward_pre_hook(
                lambda _m, _a, name=name: seconds.__setitem__(name, -time.perf_counter()))
            module.register_forward_hook(
                lambda _m, _a, _o, name=name: seconds.__setitem__(
                    name, seconds[name] + time.perf_counter()))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_forward_arguments(parser)
    parser.add_argument("--forwards", type=int, default=3)
    args = parser.parse_args()
    forward = prepare_forward(args)
    seconds = timed_stages(forward.model)
    with torch.inference_mode():
        for index in range(args.forwards):
            begin = time.perf_counter()
            forward()
            total = time.perf_counter() - begin
            if index:  # the first forward warms up
                print(f"{forward.label}: forward {total:.2f} s; "
                      + ", ".join(f"{name} {value:.2f}" for name, value in seconds.items()),
                      flush=True)


if __name__ == "__main__":
    main()
