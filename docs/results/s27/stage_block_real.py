"""One M2AS block of `paper`'s stage 4 on the network's own inputs (2152x1436), by blur share.

Session 27 (its outputs here ran with the tap kernel on: prefix M2AE_FUSED_TAPS=auto
to repeat them). Run: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
    python docs/results/s27/stage_block_real.py 0 10 25 50 100
For each share: one forward of the benchmark's pruned model records the stage-4 input, mask and
trajectories; then block 0 runs on them repeatedly (fresh workspace each time, like the first
block of a stage, and a shared one, like the others), plus the stage's plan and tap reads.
Median ms of 5 after one. Also prints the trajectories' spread and the taps' table size.
With PROFILE=N in the environment: the N ops with most self time in one shared-workspace run.
"""
import argparse
import os
import statistics
import sys
import time

import torch

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.m2as import M2ASStage
from m2ae_core.m2as_banded import StageWorkspace, TapReads
from m2ae_core.masked_conv import PrunePlan


def median_ms(fn, repeats=5):
    times = []
    for _ in range(repeats + 1):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times[1:]) * 1e3


def main():
    captured = {}
    original = M2ASStage.forward

    def capture(self, x, user_mask=None, *args, **kwargs):
        captured["x"] = x.clone()
        captured["user_mask"] = user_mask
        captured["stage"] = self
        return original(self, x, user_mask, *args, **kwargs)

    M2ASStage.forward = capture
    for fraction in sys.argv[1:]:
        parser = argparse.ArgumentParser()
        add_forward_arguments(parser)
        forward = prepare_forward(parser.parse_args(["paper-pruned", "--fraction", fraction]))
        with torch.inference_mode():
            forward()
            stage, x = captured["stage"], captured["x"]
            info = stage.analyze(x, captured["user_mask"])
            plan = PrunePlan.from_mask(info.mask > 0.5)
            block = stage.blocks()[0]
            shared = StageWorkspace()

            def run(workspace):
                return block(x.clone(), info.mask, info.start, info.end, plan, True, True,
                             overwrite_input=True, workspace=workspace)

            clone_ms = median_ms(lambda: x.clone())
            fresh = median_ms(lambda: run(StageWorkspace())) - clone_ms
            reused = median_ms(lambda: run(shared)) - clone_ms
            plan_ms = median_ms(lambda: PrunePlan.from_mask(info.mask > 0.5))
            reads_ms = median_ms(lambda: TapReads(plan, info.start, info.end, 9, x.dtype))
            reads = TapReads(plan, info.start, info.end, 9, x.dtype)
            motion = (info.end - info.start).abs()
            print(f"{fraction:>3} %: {plan.masked / plan.total:.1%} of the stage grid masked; "
                  f"block 0: {fresh:.1f} ms with a fresh workspace, {reused:.1f} ms shared; "
                  f"plan {plan_ms:.1f} ms, tap reads {reads_ms:.1f} ms; table rows "
                  f"{reads.needed.numel()} for {plan.masked} masked pixels; "
                  f"|end - start| mean {motion[:, :, :].sum() / max(1, plan.masked) / 2:.2f} px",
                  flush=True)
            top = int(os.environ.get("PROFILE", "0"))
            if top:
                with torch.profiler.profile() as prof:
                    run(shared)
                events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
                print("      " + "; ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.1f} ms "
                                          f"x{e.count}" for e in events[:top]), flush=True)
        del forward, captured["x"]


if __name__ == "__main__":
    main()
