"""NAFNet building blocks (Chen et al. 2022), with NAFNet's parameter names."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .banded import naf_block_banded, wants_bands
from .chunking import chunk_items
from .precision import cpu_has_native_bf16


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of an NCHW tensor (NAFNet's LayerNorm2d)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis; on a channels-last tensor the permuted view is
        # contiguous, so nothing is copied and the result stays channels-last.
        return self.rows(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The same norm on channels-last pixel rows [..., C] (gathered pixels, for example)."""
        return F.layer_norm(rows, (rows.shape[-1],), self.weight, self.bias, self.eps)


def onednn_pointwise(x: torch.Tensor) -> bool:
    """Whether a 1x1 convolution of ``x`` runs as oneDNN's convolution instead of a matmul:
    at inference on CPU, in fp32, or in bf16 on a CPU that computes it natively (the only
    kind measured; elsewhere bf16 keeps the matmul). Per call, for the shapes of `paper` and
    NAFNet-w32 at 2152x1436, oneDNN was 1.6-2.3x faster than ``F.linear`` (MKL) at 2 threads
    in fp32, 1.3-1.4x in bf16, and as fast at 1 thread (0.98-1.04x fp32, 1.1-1.3x bf16;
    scripts/pointwise_speed.py, docs/results/pointwise-s20/). Training keeps the matmul: its
    forward + backward were mixed (``--backward``: slower on narrow maps)."""
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and cpu_has_native_bf16())


