"""Training losses of M2AENet (DESIGN §4), pure PyTorch plus kornia's SSIM.

``L = L_recon + 0.01 * L_mask + L_offset``

* ``L_recon = L1 + SSIM-loss + 0.1 * FFT-L1`` on the restored image; the L1 term can give
  blurred pixels extra weight (``l1_mask_weight``; DESIGN §7 suggests leaning towards the
  mask because sharp regions are easy and dominate an unweighted mean).
* ``L_sharp`` (ours, off by default, ``sharp_psnr_weight``): minus the PSNR over each local
  sample's sharp (unmasked) pixels, averaged over samples. L1 weighs an error the same
  wherever it is; the log of the background's MSE weighs it by how clean the background
  already is, so small changes to pixels that should stay untouched cost much more: the
  quantity the benchmark's sharp-pixel PSNR scores.
* ``L_mask``: cross-entropy of each M2AS stage's logits (channel 0 = blurred) against the
  ground-truth mask max-pooled to the stage grid (a grid pixel is blurred if any input pixel
  it covers is). ``mask_jaccard_weight`` (ours, off by default) adds a soft-Jaccard term per
  sample: one minus the soft IoU of the blurred-class probability with that mask, the
  quantity the benchmark scores, where cross-entropy weighs each pixel alone.
* ``L_offset = Reblur + alpha * TV(o_s, o_e)`` per stage: re-blur the area-downsampled sharp
  image with the predicted trajectory by forward warping (average splatting) it to each of
  the N instants and averaging, and compare with the area-downsampled blurred input.
* ``L_traj`` (ours, off by default): where a sample's ground-truth trajectory is known
  (synthetic data), the end-point error of ``(o_s, o_e)`` on the blurred pixels of each stage
  grid, the smaller of the two time directions. DESIGN initialises the analyzer to zero
  motion, and there L_offset is stationary: every instant sees the same gradient, which can
  only shift the image, while a blur (the spread between instants) is a second-order effect.
  The analyzers trained on L_offset alone stayed at |o| ~ 1e-4 px (EPE = the ground-truth
  motion itself); this term gives them a first-order signal.

Stage terms are summed over the M2AS stages; plain presets (no stages) only get ``L_recon``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..trajectory import trajectory_instants

__all__ = ["forward_warp", "reblur_loss", "trajectory_loss", "tv_loss", "fft_l1", "ssim_loss",
           "weighted_l1", "sharp_pixel_log_mse", "reconstruction_loss", "mask_cross_entropy",
           "soft_jaccard_loss", "to_stage_grid", "LossConfig", "M2AELoss"]


# --------------------------------------------------------------------------- forward warping

_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (dy, dx) of the four bilinear neighbours


def forward_warp(image: torch.Tensor, flow: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Forward-warp (splat) ``image`` [B,C,H,W] by ``flow`` [B,2,H,W] ((dx, dy) in pixels).

    Average splatting (softmax splatting with a zero importance metric): every source pixel
    is splatted bilinearly onto the four target pixels around ``p + flow(p)``; each target
    gets the weighted sum of what landed on it divided by the sum of the weights. Targets
    whose weight sum is at most ``eps`` are holes and keep the unwarped source pixel.
    Differentiable with respect to ``image`` and ``flow`` (through the bilinear weights).
    """
    if image.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"forward_warp wants image [B,C,H,W] and flow [B,2,H,W], got "
                         f"{tuple(image.shape)} and {tuple(flow.shape)}")
    b, c, h, w = image.shape
    if flow.shape[0] != b or flow.shape[-2:] != (h, w):
        raise ValueError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    flow = flow.to(image.dtype)
    ys = torch.arange(h, device=image.device, dtype=image.dtype).view(1, h, 1)
    xs = torch.arange(w, device=image.device, dtype=image.dtype).view(1, 1, w)
    # Clamping keeps huge (or infinite) displacements representable as indices; anything
    # clamped lands outside the image and gets weight zero anyway.
    tx = (xs + flow[:, 0]).clamp(-2.0, w + 1.0)
    ty = (ys + flow[:, 1]).clamp(-2.0, h + 1.0)
    x0 = torch.floor(tx)
    y0 = torch.floor(ty)
    fx = tx - x0  # gradient flows to the flow through the fractional parts
    fy = ty - y0
    x0 = x0.long()
    y0 = y0.long()
    values = image.reshape(b, c, h * w)
    total = image.new_zeros(b, c, h * w)
    weight_sum = image.new_zeros(b, 1, h * w)
    for dy, dx in _CORNERS:
        xi = x0 + dx
        yi = y0 + dy
        wx = fx if dx else 1.0 - fx
        wy = fy if dy else 1.0 - fy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        weight = (wx * wy * inside.to(image.dtype)).reshape(b, 1, h * w)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(b, 1, h * w)
        weight_sum = weight_sum.scatter_add(2, index, weight)
        total = total.scatter_add(2, index.expand(b, c, h * w), values * weight)
    covered = weight_sum > eps
    warped = torch.where(covered, total / weight_sum.clamp_min(eps), values)
    return warped.view(b, c, h, w)


