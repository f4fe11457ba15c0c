"""Average the weights of fine-tunes that share an architecture (a "model soup").

    python scripts/average_weights.py A.safetensors B.safetensors [...] -o OUT.safetensors
        [--weights 0.5 0.5] [--name NAME]

Fine-tunes that start from one checkpoint often average well: the mean can keep part of what
each run gained. Every checkpoint must have the same config (apart from its name) and the
same tensors; the result takes the first one's config and ``--name``. Integer tensors must be
equal in all of them. OUT must not be one of the inputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def average_weights(paths: list[str | Path], out: str | Path, weights: list[float] | None = None,
                    name: str = "custom") -> Path:
    from m2ae_core import load_model
    from m2ae_core.network import M2AENet
    from m2ae_core.weights import save_weights

    if len(paths) < 2:
        raise ValueError("give at least two checkpoints to average")
    if any(Path(out).resolve() == Path(p).resolve() for p in paths):
        raise ValueError("OUT must differ from every input: the originals are kept")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
        raise ValueError(f"--weights needs one non-negative value per checkpoint, summing to 1; "
                         f"got {weights}")
    models = [load_model(p, device="cpu") for p in paths]
    first = dataclasses.replace(models[0].config, name=name)
    for path, model in zip(paths[1:], models[1:]):
        if dataclasses.replace(model.config, name=name) != first:
            raise ValueError(f"{path}: its config differs from {paths[0]}'s; only fine-tunes "
                             "of one architecture can be averaged")
    states = [m.state_dict() for m in models]
    mixed = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mixed[key] = sum(w * s[key].double() for w, s in zip(weights, states)).to(value.dtype)
        elif all(s[key].equal(value) for s in states[1:]):
            mixed[key] = value
        else:
            raise ValueError(f"integer tensor {key} differs between the checkpoints")
    averaged = M2AENet(first)
    averaged.load_state_dict(mixed)
    return save_weights(averaged, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--weights", nargs="+", type=float, default=None,
                        help="one mixing weight per checkpoint, summing to 1 (default: equal)")
    parser.add_argument("--name", default="custom", help="the config's name (shown by loaders)")
    args = parser.parse_args(argv)
    try:
        path = average_weights(args.checkpoints, args.out, args.weights, args.name)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        print(f"average_weights: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (mean of {len(args.checkpoints)} checkpoints, name={args.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