def linear_rows(rows: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(rows, weight, bias)`` for pixel rows [N, Cin] (``weight`` [Cout, Cin]) ->
    [N, Cout]; where :func:`onednn_pointwise`, as a 1x1 convolution of the rows seen as a
    channels-last map [1, Cin, N, 1] (no copy)."""
    n, c = rows.shape
    if not (onednn_pointwise(rows) and rows.is_contiguous() and n):
        return F.linear(rows, weight, bias)
    as_map = rows.view(1, n, 1, c).permute(0, 3, 1, 2)
    return pixel_rows(F.conv2d(as_map, weight.view(-1, c, 1, 1), bias))


class Conv1x1(nn.Conv2d):
    """1x1 convolution, by the faster of two kernels for channels-last input.

    Same parameters (and names, and state dict) as ``nn.Conv2d(cin, cout, 1)``. At inference
    on CPU it is oneDNN's convolution (see :func:`onednn_pointwise`), whose result keeps the
    input's layout; otherwise a matmul over channels-last pixel rows (in training on CPU about
    as fast as the convolution), whose result is channels-last whatever the input's layout.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_pointwise(x):
            return F.conv2d(x, self.weight, self.bias)
        weight = self.weight.view(self.out_channels, self.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> [B*H*W, C], one row per pixel (a view for channels-last input, else a copy:
    callers continue with the returned rows, never with ``x``)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


# Bytes of one [pixels, channels] fp32 block of the chunked inference loops (the deformable
# taps). Per masked pixel of a 25 % blob mask on the 180x270 stage-4 grid, us at 512 KiB /
# 2 MiB / 8 MiB, all masked pixels in one call and in 12 band-sized calls: 512 channels fp32
# 2 threads 1.59 / 1.39 / 2.08 and 1.96 / 1.40 / 1.40; 1 thread 2.19 / 1.69 / 2.90 and
# 2.24 / 1.74 / 1.78; bf16 1.53 / 1.08 / 2.08; 256 channels 0.83 / 0.59 / 1.36; 128 channels
# 0.48 / 0.36 / 2.97 (session 21, scripts/taps_speed.py, docs/results/taps-s21/). Smaller
# chunks pay the nine gathers' per-call overhead more often; larger ones leave the cache.
CHUNK_BYTES = 2 << 20


def cache_chunk(channels: int, device: torch.device, itemsize: int = 4) -> int:
    """Pixels per chunk of a per-pixel loop over ``channels`` values on ``device``: at least
    64, cache-sized on a CPU (see :mod:`.chunking`)."""
    on_cpu = max(64, CHUNK_BYTES // (channels * itemsize))
    return chunk_items(device, on_cpu, channels * itemsize)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: split channels in half and multiply the halves."""
    a, b = x.chunk(2, dim=1)
    return a * b


class GlobalMean(nn.Module):
    """Mean over all pixels: [B,C,H,W] -> [B,C,1,1].

    The network's image-wide operation (with :class:`GlobalMax`), so tiled inference hooks in here
    (:mod:`.global_context`): ``observer`` sees every input, and a ``fixed`` mean, once set,
    is returned instead, so that every tile pools the whole image's context.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fixed: torch.Tensor | None = None
        self.observer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            if self.fixed.shape[:2] != x.shape[:2]:
                raise ValueError(f"fixed global mean has shape {tuple(self.fixed.shape)}, "
                                 f"input has {x.shape[0]} items of {x.shape[1]} channels")
            return self.fixed.to(device=x.device, dtype=x.dtype)
        if self.observer is not None:
            self.observer(self, x)
        return self.reduce(x)

    @staticmethod
    def reduce(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class GlobalMax(GlobalMean):
    """Max over all pixels: [B,C,H,W] -> [B,C,1,1]; same tiling hooks as :class:`GlobalMean`.

    Evidence found anywhere counts: one sharp edge tells that the camera did not shake, which
    a mean over a mostly smooth frame hides.
    """

    @staticmethod
    def reduce(x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


class SimplifiedChannelAttention(nn.Sequential):
    """Global average pool then 1x1 conv; indexed as ``sca.1`` like NAFNet."""

    def __init__(self, channels: int) -> None:
        super().__init__(GlobalMean(), Conv1x1(channels, channels))


class NAFBlock(nn.Module):
    """The plain NAFNet block: LN, 1x1, 3x3 depthwise, SG, SCA, 1x1; LN, 1x1, SG, 1x1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c, inner = channels, 2 * channels
        self.norm1 = LayerNorm2d(c)
        self.conv1 = Conv1x1(c, inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.sca = SimplifiedChannelAttention(c)
        self.conv3 = Conv1x1(c, c)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = Conv1x1(c, inner)
        self.conv5 = Conv1x1(c, c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def spatial_mix(self, x: torch.Tensor) -> torch.Tensor:
        """First half: returns the residual branch after SG and channel attention."""
        f = simple_gate(self.conv2(self.conv1(self.norm1(x))))
        return self.conv3(f * self.sca(f))

    def forward(self, x: torch.Tensor, overwrite_input: bool = False,
                scratch: torch.Tensor | None = None) -> torch.Tensor:
        """``overwrite_input``: the caller hands ``x`` over; on a large map at inference the
        result is written into it (see :class:`NAFStage`). ``scratch``: a map like ``x`` that
        the banded evaluation may use for its intermediate (see :func:`naf_block_banded`)."""
        if self.runs_in_bands(x):  # large map at inference: less memory
            return naf_block_banded(self, x, overwrite_input=overwrite_input, scratch=scratch)
        mid = x + self.beta * self.spatial_mix(x)
        f = simple_gate(self.conv4(self.norm2(mid)))
        return mid + self.gamma * self.conv5(f)

    def runs_in_bands(self, x: torch.Tensor) -> bool:
        return wants_bands(x, self.conv1.out_channels)


class NAFStage(nn.Sequential):
    """NAF blocks in sequence (children "0", "1", ..., as in NAFNet's state dict).

    ``overwrite_input``: the caller hands its input over, so every block may write its result
    into its input's memory. Called as ``x = stage(x)``, a caller still holds the stage's input
    while the stage runs: one map more than the blocks need, 50 MiB at the 28-block stage 4 of
    NAFNet-w32 at 2152x1436 (its peak). Each block's input after the first is the stage's own.
    Blocks that run in bands share one intermediate map (``scratch`` of
    :func:`~m2ae_core.banded.naf_block_banded`) instead of allocating one each.
    """

    def forward(self, x: torch.Tensor, overwrite_input: bool = False) -> torch.Tensor:
        scratch = None
        for index, block in enumerate(self):
            handed_over = overwrite_input or index > 0
            if (scratch is None and handed_over and index < len(self) - 1
                    and block.runs_in_bands(x)):
                # The banded blocks' intermediate map, allocated once for the stage: a fresh one
                # per block is faulted in anew each time (m2ae_core/memory.py). NAFNet-w32 at
                # 2152x1436 (28-block stage 4): 6.21 -> 5.86 s, forwards alternated in one
                # process, same peak memory (session 21).
                scratch = torch.empty_like(x)
            x = block(x, overwrite_input=handed_over, scratch=scratch if handed_over else None)
        return x
