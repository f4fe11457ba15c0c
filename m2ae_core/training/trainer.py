"""Training loop for M2AENet: AdamW + cosine, gradient clipping, JSONL metrics, validation,
atomic checkpoints with exact resume, and DDP through ``torchrun`` (DESIGN §4).

Single process::

    python -m m2ae_core.training.trainer --config configs/small-cpu.yaml [--resume]

Several processes (CPU: gloo, CUDA: NCCL), e.g. 8 GPUs on one node::

    torchrun --standalone --nproc_per_node=8 -m m2ae_core.training.trainer \\
        --config configs/paper-gpu.yaml --resume

Output folder (``out_dir``): ``config.json`` (the resolved config), ``metrics.jsonl`` (one
JSON object per line: ``kind`` "start", "train" or "val"), ``last.pt`` (model, optimiser,
scheduler, step, RNG states of every rank, sampler position), ``best.safetensors`` (best
validation weighted PSNR so far), ``final.safetensors`` at the end (``latest.safetensors``
when a run stops early through ``stop_at`` / ``time_limit`` or a first Ctrl-C / SIGTERM, which
finish the current step and checkpoint it), ``train.lock`` (held while a run writes the folder:
a second run into it is refused). With ``optim.ema_decay`` the
weights' moving average is checkpointed, validated (``val_ema_*``) and exported beside them
(``final_ema.safetensors`` / ``latest_ema.safetensors``).

Exactness: sample ``g`` of the data stream is a pure function of (data seed, g) and rank
``r`` trains on ``g = (step * W + r) * B + slot`` at ``step``, so a resumed run draws the
same samples without replaying a loader; with the RNG states, optimiser and scheduler
restored, N steps straight and k + resume + (N-k) steps give bitwise identical weights.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import M2AEError
from ..metrics import endpoint_error
from .config import TrainConfig, load_config
from .datasets import SampleStream, StepBatchDataset, collate, make_validation_set
from .ema import WeightAverage
from .losses import M2AELoss, psnr_from_mse, to_stage_grid
from .run_lock import RunFolderLock
from .stop_request import StopRequest

__all__ = ["train", "add_train_arguments", "run_train", "main", "lr_factor",
           "weighted_psnr", "validate", "CHECKPOINT_NAME", "METRICS_NAME"]

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_VERSION = 1
DEBUG_RANK_STATE_ENV = "M2AE_DEBUG_RANK_STATE"  # "1": every rank saves rank<r>_final.pt


# --------------------------------------------------------------------------- small helpers

def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier for the update after ``step`` completed updates: linear
    warm-up over ``warmup`` steps, then cosine from 1 down to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return world, rank, local


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise M2AEError("device cuda requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def _atomic_save(obj: Any, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, temp)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def get_rng_state(device: torch.device) -> dict:
    """Torch (CPU and current CUDA device), numpy and python RNG states, in a form that
    ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": np_state[0],
                       "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached_gaussian": float(np_state[4])},
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def weighted_psnr(output: torch.Tensor, target: torch.Tensor,
                  mask: torch.Tensor) -> list[float | None]:
    """Per-sample weighted PSNR (DESIGN §6): 8-bit quantised, MSE over the blurred pixels
    only (sum over mask and 3 channels / (3 * mask sum)); ``None`` for an empty mask."""
    diff = (_quantise(output) - _quantise(target)).pow(2)
    m = (mask > 0.5).to(diff.dtype)
    results = []
    for i in range(diff.shape[0]):
        count = float(m[i].sum()) * diff.shape[1]
        if count == 0:
            results.append(None)
            continue
        results.append(psnr_from_mse(float((diff[i] * m[i]).sum()) / count))
    return results