def reblur_loss(sharp_small: torch.Tensor, blur_small: torch.Tensor, start: torch.Tensor,
                end: torch.Tensor, instants: int = 9) -> torch.Tensor:
    """``MSE(mean_n forward_warp(sharp, o_n), blur)``, o_n the quadratic trajectory instants.

    All tensors live on the same grid: images [B,C,h,w], ``start``/``end`` [B,2,h,w] in pixels
    of that grid. The N warps are done in one batched call.
    """
    b, c, h, w = sharp_small.shape
    offsets = trajectory_instants(start, end, instants)  # [B,N,2,h,w]
    n = offsets.shape[1]
    sharp_rep = sharp_small.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
    warped = forward_warp(sharp_rep, offsets.reshape(b * n, 2, h, w))
    reblurred = warped.view(b, n, c, h, w).mean(dim=1)
    return F.mse_loss(reblurred, blur_small)


def trajectory_loss(start: torch.Tensor, end: torch.Tensor, target: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean end-point error of predicted ``start``/``end`` [B,2,h,w] against
    ``target`` [B,4,h,w] = (o_s, o_e), the smaller of the two time directions per pixel (a
    blurred image does not tell which end came first). ``weight`` [B,1,h,w]; 0 when it sums
    to 0."""
    target_start, target_end = target[:, :2], target[:, 2:]

    def epe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).square().sum(dim=1, keepdim=True).add(1e-6).sqrt()

    forward = epe(start, target_start) + epe(end, target_end)
    reverse = epe(start, target_end) + epe(end, target_start)
    # Ties go to the forward order. torch.minimum would split the gradient between equal
    # branches, and at zero motion (the analyzer's initial state) every pixel is a tie whose
    # halves cancel for a straight trajectory (o_e = -o_s): no signal, as with L_offset.
    per_pixel = 0.5 * torch.where(forward <= reverse, forward, reverse)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def tv_loss(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation of the displacement maps.

    ``mean |o(y, x+1) - o(y, x)| + mean |o(y+1, x) - o(y, x)|`` over the four channels of
    ``[start, end]`` (so it is the average of TV(start) and TV(end)). Maps must be at least
    2x2.
    """
    o = torch.cat((start, end), dim=1)
    horizontal = (o[..., :, 1:] - o[..., :, :-1]).abs().mean()
    vertical = (o[..., 1:, :] - o[..., :-1, :]).abs().mean()
    return horizontal + vertical


# --------------------------------------------------------------------------- reconstruction

def fft_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the real and imaginary parts of ``rfft2`` of output and target (mean)."""
    diff = torch.fft.rfft2(output.float()) - torch.fft.rfft2(target.float())
    return torch.view_as_real(diff).abs().mean()


def ssim_loss(output: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """``1 - mean SSIM`` (kornia, Gaussian window ``window_size``, sigma 1.5, data range 1)."""
    import kornia

    return 1.0 - kornia.metrics.ssim(output, target, window_size, max_val=1.0).mean()


def weighted_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                mask_weight: float = 0.0) -> torch.Tensor:
    """L1 with per-pixel weight ``1 + mask_weight * mask``, normalised by the weight sum.

    With ``mask`` None, ``mask_weight`` 0 or a uniform mask it is the plain mean L1.
    """
    diff = (output - target).abs()
    if mask is None or mask_weight == 0.0:
        return diff.mean()
    weight = 1.0 + mask_weight * mask.to(diff.dtype)  # [B,1,H,W], broadcast over channels
    weight = weight.expand_as(diff)
    return (diff * weight).sum() / weight.sum()


def sharp_pixel_log_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        floor: float = 1e-6) -> torch.Tensor:
    """Mean over samples of ``10 log10(MSE + floor)`` on the pixels where ``mask`` [B,1,H,W]
    is below 0.5 (sharp): minus their PSNR in dB. Samples without sharp pixels do not count;
    zero when none has any. ``floor`` caps the PSNR at 60 dB, so an untouched clean
    background does not take over the gradient."""
    sharp = (mask < 0.5).to(output.dtype)  # [B,1,H,W]
    counts = sharp.flatten(1).sum(1) * output.shape[1]
    squared = ((output - target).square() * sharp).flatten(1).sum(1)
    has_sharp = counts > 0
    if not bool(has_sharp.any()):
        return output.new_zeros(())
    mse = squared[has_sharp] / counts[has_sharp]
    return (10.0 * torch.log10(mse + floor)).mean()


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor | None = None, mask_weight: float = 1.0,
                        ssim_weight: float = 1.0, fft_weight: float = 0.1,
                        l1_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """``L1 (mask-weighted) + SSIM-loss + 0.1 FFT-L1``; returns the terms and ``recon``."""
    l1 = weighted_l1(output, target, mask, mask_weight)
    ssim = ssim_loss(output, target) if ssim_weight else output.new_zeros(())
    fft = fft_l1(output, target) if fft_weight else output.new_zeros(())
    recon = l1_weight * l1 + ssim_weight * ssim + fft_weight * fft
    return {"l1": l1, "ssim": ssim, "fft": fft, "recon": recon}


# --------------------------------------------------------------------------- stage terms

def to_stage_grid(x: torch.Tensor, scale: int, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Bring an input-resolution map to a stage grid of ``size`` = (h, w).

    The map is zero-padded right/bottom to ``size * scale`` (as the network pads its input),
    then reduced with ``mode`` = "area" (average pooling) or "max" (max pooling).
    """
    h, w = size
    pad_h, pad_w = h * scale - x.shape[-2], w * scale - x.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"map {tuple(x.shape[-2:])} is larger than the stage grid {size} "
                         f"x {scale}")
    x = F.pad(x, (0, pad_w, 0, pad_h))
    if scale == 1:
        return x
    if mode == "area":
        return F.avg_pool2d(x, scale, scale)
    if mode == "max":
        return F.max_pool2d(x, scale, scale)
    raise ValueError(f"unknown mode {mode!r}")


