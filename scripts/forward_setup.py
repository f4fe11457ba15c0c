"""What the one-model probes (stage_times, forward_faults, heap_churn) share: a benchmark
model in this process, set up like a `m2ae bench` cell (allocator policy, threads, inputs)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.benchmark.workload import parse_size
from m2ae_core.memory import return_freed_memory_promptly


@dataclass
class Forward:
    model: torch.nn.Module
    image: torch.Tensor
    mask: torch.Tensor | None
    pruned: bool
    label: str  # the model spec, with the blur share when the model takes the mask

    def __call__(self):
        return self.model(self.image, mask=self.mask, pruned=self.pruned)


def add_forward_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a `m2ae bench` model spec (nafnet-w32, paper-pruned, ...)")
    parser.add_argument("--fraction", type=float, default=10.0, help="blur mask, percent")
    parser.add_argument("--size", default="2152x1436", help="WxH")
    parser.add_argument("--threads", type=int, default=2)


def prepare_forward(args: argparse.Namespace) -> Forward:
    """The model and inputs that :func:`add_forward_arguments`' arguments name."""
    return_freed_memory_promptly()
    set_threads(args.threads)
    spec = parse_model_spec(args.model)
    model = build_spec_model(spec)
    height, width = parse_size(args.size)
    image, mask = make_inputs(height, width, args.fraction if spec.uses_mask else None, "cpu")
    label = args.model + (f" {args.fraction:g} %" if spec.uses_mask else "")
    return Forward(model, image, mask, spec.mode != "dense", label)