@torch.no_grad()
def validate(model: torch.nn.Module, val: dict, device: torch.device,
             batch: int = 4) -> dict[str, float]:
    """Weighted PSNR of input and output, full PSNR of the output, mask IoU (all M2AS stages
    together) and, where the set has trajectories, the shallowest stage's end-point error
    and mean predicted displacement on the blurred pixels (input pixels; a motion branch
    that learned nothing shows ~0 displacement and an EPE equal to the true motion's
    length), on a fixed validation batch, in eval (pruned) mode."""
    was_training = model.training
    model.eval()
    w_in, w_out, full, inter, union = [], [], [], 0.0, 0.0
    epe_sum = length_sum = epe_pixels = 0.0
    try:
        for start in range(0, val["blur"].shape[0], batch):
            blur = val["blur"][start:start + batch].to(device)
            sharp = val["sharp"][start:start + batch].to(device)
            mask = val["mask"][start:start + batch].to(device)
            output = model(blur)
            image = output.image.float()
            w_in += weighted_psnr(blur, sharp, mask)
            w_out += weighted_psnr(image, sharp, mask)
            for i in range(image.shape[0]):
                mse = float((_quantise(image[i]) - _quantise(sharp[i])).pow(2).mean())
                full.append(psnr_from_mse(mse))
            for info in output.stages:
                size = tuple(info.mask.shape[-2:])
                gt = to_stage_grid(mask.float(), info.scale, size, "max") > 0.5
                pred = info.mask.bool()
                inter += float((gt & pred).sum())
                union += float((gt | pred).sum())
            if output.stages and "trajectory" in val:
                predicted = output.stages[0].trajectory_at(tuple(blur.shape[-2:])).cpu()
                target = val["trajectory"][start:start + batch]
                for i in range(predicted.shape[0]):
                    blurred = val["mask"][start + i, 0] > 0.5
                    count = int(blurred.sum())
                    if count:  # means over the sample's blurred pixels, weighted by their count
                        epe_sum += count * endpoint_error(predicted[i], target[i], blurred,
                                                          symmetric=True)
                        still = torch.zeros_like(target[i])  # error against no motion = length
                        length_sum += count * endpoint_error(predicted[i], still, blurred)
                        epe_pixels += count
    finally:
        model.train(was_training)
    pairs = [(a, b) for a, b in zip(w_in, w_out) if a is not None and b is not None]
    result = {"val_psnr_out": float(np.mean(full)) if full else float("nan")}
    if pairs:
        result["val_wpsnr_in"] = float(np.mean([a for a, _ in pairs]))
        result["val_wpsnr_out"] = float(np.mean([b for _, b in pairs]))
        result["val_wpsnr_gain"] = result["val_wpsnr_out"] - result["val_wpsnr_in"]
    if union > 0:
        result["val_mask_iou"] = inter / union
    if epe_pixels > 0:
        result["val_epe"] = epe_sum / epe_pixels
        result["val_motion_px"] = length_sum / epe_pixels
    return result


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class _MetricsLog:
    """Rank-0 JSONL writer (append, flushed per line)."""

    def __init__(self, path: Path, enabled: bool, truncate_after: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if truncate_after is not None and path.exists():
            # Drop records of a previous attempt that went past the checkpoint we resume.
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("step", 0) <= truncate_after:
                    kept.append(line)
            _atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        elif truncate_after is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")


# --------------------------------------------------------------------------- training

def train(config: TrainConfig) -> dict:
    """Train according to ``config``; returns a summary dict (rank 0's view).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it initialises ``torch.distributed`` (gloo on
    CPU, NCCL on CUDA) and tears it down at the end.
    """
    world, rank, local_rank = _dist_env()
    device = _pick_device(config.device, local_rank)
    previous_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if device.type == "cuda" and config.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    initialised_here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        initialised_here = True
    lock = RunFolderLock(config.out_dir)
    try:
        _lock_on_rank0(lock, rank, world)
        with StopRequest(announce=rank == 0) as stop_request:
            return _train(config, world, rank, device, stop_request)
    finally:
        lock.release()
        if initialised_here:
            dist.destroy_process_group()
        torch.set_num_threads(previous_threads)


def _lock_on_rank0(lock: RunFolderLock, rank: int, world: int) -> None:
    """Rank 0 takes the output folder's lock; every rank stops if it could not (the others
    would otherwise wait for rank 0 at their first collective until the timeout)."""
    problem = None
    if rank == 0:
        try:
            lock.acquire()
        except M2AEError as exc:
            problem = str(exc)
    if world > 1:
        shared = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem is not None:
        raise M2AEError(problem)


def _choose_trainable(model: torch.nn.Module, trainable, frozen) -> None:
    """Keep ``requires_grad`` on parameters whose name contains a part of ``trainable`` (all
    when empty) and none of ``frozen``."""
    for setting, parts in (("trainable", trainable), ("frozen", frozen)):
        for part in parts:
            if not any(part in name for name, _ in model.named_parameters()):
                raise M2AEError(f"model.{setting}: {part!r} matches no parameter name "
                                "(e.g. 'mask_predictor', 'encoders.2')")
    chosen = 0
    for name, param in model.named_parameters():
        keep = (not trainable or any(part in name for part in trainable)) \
            and not any(part in name for part in frozen)
        param.requires_grad_(keep)
        chosen += keep
    if not chosen:
        raise M2AEError(f"model.trainable {list(trainable)} minus model.frozen {list(frozen)} "
                        "leaves no parameter to train")


def _load_initial_weights(model: torch.nn.Module, source: str) -> list[str]:
    """Copy trained weights into a fresh model (fine-tuning); the architectures must match,
    except that the configured model may add to the mask predictors (context units, global
    max, blur evidence, shake head); those parts keep their fresh initialisation. Returns
    the names of the parameters left fresh."""
    from ..weights import load_model

    trained = load_model(source, device="cpu")
    ours = model.config
    theirs = trained.config
    same_but_heads = dataclasses.replace(theirs, mask_context=ours.mask_context,
                                         mask_global_max=ours.mask_global_max,
                                         mask_evidence=ours.mask_evidence,
                                         mask_shake_head=ours.mask_shake_head)
    if (same_but_heads != ours or theirs.mask_context > ours.mask_context
            or theirs.mask_global_max > ours.mask_global_max
            or theirs.mask_shake_head > ours.mask_shake_head
            or theirs.mask_evidence not in (0, ours.mask_evidence)):
        raise M2AEError(f"model.init_weights {source!r} holds a different architecture "
                        f"({theirs}) than the configured model ({ours}); only more "
                        "mask_context units, mask_global_max, mask_evidence or "
                        "mask_shake_head may be added")
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    fresh_parts = (".mask_predictor.context.", ".mask_predictor.max_proj.",
                   ".mask_predictor.evidence_proj.", ".mask_predictor.shake_head.",
                   "mask_evidence.")
    fresh = [name for name in missing if any(part in name for part in fresh_parts)]
    if unexpected or len(fresh) != len(missing):
        raise M2AEError(f"model.init_weights {source!r}: parameters do not match "
                        f"(missing {sorted(set(missing) - set(fresh))}, unexpected {unexpected})")
    return fresh


def _train(config: TrainConfig, world: int, rank: int, device: torch.device,
           stop_request: StopRequest) -> dict:
    from ..network import build_model
    from ..weights import save_weights

    main_rank = rank == 0
    out = Path(config.out_dir)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
    distributed = world > 1

    _seed_all(config.seed)  # identical initial weights on every rank
    model = build_model(config.model.preset, **dict(config.model.overrides)).to(device)
    model.train()
    _choose_trainable(model, config.model.trainable, config.model.frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cfg = config.optim
    optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas),
                                  weight_decay=opt_cfg.weight_decay, eps=opt_cfg.eps)
    min_ratio = opt_cfg.min_lr / opt_cfg.lr

    def schedule(step: int) -> float:  # reads config.steps at call time (resume may change it)
        return lr_factor(step, config.steps, opt_cfg.warmup_steps, min_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    criterion = M2AELoss(config.loss)
    average = None  # the weight average, built once the starting weights are in place

    step, best, resumed_from = 0, None, None
    ckpt_path = out / CHECKPOINT_NAME
    if not config.resume and ckpt_path.exists():
        raise M2AEError(f"{ckpt_path} exists: pass --resume (resume: true) to continue that "
                        "run, or choose another output folder (--out) / delete it")
    if config.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise M2AEError(f"{ckpt_path}: unsupported checkpoint version {ckpt.get('version')}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, best, resumed_from = int(ckpt["step"]), ckpt.get("best"), str(ckpt_path)
        if opt_cfg.ema_decay:
            average = WeightAverage(model, opt_cfg.ema_decay)
            if ckpt.get("ema") is not None:
                average.load_state_dict(ckpt["ema"])
            elif main_rank:
                print("m2ae train: warning: the checkpoint has no weight average; it starts "
                      "from the resumed weights", file=sys.stderr)
        sampler = ckpt.get("sampler", {})
        same_layout = (sampler.get("world_size") == world
                       and sampler.get("batch_size") == config.batch_size
                       and len(ckpt["rng"]) == world)
        if same_layout:
            set_rng_state(ckpt["rng"][rank], device)
        else:
            _seed_all(config.seed * 1009 + rank + step)
            if main_rank:
                print(f"m2ae train: warning: resuming with world size {world} x batch "
                      f"{config.batch_size} (checkpoint: {sampler.get('world_size')} x "
                      f"{sampler.get('batch_size')}); training continues, not bit-exactly",
                      file=sys.stderr)
        del ckpt
    else:
        if config.model.init_weights:
            fresh = _load_initial_weights(model, config.model.init_weights)
            if fresh and main_rank:
                print(f"init_weights: {len(fresh)} new mask-head tensors start fresh",
                      flush=True)
        _seed_all(config.seed * 1009 + rank)  # ranks differ in their Gumbel noise
        if opt_cfg.ema_decay:
            average = WeightAverage(model, opt_cfg.ema_decay)
    averaged_model = copy.deepcopy(model) if average is not None and main_rank else None
    # Make the scheduler use the (possibly changed) total step count from here on.
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * schedule(step)

    ddp_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.ddp_find_unused)

    end_step = config.steps if config.stop_at is None else min(config.steps, config.stop_at)
    stream = SampleStream(config.data.stream_settings(config.seed))
    dataset = StepBatchDataset(stream, config.batch_size, world, rank)
    workers = config.data.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size,
        sampler=range(step * config.batch_size, max(step, end_step) * config.batch_size),
        num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # never touch the global RNG (exact resume)
        prefetch_factor=config.data.prefetch if workers else None,
        persistent_workers=False)

    val = None
    if main_rank and config.data.photos and config.data.val_samples > 0:
        try:
            val = make_validation_set(config.data.photos, config.data.val_samples,
                                      config.data.val_size, config.data.val_seed,
                                      config.data.photo_split, config.data.synthetic or None,
                                      config.data.max_side)
        except FileNotFoundError as exc:
            if config.data.synthetic_weight > 0:
                raise
            print(f"m2ae train: warning: no validation set ({exc})", file=sys.stderr)

    log = _MetricsLog(out / METRICS_NAME, main_rank, step if resumed_from else None)
    if main_rank:
        _atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        n_params = sum(p.numel() for p in params)
        log.write({"kind": "start", "step": step, "time": time.time(), "world_size": world,
                   "device": str(device), "preset": config.model.preset,
                   "model": model.config.to_dict(), "parameters": n_params,
                   "sources": stream.names, "resumed_from": resumed_from,
                   "global_batch": config.batch_size * world})
        if config.progress:
            what = f"resuming at step {step}" if resumed_from else "starting"
            print(f"m2ae train: {what}; {config.model.preset} ({n_params / 1e6:.2f} M "
                  f"params) on {device} x {world}, batch {config.batch_size} x {world}, "
                  f"crop {config.data.crop}, {config.steps} steps -> {out}", flush=True)

    # bf16 autocast of the forward: CUDA, and CPUs with native bf16 (AVX512-BF16 / AMX)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if config.amp == "bf16" and device.type in ("cuda", "cpu")
                else contextlib.nullcontext())
    sums: dict[str, torch.Tensor] = {}
    count = skipped = 0
    interval_start = time.perf_counter()
    data_seconds = 0.0
    run_start = time.perf_counter()
    last_time = time.perf_counter()
    step_times: list[float] = []
    stop_reason = "completed"

    def checkpoint() -> None:
        states = get_rng_state(device)
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        if main_rank:
            _atomic_save({"version": CHECKPOINT_VERSION, "step": step,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "rng": gathered,
                          "sampler": {"seed": stream.settings.seed, "next_step": step,
                                      "world_size": world, "batch_size": config.batch_size},
                          "best": best, "config": config.to_dict(),
                          "ema": None if average is None else average.state_dict(),
                          "model_config": model.config.to_dict()}, ckpt_path)

    # No reconstruction term (training mask heads alone): nothing after the last M2AS stage
    # enters the loss, so the forward stops there.
    loss_cfg = criterion.config
    heads_only = not (loss_cfg.l1_weight or loss_cfg.ssim_weight or loss_cfg.fft_weight)
    if stop_request.requested:  # during setup: no step taken, nothing worth a checkpoint
        raise KeyboardInterrupt
    for batch in loader:
        now = time.perf_counter()
        data_seconds += now - last_time
        blur = batch["blur"].to(device, non_blocking=True)
        sharp = batch["sharp"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with autocast:
            output = ddp_model(blur, stages_only=heads_only)
        known_motion = [batch[key].to(device, non_blocking=True)
                        for key in ("trajectory", "has_trajectory")] \
            if loss_cfg.trajectory_weight > 0 else []
        terms = criterion(output, blur, sharp, mask, *known_motion,
                          is_global=batch["is_global"].to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        max_norm = opt_cfg.grad_clip if opt_cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if torch.isfinite(grad_norm):  # identical on every rank (gradients are all-reduced)
            optimizer.step()
        else:
            skipped += 1
        if average is not None:
            average.update(model)
        scheduler.step()
        step += 1
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float()
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm.detach().float()
        count += 1
        last_time = time.perf_counter()
        step_times.append(last_time - now)

        stop = step >= end_step
        if not stop:
            reason = _early_stop(stop_request, config.time_limit, last_time - run_start,
                                 distributed, device)
            if reason:
                stop, stop_reason = True, reason

        if step % config.log_every == 0 or stop:
            keys = sorted(sums)
            values = torch.stack([torch.as_tensor(sums[k], device=device) for k in keys]) / count
            if distributed:  # gloo: CPU tensors, NCCL: tensors on this rank's GPU
                dist.all_reduce(values)
                values /= world
            elapsed = last_time - interval_start
            record = {"kind": "train", "step": step,
                      "lr": optimizer.param_groups[0]["lr"],
                      "s_per_step": elapsed / count, "data_s_per_step": data_seconds / count,
                      "samples_per_s": count * config.batch_size * world / max(elapsed, 1e-9),
                      "skipped": skipped, "time": time.time()}
            record.update({k: float(v) for k, v in zip(keys, values.tolist())})
            log.write(record)
            if main_rank and config.progress:
                eta = (config.steps - step) * record["s_per_step"]
                print(f"step {step}/{config.steps} loss {record['total']:.4f} "
                      f"(l1 {record['l1']:.4f}) lr {record['lr']:.2e} "
                      f"{record['s_per_step']:.2f} s/step eta {_format_eta(eta)}", flush=True)
            sums, count, data_seconds = {}, 0, 0.0
            interval_start = time.perf_counter()

        final = stop and step >= config.steps
        if val is not None and ((config.val_every and step % config.val_every == 0) or final):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                metrics = validate(model, val, device, config.data.val_batch)
                if averaged_model is not None:
                    averaged = validate(average.copy_to(averaged_model), val, device,
                                        config.data.val_batch)
                    metrics.update({"val_ema_" + k[4:]: v for k, v in averaged.items()})
            log.write({"kind": "val", "step": step, "time": time.time(), **metrics})
            score = metrics.get("val_wpsnr_out")
            if score is not None and (best is None or score > best):
                best = score
                save_weights(model, out / "best.safetensors")
            if config.progress:
                shown = " ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items())
                print(f"val @ {step}: {shown}", flush=True)

        if stop or (config.checkpoint_every and step % config.checkpoint_every == 0):
            checkpoint()
        last_time = time.perf_counter()
        if stop:
            break

    completed = step >= config.steps
    if completed:
        stop_reason = "completed"  # a signal during the last step changes nothing
    elif stop_reason == "completed":
        stop_reason = "stop_at"
    exported = exported_average = None
    if main_rank:
        exported = out / ("final.safetensors" if completed else "latest.safetensors")
        save_weights(model, exported)
        if averaged_model is not None:
            exported_average = save_weights(average.copy_to(averaged_model),
                                            exported.with_name(exported.stem + "_ema.safetensors"))
    if os.environ.get(DEBUG_RANK_STATE_ENV) == "1":
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                   out / f"rank{rank}_final.pt")
    if distributed:
        dist.barrier()
    median = float(np.median(step_times)) if step_times else None
    summary = {"step": step, "completed": completed, "stop_reason": stop_reason,
               "out_dir": str(out), "weights": str(exported) if exported else None,
               "ema_weights": str(exported_average) if exported_average else None,
               "median_s_per_step": median, "best_val_wpsnr": best}
    if main_rank and config.progress:
        also = f" (moving average: {exported_average})" if exported_average else ""
        print(f"m2ae train: {stop_reason} at step {step}; weights {exported}{also}", flush=True)
    return summary


def _early_stop(stop_request: StopRequest, time_limit: float | None, seconds: float,
                distributed: bool, device: torch.device) -> str | None:
    """Why the run stops before its last step ("interrupted", "time_limit"), or None. Under
    DDP the ranks agree (any rank's reason stops all), so they checkpoint at the same step."""
    wanted = 2.0 if stop_request.requested else \
        1.0 if time_limit is not None and seconds > time_limit else 0.0
    if distributed:
        flag = torch.tensor(wanted, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        wanted = flag.item()
    return {2.0: "interrupted", 1.0: "time_limit"}.get(wanted)


# --------------------------------------------------------------------------- command line

def _parse_value(text: str) -> Any:
    """A --set value: YAML scalar/flow syntax (``5e-4``, ``true``, ``null``, ``[0.9, 0.9]``,
    ``{width: 8}``); plain text when it does not parse."""
    try:
        import yaml

        return yaml.safe_load(text)
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    except Exception:  # yaml.YAMLError
        return text


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``m2ae train``."""
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="training config (.yaml/.yml/.toml), e.g. configs/small-cpu.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from OUT/last.pt when it exists")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="total optimiser steps (the cosine schedule length)")
    parser.add_argument("--stop-at", type=int, default=None, metavar="N",
                        help="stop with a checkpoint at step N (resume later with --resume)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop with a checkpoint after this much training time")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=5e-4 "
                             "--set model.overrides.width=8 (repeatable)")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Run ``m2ae train``; returns the process exit status."""
    overrides: dict[str, Any] = {}
    try:
        for item in args.set:
            if "=" not in item:
                raise M2AEError(f"--set wants KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            overrides[key.strip()] = _parse_value(value)
        if args.resume:
            overrides["resume"] = True
        if args.steps is not None:
            overrides["steps"] = args.steps
        if args.stop_at is not None:
            overrides["stop_at"] = args.stop_at
        if args.time_limit is not None:
            overrides["time_limit"] = args.time_limit
        if args.out is not None:
            overrides["out_dir"] = args.out
        if args.threads is not None:
            overrides["threads"] = args.threads
        config = load_config(args.config, overrides)
        summary = train(config)
    except (M2AEError, FileNotFoundError, ValueError) as exc:
        print(f"m2ae train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("m2ae train: interrupted (resume from the last checkpoint with --resume)",
              file=sys.stderr)
        return 130
    if summary["stop_reason"] == "interrupted":
        print(f"m2ae train: stopped at step {summary['step']} with a checkpoint; continue "
              "with --resume", file=sys.stderr)
        return 130
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="m2ae train", description="Train M2AENet.")
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