def mask_cross_entropy(logits: torch.Tensor, mask_small: torch.Tensor,
                       balanced: bool = False) -> torch.Tensor:
    """Cross-entropy of stage logits [B,2,h,w] (channel 0 = blurred) vs a mask [B,1,h,w].

    ``mask_small`` > 0.5 means blurred (class 0); everything else is sharp (class 1).
    ``balanced``: the mean of the per-class mean losses, so a small blurred object counts as
    much as the background around it (classes absent from the batch are left out).
    """
    target = (mask_small[:, 0] <= 0.5).long()
    if not balanced:
        return F.cross_entropy(logits.float(), target)
    per_pixel = F.cross_entropy(logits.float(), target, reduction="none")
    class_means = [per_pixel[target == c].mean() for c in (0, 1) if bool((target == c).any())]
    return torch.stack(class_means).mean()


def soft_jaccard_loss(logits: torch.Tensor, mask_small: torch.Tensor,
                      eps: float = 1.0) -> torch.Tensor:
    """Mean over samples of ``1 - soft IoU`` between the blurred-class probability (softmax
    channel 0 of logits [B,2,h,w]) and the mask [B,1,h,w] (> 0.5 = blurred).

    Per sample, so a small object counts as much as a whole shaken frame; ``eps`` (in grid
    pixels) keeps an empty mask with an empty prediction at zero loss instead of 0/0.
    """
    prob = torch.softmax(logits.float(), dim=1)[:, 0]
    target = (mask_small[:, 0] > 0.5).to(prob.dtype)
    inter = (prob * target).flatten(1).sum(1)
    union = (prob + target).flatten(1).sum(1) - inter
    return (1.0 - (inter + eps) / (union + eps)).mean()


