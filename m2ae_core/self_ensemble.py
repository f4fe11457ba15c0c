"""Dihedral self-ensemble: restore flipped and rotated copies of an image and average them.

A network's errors differ from one orientation of an image to the next, so the mean of the
restorations of its mirrored / rotated copies (each turned back) can be closer to the truth
than one restoration, at one forward per copy (measured for the bundled default in
docs/results/self-ensemble/). ``views(n)`` gives the copies used for ``n`` in
``ENSEMBLE_SIZES``; each ``View`` turns image-like maps and displacement fields both ways.
"""
from __future__ import annotations

from .dihedral import View

ENSEMBLE_SIZES = (1, 2, 4, 8)


def views(count: int) -> list[View]:
    """The views of an ``count``-fold self-ensemble; the first is always the identity.

    2 adds the mirror image, 4 the upside-down pair (neither swaps height and width, so
    tiling and padding stay as in a single pass), 8 all quarter turns.
    """
    if isinstance(count, bool):  # True would quietly mean one copy
        raise ValueError("ensemble is a number of copies (1, 2, 4 or 8), not a switch; "
                         "ensemble=8 gives the best quality")
    if count not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, "
                         f"got {count!r}")
    turns = {1: (0,), 2: (0,), 4: (0, 2), 8: (0, 1, 2, 3)}[count]
    mirrors = (False,) if count == 1 else (False, True)
    return [View(t, m) for t in turns for m in mirrors]
