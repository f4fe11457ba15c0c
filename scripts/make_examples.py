"""Regenerate the example inputs shipped in m2ae_core/examples/ with the project's generator.

    python scripts/make_examples.py --photos ../shared/data/photos

Only CC0 / public-domain photos are used (see m2ae_core/examples/ATTRIBUTION.md); each example
gets local motion blur only, no noise or JPEG artefacts, so it shows what the model is for.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from m2ae_core.data.synthetic import SynthParams, SyntheticBlurSource, to_uint8
from m2ae_core.imageio import save_image

# CC0 / public-domain photos only (licences in m2ae_core/examples/ATTRIBUTION.md).
PUBLIC_DOMAIN_PHOTOS = ["coffee.png", "rocket.jpg", "astronaut.png", "chelsea.png",
                        "hubble_deep_field.jpg", "retina.jpg", "seeding_by_Clements_Engelhardt.jpg"]
SEED = 2026
INDICES = [1, 7, 9]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", default="../shared/data/photos")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "m2ae_core" / "examples"))
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--indices", type=int, nargs="*", help="sample indices (default: the shipped set)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = SynthParams(size=(args.size, args.size), global_prob=0.0, noise_prob=0.0, jpeg_prob=0.0,
                         motion_length=(14.0, 28.0), objects=(1, 2))
    source = SyntheticBlurSource([Path(args.photos) / p for p in PUBLIC_DOMAIN_PHOTOS], params, seed=SEED)
    for index in args.indices or INDICES:
        sample = source.sample(index)
        name = f"{Path(sample.meta['background']).stem.split('_')[0].lower()}_{index}"
        save_image(to_uint8(sample.blur), out / f"{name}.png")
        save_image(to_uint8(sample.sharp), out / f"{name}_sharp.png")
        save_image((sample.mask.numpy() * 255).astype(np.uint8), out / f"{name}_mask.png")
        print(f"{name}: mask {sample.mask_fraction:.1%}, objects from "
              f"{[o['photo'] for o in sample.meta.get('objects', [])]}")

if __name__ == "__main__":
    main()
