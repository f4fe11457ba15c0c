"""How often the heap shrinks and grows inside one forward, per stage (glibc only).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python scripts/heap_churn.py \
        MODEL [--fraction 10] [--size 2152x1436]

MODEL is a `m2ae bench` model spec. Set up like a benchmark cell (allocator policy, inputs,
threads); during the second forward it samples the heap's size (``mallinfo2().arena``) as each
leaf module returns and counts, per stage, the steps where it shrank or grew by more than
1 MiB. A shrink inside a stage is memory handed back to the OS that the next band faults in
again (the network's own trim between stages shows as one shrink in ``downs.*`` /
``ups.*``). Run it with glibc's ``MALLOC_TRIM_THRESHOLD_`` set to compare trim thresholds;
unset, the toolkit's policy applies (m2ae_core/memory.py).
"""
from __future__ import annotations

import argparse
from collections import Counter

import torch

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.memory import malloc_stats

STEP = 1 << 20


def heap_bytes() -> int:
    return malloc_stats().arena


def stage_of(module_name: str) -> str:
    return ".".join(module_name.split(".")[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_forward_arguments(parser)
    args = parser.parse_args()
    if malloc_stats() is None:
        raise SystemExit("heap_churn needs glibc's mallinfo2 (glibc 2.33 or later)")
    forward = prepare_forward(args)
    samples: list[tuple[str, int]] = []
    with torch.inference_mode():
        forward()
        for name, module in forward.model.named_modules():
            if name and not list(module.children()):
                module.register_forward_hook(
                    lambda _m, _a, _o, name=name: samples.append((name, heap_bytes())))
        forward()
    shrinks, grows = Counter(), Counter()
    for (_, before), (name, after) in zip(samples, samples[1:]):
        if after < before - STEP:
            shrinks[stage_of(name)] += 1
        elif after > before + STEP:
            grows[stage_of(name)] += 1
    print(f"{forward.label}: heap shrank {sum(shrinks.values())} times, "
          f"grew {sum(grows.values())}; shrinks {dict(shrinks)}; grows {dict(grows)}", flush=True)


if __name__ == "__main__":
    main()
