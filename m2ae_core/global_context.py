"""One image-wide context for tiled inference.

The network pools over all pixels in two places: channel attention (every block) and the mask
predictor's context half. A tile pools over itself only, so tiles disagree with each other and
with the untiled result. The fix costs a second pass: run the tiles once and record, for every
pooling site, its mean over the whole image (each tile pixel weighted by its share of the
final blend, so every image pixel counts once); then run them again with those means fixed.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GlobalMean


def pooling_sites(model: nn.Module) -> list[GlobalMean]:
    return [m for m in model.modules() if isinstance(m, GlobalMean)]


class ContextRecorder:
    """Blend-weighted sums of what every pooling site sees, accumulated over tiles."""

    def __init__(self, model: nn.Module, pad_multiple: int) -> None:
        self.sites = pooling_sites(model)
        self.pad_multiple = pad_multiple
        self._sums: dict[GlobalMean, torch.Tensor] = {}
        self._weights: dict[GlobalMean, torch.Tensor] = {}
        self._share: torch.Tensor | None = None
        self._share_at: dict[tuple[int, int], torch.Tensor] = {}

    @contextmanager
    def tile(self, share: torch.Tensor):
        """Record the forward passes inside the block as one tile; ``share`` [h,w] is each tile
        pixel's weight in the blended output (the shares of all tiles sum to one per pixel)."""
        h, w = share.shape
        # the network zero-pads the tile; padded pixels are not part of the image
        self._share = F.pad(share, (0, (-w) % self.pad_multiple, 0, (-h) % self.pad_multiple))
        self._share_at = {}
        for site in self.sites:
            site.observer = self._observe
        try:
            yield
        finally:
            for site in self.sites:
                site.observer = None
            self._share = None

    def _weights_on(self, features: torch.Tensor) -> torch.Tensor:
        hf, wf = features.shape[-2:]
        if (hf, wf) not in self._share_at:
            factor = self._share.shape[0] // hf
            pooled = F.avg_pool2d(self._share[None, None], factor) if factor > 1 else self._share[None, None]
            self._share_at[(hf, wf)] = pooled.to(features.device)
        return self._share_at[(hf, wf)]

    def _observe(self, site: GlobalMean, features: torch.Tensor) -> None:
        weights = self._weights_on(features)
        weighted = (features.float() * weights).sum(dim=(2, 3), keepdim=True)
        total = weights.sum()
        if site in self._sums:
            self._sums[site] += weighted
            self._weights[site] += total
        else:
            self._sums[site], self._weights[site] = weighted, total

    def means(self) -> dict[GlobalMean, torch.Tensor]:
        """Image-wide mean per site that saw any pixels; [B,C,1,1] float32."""
        return {site: self._sums[site] / self._weights[site].clamp_min(1e-12)
                for site in self._sums}


@contextmanager
def fixed_context(means: dict[GlobalMean, torch.Tensor]):
    """Inside the block every site in ``means`` returns its recorded mean instead of pooling."""
    try:
        for site, mean in means.items():
            site.fixed = mean
        yield
    finally:
        for site in means:
            site.fixed = None
