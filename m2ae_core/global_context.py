"""One image-wide context for tiled inference.

The network pools over all pixels in two places: channel attention (every block) and the mask
predictor's context half (by mean, and optionally by max). A tile pools over itself only, so
tiles disagree with each other and with the untiled result. The fix costs a second pass: run the
tiles once and record, for every pooling site, its mean over the whole image (each tile pixel
weighted by its share of the final blend, so every image pixel counts once) or its max (over
the pixels where a tile has at least a quarter of the blend, which leaves out only the
zero-padded edges of tiles: every pixel has such a tile, at most four tiles meet); then run
them again with those values fixed.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GlobalMax, GlobalMean

# A tile pixel counts towards a max when its share of the blend is at least this.
MAX_SHARE = 0.25


def pooling_sites(model: nn.Module) -> list[GlobalMean]:
    return [m for m in model.modules() if isinstance(m, GlobalMean)]


class ContextRecorder:
    """Blend-weighted sums of what every pooling site sees, accumulated over tiles."""

    def __init__(self, model: nn.Module, pad_multiple: int) -> None:
        self.sites = pooling_sites(model)
        self.pad_multiple = pad_multiple
        self._sums: dict[GlobalMean, torch.Tensor] = {}
        self._weights: dict[GlobalMean, torch.Tensor] = {}
        self._maxima: dict[GlobalMean, torch.Tensor] = {}
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
        if isinstance(site, GlobalMax):
            counted = weights >= MAX_SHARE
            peak = features.float().masked_fill(~counted, float("-inf")).amax(dim=(2, 3),
                                                                                keepdim=True)
            known = self._maxima.get(site)
            self._maxima[site] = peak if known is None else torch.maximum(known, peak)
            return
        weighted = (features.float() * weights).sum(dim=(2, 3), keepdim=True)
        total = weights.sum()
        if site in self._sums:
            self._sums[site] += weighted
            self._weights[site] += total
        else:
            self._sums[site], self._weights[site] = weighted, total

    def pooled(self) -> dict[GlobalMean, torch.Tensor]:
        """Image-wide mean (or max, for a :class:`GlobalMax`) per site that saw any pixels;
        [B,C,1,1] float32."""
        means = {site: self._sums[site] / self._weights[site].clamp_min(1e-12)
                 for site in self._sums}
        return {**means, **self._maxima}


@contextmanager
def fixed_context(pooled: dict[GlobalMean, torch.Tensor]):
    """Inside the block every site in ``pooled`` returns its recorded value instead of
    pooling."""
    try:
        for site, value in pooled.items():
            site.fixed = value
        yield
    finally:
        for site in pooled:
            site.fixed = None
