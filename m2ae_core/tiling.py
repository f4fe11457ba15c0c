"""Overlapping tiles with feathered blending, so big images run in bounded memory."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

from .procfs import kib_field_bytes

# tile=None (automatic) restores the image whole when its estimated peak memory fits in
# AUTO_MEMORY_SHARE of what the device has available, else in the largest tiles that fit
# (a multiple of AUTO_TILE_STEP, at least AUTO_TILE_MIN). Tiling costs time: with the
# image's context every tile runs twice, and tiles overlap (a 13 MP photo: 3.1x the MACs).
AUTO_MEMORY_SHARE = 0.5
AUTO_TILE_STEP = 256
AUTO_TILE_MIN = 512
# Peak memory of an untiled forward, in float maps of the model's width per input pixel,
# measured with an all-blurred mask by scripts/tile_memory.py
# (docs/results/tile-memory/): 4.9 for the bundled model, 3.3 for the paper preset since
# session 18's inference in bands of rows (6.9 and 6.2 before); rounded up for what the
# measurement did not cover (other allocators, images of other content).
PEAK_MAPS = 6.0
# Where the available memory is unknown (not Linux, MPS...): tile above this many pixels.
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


def untiled_bytes_per_pixel(width: int, dtype: torch.dtype = torch.float32) -> float:
    """Estimated peak memory of an untiled forward per input pixel, for a model of ``width``."""
    return PEAK_MAPS * width * torch.empty((), dtype=dtype).element_size()


def available_memory(device: torch.device | str) -> int | None:
    """Bytes ``device`` can still give (CPU: the kernel's MemAvailable; CUDA: free memory plus
    what PyTorch's caching allocator holds unused), or None where that is unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + cached_unused)
    if device.type == "cpu" and sys.platform.startswith("linux"):
        return kib_field_bytes("/proc/meminfo", "MemAvailable")
    return None


def memory_to_free(tile: int | None, height: int, width: int, bytes_per_pixel: float,
                   device_total: int) -> int:
    """Bytes to free on a device of ``device_total`` bytes before a run (a host that can
    unload other models, like ComfyUI) so that automatic tiling, finding them free, makes the
    choice it would make with the whole device: the run's estimate, over AUTO_MEMORY_SHARE."""
    side = resolve_tile_size(tile, height, width, bytes_per_pixel=bytes_per_pixel,
                             available=device_total)
    pixels = min(height * width, side * side) if side else height * width
    return int(pixels * bytes_per_pixel / AUTO_MEMORY_SHARE)


def resolve_tile_size(tile: int | None, height: int, width: int, *,
                      bytes_per_pixel: float | None = None, available: int | None = None) -> int:
    """The tile side to run with; ``0`` means untiled.

    ``tile``: ``0`` = never tile, ``N`` = tiles of ``N`` x ``N``, ``None`` = automatic: from
    the memory an untiled run needs (``bytes_per_pixel`` x pixels) against ``available``, or,
    when either is unknown, from the pixel count alone (above ``AUTO_TILE_PIXELS``).
    """
    if tile is None:
        if bytes_per_pixel and available:
            budget = AUTO_MEMORY_SHARE * available
            if height * width * bytes_per_pixel <= budget:
                return 0
            side = int(math.sqrt(budget / bytes_per_pixel)) // AUTO_TILE_STEP * AUTO_TILE_STEP
            return max(side, AUTO_TILE_MIN)
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
