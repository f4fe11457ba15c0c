"""Overlapping tiles with feathered blending, so big images run in bounded memory."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Above this many pixels, tile=None tiles automatically (memory of the paper preset grows
# ~1.7 KB per pixel on CPU; 4 MP stays below ~7 GB).
AUTO_TILE_PIXELS = 4_194_304
AUTO_TILE_SIZE = 1024
DEFAULT_OVERLAP = 64
MIN_TILE = 64


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # the last tile ends exactly at the border
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: int = DEFAULT_OVERLAP) -> list[Tile]:
    """Tiles of at most ``tile`` x ``tile`` covering the image, neighbours overlapping."""
    overlap = min(overlap, tile // 2)
    return [Tile(top, left, min(tile, height), min(tile, width))
            for top in _starts(height, tile, overlap) for left in _starts(width, tile, overlap)]


def resolve_tile_size(tile: int | None, height: int, width: int) -> int:
    """``None``: automatic from the pixel count; ``0``: no tiling; otherwise the tile side."""
    if tile is None:
        return AUTO_TILE_SIZE if height * width > AUTO_TILE_PIXELS else 0
    tile = int(tile)
    if tile == 0:
        return 0
    if tile < MIN_TILE:
        raise ValueError(f"tile size must be 0 (off) or at least {MIN_TILE} pixels, got {tile}")
    return tile


def blend_weight(tile: Tile, height: int, width: int, overlap: int = DEFAULT_OVERLAP,
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """[h, w] weight rising linearly across overlaps, flat at image borders."""
    def ramp(start: int, size: int, total: int) -> torch.Tensor:
        pos = torch.arange(size, device=device, dtype=dtype)
        weight = torch.ones(size, device=device, dtype=dtype)
        if start > 0:
            weight = torch.minimum(weight, (pos + 1) / (overlap + 1))
        if start + size < total:
            weight = torch.minimum(weight, (size - pos) / (overlap + 1))
        return weight

    # as in tile_grid; along a side the tile spans completely the ramp is flat anyway
    overlap = max(1, min(overlap, tile.height // 2, tile.width // 2))
    return ramp(tile.top, tile.height, height)[:, None] * ramp(tile.left, tile.width, width)[None, :]