@dataclass
class LossConfig:
    """Weights of the loss terms (DESIGN §4 defaults)."""

    l1_weight: float = 1.0
    ssim_weight: float = 1.0
    fft_weight: float = 0.1
    # Extra L1 weight of blurred pixels: weight = 1 + l1_mask_weight * mask.
    l1_mask_weight: float = 1.0
    sharp_psnr_weight: float = 0.0  # L_sharp coefficient (not in DESIGN, see above); 0 = off
    mask_weight: float = 0.01  # L_mask coefficient
    mask_balanced: bool = False  # class-balanced L_mask (blurred and sharp pixels weigh alike)
    mask_jaccard_weight: float = 0.0  # soft-Jaccard term added to each stage's L_mask; 0 = off
    offset_weight: float = 1.0  # L_offset coefficient
    reblur_weight: float = 1.0  # inside L_offset
    tv_weight: float = 0.01  # alpha, inside L_offset
    reblur_instants: int = 9  # N2
    # L_traj coefficient (not in DESIGN; see the module docstring): 0 = off.
    trajectory_weight: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "LossConfig":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown loss fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class M2AELoss(nn.Module):
    """The full training loss. ``forward(output, blur, sharp, mask)`` returns a dict of named
    scalar tensors: ``l1 ssim fft recon`` and, with M2AS stages, ``mask reblur tv offset``
    (summed over stages) plus per-stage ``mask_s{k} reblur_s{k} tv_s{k}`` (and ``traj``,
    ``traj_s{k}`` with ``trajectory_weight`` and a trajectory given; ``sharp`` with
    ``sharp_psnr_weight`` and a mask given); ``total`` is the
    value to minimise.

    ``output`` is a ``NetworkOutput`` (``.image`` and ``.stages``); ``blur``/``sharp`` are
    [B,3,H,W], ``mask`` [B,1,H,W] (1 = blurred) or None (treated as all ones for L_mask and
    unweighted for L1).
    """

    def __init__(self, config: LossConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(config, LossConfig):
            config = LossConfig.from_dict(config)
        self.config = config

    def forward(self, output, blur: torch.Tensor, sharp: torch.Tensor,
                mask: torch.Tensor | None = None, trajectory: torch.Tensor | None = None,
                has_trajectory: torch.Tensor | None = None,
                is_global: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``trajectory`` [B,4,H,W] (o_s, o_e in input pixels) and ``has_trajectory`` [B]
        feed L_traj; samples without a known trajectory do not count. ``is_global`` [B]
        (camera shake) supervises a shake head; without it, a sample whose mask is all
        ones counts as shaken."""
        cfg = self.config
        image = output.image if hasattr(output, "image") else output
        stages = list(getattr(output, "stages", None) or [])
        zero = sharp.new_zeros((), dtype=torch.float32)
        if image is None:  # a stages-only forward: only the stage terms can be computed
            if cfg.l1_weight or cfg.ssim_weight or cfg.fft_weight:
                raise ValueError("a stages-only output has no image for the reconstruction "
                                 "loss; set l1_weight, ssim_weight and fft_weight to 0")
            terms = {"l1": zero, "ssim": zero, "fft": zero, "recon": zero}
        else:
            terms = reconstruction_loss(image.float(), sharp, mask, cfg.l1_mask_weight,
                                        cfg.ssim_weight, cfg.fft_weight, cfg.l1_weight)
        total = terms["recon"]
        if cfg.sharp_psnr_weight and image is not None and mask is not None:
            terms["sharp"] = sharp_pixel_log_mse(image.float(), sharp, mask)
            total = total + cfg.sharp_psnr_weight * terms["sharp"]
        if stages:
            gt_mask = mask if mask is not None else torch.ones_like(sharp[:, :1])
            # for shake heads: which frames are camera shake (given, else an all-ones mask)
            shaken = (is_global if is_global is not None else
                      gt_mask.flatten(1).amin(1) > 0.5).to(device=gt_mask.device).bool()
            mask_sum = reblur_sum = tv_sum = traj_sum = zero
            use_traj = cfg.trajectory_weight > 0 and trajectory is not None
            for info in stages:
                size = tuple(info.mask.shape[-2:])
                mask_small = to_stage_grid(gt_mask.float(), info.scale, size, "max")
                # no logits: an inference run with a given mask predicted nothing to score
                if info.logits is None:
                    ce = zero
                elif info.shake_logit is not None and info.local_logits is not None:
                    ce = self._split_mask_loss(info.local_logits, info.shake_logit, mask_small,
                                               shaken)
                else:
                    ce = self._pixel_mask_loss(info.logits, mask_small)
                sharp_small = to_stage_grid(sharp.float(), info.scale, size, "area")
                blur_small = to_stage_grid(blur.float(), info.scale, size, "area")
                start, end = info.start.float(), info.end.float()
                rb = reblur_loss(sharp_small, blur_small, start, end, cfg.reblur_instants)
                tv = tv_loss(start, end) if min(size) > 1 else zero
                if use_traj:
                    known = mask_small if has_trajectory is None else \
                        mask_small * has_trajectory.view(-1, 1, 1, 1).to(mask_small.dtype)
                    # Mean motion of the blurred input pixels of each grid cell, in grid pixels
                    # (a plain area mean would shrink it at the mask's edge).
                    cover = to_stage_grid(gt_mask.float(), info.scale, size, "area")
                    moved = to_stage_grid(trajectory.float() * gt_mask, info.scale, size, "area")
                    target = moved / (cover.clamp_min(1e-6) * info.scale)
                    # The analyzer's own output, before the mask's gating: where the sampled
                    # mask misses a blurred pixel, the gated motion is 0 and would teach nothing.
                    motion = info.motion.float() if info.motion is not None else \
                        torch.cat((start, end), 1)
                    tr = trajectory_loss(motion[:, :2], motion[:, 2:], target, known)
                    terms[f"traj_s{info.stage}"] = tr
                    traj_sum = traj_sum + tr
                terms[f"mask_s{info.stage}"] = ce
                terms[f"reblur_s{info.stage}"] = rb
                terms[f"tv_s{info.stage}"] = tv
                mask_sum = mask_sum + ce
                reblur_sum = reblur_sum + rb
                tv_sum = tv_sum + tv
            offset = cfg.reblur_weight * reblur_sum + cfg.tv_weight * tv_sum
            terms.update(mask=mask_sum, reblur=reblur_sum, tv=tv_sum, offset=offset)
            total = total + cfg.mask_weight * mask_sum + cfg.offset_weight * offset
            if use_traj:
                terms["traj"] = traj_sum
                total = total + cfg.trajectory_weight * traj_sum
        terms["total"] = total
        return terms

    def _pixel_mask_loss(self, logits: torch.Tensor, mask_small: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        loss = mask_cross_entropy(logits, mask_small, cfg.mask_balanced)
        if cfg.mask_jaccard_weight:
            loss = loss + cfg.mask_jaccard_weight * soft_jaccard_loss(logits, mask_small)
        return loss

    def _split_mask_loss(self, local_logits: torch.Tensor, shake_logit: torch.Tensor,
                         mask_small: torch.Tensor, shaken: torch.Tensor) -> torch.Tensor:
        """A shake head's two terms: the per-pixel loss on the local samples only (a shaken
        frame says nothing about where local blur is) plus the shake logit's binary
        cross-entropy against "this frame is shaken"."""
        shake = F.binary_cross_entropy_with_logits(shake_logit.float().flatten(),
                                                   shaken.to(torch.float32))
        local = ~shaken
        if not bool(local.any()):
            return shake
        return shake + self._pixel_mask_loss(local_logits[local], mask_small[local])


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [0, 1]; infinite MSE-free inputs give 100 dB."""
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)
