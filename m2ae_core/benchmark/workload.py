"""What the benchmark feeds the models: sizes, blob-shaped blur masks, test images, weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLOB_CELL = 128  # input pixels per random value of the smooth field (~ blob diameter)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` (width x height, as photos are named) -> (height, width); ``"512"`` -> square."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 1280x720)") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 1280x720)")
    width, height = values
    return height, width


def format_size(height: int, width: int) -> str:
    return f"{width}x{height}"


def blob_mask(height: int, width: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """Bool [1,1,H,W] mask of smooth random blobs covering ``fraction`` (0..1) of the image.

    A coarse random field (one value per ~128 pixels, at least 3x3) is upsampled bicubically
    and thresholded at its (1 - fraction) quantile: a few connected blobs, like a moving
    subject, never scattered pixels. The same seed gives nested masks for growing fractions.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"blur fraction must be within 0..1, got {fraction}")
    if fraction == 0.0:
        return torch.zeros(1, 1, height, width, dtype=torch.bool)
    if fraction == 1.0:
        return torch.ones(1, 1, height, width, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, max(3, -(-height // BLOB_CELL)), max(3, -(-width // BLOB_CELL)),
                        generator=gen, dtype=torch.float64)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    flat = field.flatten()
    keep = max(1, round(fraction * flat.numel()))
    # kthvalue, not quantile: quantile refuses inputs above 16 M elements
    cut = flat.kthvalue(flat.numel() - keep + 1).values
    return field >= cut


def test_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Float [1,3,H,W] in 0..1: smooth colour gradients plus noise (timing ignores content)."""
    gen = torch.Generator().manual_seed(seed + 1)
    coarse = torch.rand(1, 3, 8, 8, generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=gen)
    return (0.8 * smooth + 0.2 * noise).clamp(0, 1)


def activate_all_branches_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fresh models have beta = gamma = 0 (every block an identity) and a zero motion analyzer;
    give them small seeded random values so every branch computes something real (and the
    pruned-vs-dense check compares real computation). The motion analyzer's bias of ~1 moves
    every tap off the pixel grid, so bilinear sampling does real work."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif "motion_analyzer" in name:
                scale = 1.0 if name.endswith("bias") else 0.01
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model
