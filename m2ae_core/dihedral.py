"""The eight flips and quarter turns of an image (the dihedral group), for images and for
displacement fields: training augments with them, the self-ensemble averages over them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


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
        """2x2 M with (dx, dy) in original pixels = M @ (dx, dy) in view pixels (orthogonal:
        its transpose maps the other way).

        Read off how the original coordinates change along the view's columns and rows,
        instead of tabulating eight cases by hand.
        """
        ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
        vx, vy = self.apply(xs), self.apply(ys)
        along_col = torch.stack([vx[0, 1] - vx[0, 0], vy[0, 1] - vy[0, 0]])
        along_row = torch.stack([vx[1, 0] - vx[0, 0], vy[1, 0] - vy[0, 0]])
        return torch.stack([along_col, along_row], dim=1)

    def vectors_to_view(self, field: torch.Tensor) -> torch.Tensor:
        """Displacement vectors [..., 2 (dx, dy), H, W] in original pixels -> the same
        vectors in this view's pixels; the layout is left as it is."""
        if self.is_identity:
            return field
        return torch.einsum("ji,...jhw->...ihw", self._vector_matrix.to(field), field)

    def vectors_from_view(self, field: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`vectors_to_view`; the layout is left as it is."""
        if self.is_identity:
            return field
        return torch.einsum("ij,...jhw->...ihw", self._vector_matrix.to(field), field)

    def undo_vectors(self, field: torch.Tensor) -> torch.Tensor:
        """A displacement field [..., 2 (dx, dy), H', W'] in this view -> the original layout,
        with the vectors themselves turned back too."""
        return self.undo(self.vectors_from_view(field))

    def __str__(self) -> str:
        turn = f"rot{90 * self.quarter_turns}" if self.quarter_turns else "identity"
        return f"{turn}+mirror" if self.mirrored else turn
