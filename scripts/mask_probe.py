"""How good a blur mask can a small net learn from the image alone, on this CPU, in N steps?

    python scripts/mask_probe.py --photos ../shared/data/photos --bench bench/ \
        --steps 3000 --eval-at 1200 3000 --out docs/results/mask-probe

The bundled model's mask heads read restoration features; heads-only training of them (also
with a global max and with an image stem behind a zero-initialised projection) ends at local
mask IoU ~0.33 on the benchmark. This probe trains, from scratch and on the mask loss alone,
a net that reads only the pixels: :class:`~m2ae_core.m2as.BlurEvidence` (stride 4, 32
channels) under a :class:`~m2ae_core.m2as.MaskPredictor` with five context units and a
global max. Same synthetic samples as the heads (256 px crops of 384 px renders, a fifth
camera shake), then benchmark IoU at the given steps. It tells whether the image itself, read
by a dedicated net, gives a better mask at this budget than the restoration features do.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4


class ProbeNet(nn.Module):
    def __init__(self, channels: int = 32, context_units: int = 5) -> None:
        super().__init__()
        from m2ae_core.m2as import BlurEvidence, MaskPredictor

        self.evidence = BlurEvidence(channels)
        self.head = MaskPredictor(channels, context_units, global_max=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits [B,2,h,w] at stride 4 (channel 0 = blurred); sides padded to a multiple of 4."""
        pad_h, pad_w = (-image.shape[-2]) % STRIDE, (-image.shape[-1]) % STRIDE
        return self.head(self.evidence(F.pad(image, (0, pad_w, 0, pad_h))))


def probe_mask(net: ProbeNet, image: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """Bool [H,W] mask of a [1,3,H,W] image: stride-4 decisions spread over their pixels."""
    with torch.no_grad():
        probability = torch.softmax(net(image), dim=1)[:, :1]
    h, w = image.shape[-2:]
    cells = probability > threshold
    return cells.repeat_interleave(STRIDE, -2).repeat_interleave(STRIDE, -1)[0, 0, :h, :w].numpy()


def bench_scores(net: ProbeNet, dataset) -> dict:
    """Mean mask IoU and share marked on the local samples; share marked on the global ones."""
    from m2ae_core import metrics
    from m2ae_core.evaluate import masked_samples, sample_kind

    net.eval()
    local_iou, local_marked, global_marked = [], [], []
    for sample, blur, truth in masked_samples(dataset):
        used = probe_mask(net, blur)
        if sample_kind(sample, truth) == "global":
            global_marked.append(float(used.mean()))
        else:
            local_iou.append(metrics.mask_iou(used, truth))
            local_marked.append(float(used.mean()))
    net.train()
    if not local_iou:
        raise ValueError(f"{dataset} has no local samples with a ground-truth mask")
    return {"local_iou": float(np.mean(local_iou)), "local_marked": float(np.mean(local_marked)),
            "global_marked": float(np.mean(global_marked)) if global_marked else None,
            "local_samples": len(local_iou), "global_samples": len(global_marked)}


def train_probe(photos, bench, steps: int, eval_at, seed: int = 5, batch: int = 4,
                lr: float = 1e-3, crop: int = 256, global_prob: float = 0.2,
                channels: int = 32, log=print) -> tuple[ProbeNet, list]:
    """Train from scratch; returns the net and ``[{"step", "seconds", **bench_scores}]`` at
    ``eval_at``."""
    from m2ae_core.training.datasets import SampleStream, StreamSettings, collate
    from m2ae_core.training.losses import mask_cross_entropy, to_stage_grid

    torch.manual_seed(seed)
    net = ProbeNet(channels)
    stream = SampleStream(StreamSettings(seed=seed, crop=crop, render_scale=1.5,
                                         photos=str(photos), global_prob=global_prob))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.9), weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    results, started, wanted = [], time.perf_counter(), set(eval_at)
    for step in range(1, steps + 1):
        items = collate([stream((step - 1) * batch + i) for i in range(batch)])
        logits = net(items["blur"])
        truth = to_stage_grid(items["mask"], STRIDE, tuple(logits.shape[-2:]), "max")
        loss = mask_cross_entropy(logits, truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            log(f"step {step}/{steps} mask CE {loss.item():.4f}")
        if step in wanted:
            scores = bench_scores(net, bench)
            results.append({"step": step, "seconds": round(time.perf_counter() - started, 1),
                            **scores})
            log(json.dumps(results[-1]))
    return net, results


def report(results, command: str) -> str:
    lines = ["# Mask probe: a dedicated net reading only the image", "",
             f"Command: `{command}`", "",
             "| step | train seconds | local mask IoU | local marked | global marked |",
             "|---:|---:|---:|---:|---:|"]
    for r in results:
        marked = "–" if r["global_marked"] is None else f"{100 * r['global_marked']:.1f} %"
        lines.append(f"| {r['step']} | {r['seconds']:.0f} | {r['local_iou']:.3f} | "
                     f"{100 * r['local_marked']:.1f} % | {marked} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", required=True, help="photo folder (training split is used)")
    parser.add_argument("--bench", required=True, help="benchmark folder (m2ae synth)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-at", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--crop", type=int, default=256, help="training crop (renders 1.5x)")
    parser.add_argument("--channels", type=int, default=32, help="width of stem and head")
    parser.add_argument("--out", default=None, help="folder for results.json / results.md")
    parser.add_argument("--save", default=None,
                        help="also write the trained net's weights here (.safetensors)")
    args = parser.parse_args(argv)
    eval_at = sorted(set(args.eval_at or [args.steps]))
    if args.steps < 1 or not all(1 <= s <= args.steps for s in eval_at):
        parser.error("--steps must be >= 1 and every --eval-at step within 1..steps")
    if args.channels < 4 or args.channels % 4:
        parser.error("--channels must be a positive multiple of 4")
    from m2ae_core.errors import M2AEError

    try:
        net, results = train_probe(args.photos, args.bench, args.steps, eval_at, args.seed,
                                   crop=args.crop, channels=args.channels,
                                   log=lambda text: print(text, flush=True))
    except (M2AEError, ValueError, OSError) as error:
        print(f"mask_probe: {error}", file=sys.stderr)
        return 2
    command = "python scripts/mask_probe.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(results, command)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"command": command, "results": results},
                                                     indent=1))
        (out / "results.md").write_text(text)
    if args.save:
        from safetensors.torch import save_file

        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
