"""Dihedral self-ensemble: restore flipped and rotated copies of an image and average them.

A network's errors differ from one orientation of an image to the next, so the mean of the
restorations of its mirrored / rotated copies (each turned back) is closer to the truth than
any one of them, at one forward per copy. ``views(n)`` gives the copies used for ``n`` in
``ENSEMBLE_SIZES``; each ``View`` turns image-like maps and displacement fields both ways.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

ENSEMBLE_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class View:
    """``quarter_turns`` of ``torch.rot90`` over the last two dims, then an optional
    left-right mirror."""

    quarter_turns: int = 0
    mirrored: bool = False

    @property
    def is_identity(self) -> bool:
        return not self.quarter_turns and not self.mirrored

    def size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of the original size, seen in this view."""
        return (width, height) if self.quarter_turns % 2 else (height, width)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Original layout [..., H, W] -> this view's layout."""
        x = torch.rot90(x, self.quarter_turns, (-2, -1)) if self.quarter_turns else x
        return torch.flip(x, (-1,)) if self.mirrored else x

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """This view's layout -> the original layout (inverse of :meth:`apply`)."""
        x = torch.flip(x, (-1,)) if self.mirrored else x
        return torch.rot90(x, -self.quarter_turns, (-2, -1)) if self.quarter_turns else x

    @cached_property
    def _vector_matrix(self) -> torch.Tensor:
        """2x2 M with (dx, dy) in original pixels = M @ (dx, dy) in view pixels.

        Read off how the original coordinates change along the view's columns and rows,
        instead of tabulating eight cases by hand.
        """
        ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
        vx, vy = self.apply(xs), self.apply(ys)
        along_col = torch.stack([vx[0, 1] - vx[0, 0], vy[0, 1] - vy[0, 0]])
        along_row = torch.stack([vx[1, 0] - vx[0, 0], vy[1, 0] - vy[0, 0]])
        return torch.stack([along_col, along_row], dim=1)

    def undo_vectors(self, field: torch.Tensor) -> torch.Tensor:
        """A displacement field [..., 2 (dx, dy), H', W'] in this view -> the original layout,
        with the vectors themselves turned back too."""
        if self.is_identity:
            return field
        m = self._vector_matrix.to(field)
        turned = torch.einsum("ij,...jhw->...ihw", m, field)
        return self.undo(turned)

    def __str__(self) -> str:
        turn = f"rot{90 * self.quarter_turns}" if self.quarter_turns else "identity"
        return f"{turn}+mirror" if self.mirrored else turn


def views(count: int) -> list[View]:
    """The views of an ``count``-fold self-ensemble; the first is always the identity.

    2 adds the mirror image, 4 the upside-down pair (neither swaps height and width, so
    tiling and padding stay as in a single pass), 8 all quarter turns.
    """
    if count not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, "
                         f"got {count!r}")
    turns = {1: (0,), 2: (0,), 4: (0, 2), 8: (0, 1, 2, 3)}[count]
    mirrors = (False,) if count == 1 else (False, True)
    return [View(t, m) for t in turns for m in mirrors]
