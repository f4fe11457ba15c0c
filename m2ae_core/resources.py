"""Files shipped inside the package: example inputs (the bundled weights live in weights.py)."""
from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "examples"


def example_images() -> list[Path]:
    """The shipped blurred example inputs (not their ``_sharp``/``_mask`` companions)."""
    return sorted(p for p in EXAMPLES_DIR.glob("*.png")
                  if not p.stem.endswith(("_sharp", "_mask")))
