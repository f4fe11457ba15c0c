"""Share of each photo that the model marks as blurred (real photos have no ground truth).

    python scripts/real_photo_masks.py PHOTO_OR_FOLDER [...] [--weights W]

Runs only the mask predictor (``analyze``, untiled unless the photo needs tiles). A folder
contributes its image files, not its subfolders. On photos shaken as a whole, a good mask
marks nearly everything; on a moving subject in front of a still scene, only the subject.
"""
from __future__ import annotations

import argparse
import sys


def marked_shares(model, paths) -> list[tuple[str, float]]:
    """``(file name, share of pixels in the mask the model would use)`` per photo."""
    from m2ae_core import analyze
    from m2ae_core.imageio import read_image

    return [(path.name, float(analyze(model, read_image(path)).mask.mean())) for path in paths]


def report(rows) -> str:
    lines = ["| photo | marked blurred |", "|---|---:|"]
    lines += [f"| {name} | {100 * share:.1f} % |" for name, share in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="photos, or folders of photos")
    parser.add_argument("--weights", default=None, help="weights file (default: bundled)")
    args = parser.parse_args(argv)
    from m2ae_core import load_model
    from m2ae_core.cli import collect_inputs  # the folder rules of m2ae deblur
    from m2ae_core.errors import M2AEError

    try:
        rows = marked_shares(load_model(args.weights), collect_inputs(args.sources))
    except M2AEError as error:
        print(f"real_photo_masks: {error}", file=sys.stderr)
        return 2
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
