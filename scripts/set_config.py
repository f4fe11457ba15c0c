"""Write a copy of a checkpoint with inference-time config fields changed.

    python scripts/set_config.py WEIGHTS OUT --set shake_edges_below=0.5 [--set ...] [--name N]

Some config fields are decisions, not weights (``shake_edges_below``: the camera-shake test
of m2ae_core/shake.py). This puts such a decision on trained weights without retraining. The
weights are loaded and saved unchanged; fields that change the network's layers are refused,
since the weights would no longer fit them. OUT must differ from WEIGHTS (the original is
never overwritten).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# Fields that change no tensor: safe to set on trained weights.
INFERENCE_FIELDS = {"shake_edges_below": float}


def parse_assignment(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value converted to the field's type)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    if name not in INFERENCE_FIELDS:
        raise ValueError(f"{name!r} cannot be set on trained weights; settable: "
                         f"{', '.join(sorted(INFERENCE_FIELDS))}")
    try:
        return name, INFERENCE_FIELDS[name](value)
    except ValueError:
        raise ValueError(f"{name}: cannot read {value!r}") from None


def with_config(weights: str | Path, out: str | Path, changes: dict,
                name: str = "custom") -> Path:
    from m2ae_core import load_model
    from m2ae_core.network import M2AENet
    from m2ae_core.weights import save_weights

    if Path(out).resolve() == Path(weights).resolve():
        raise ValueError("OUT must differ from WEIGHTS: the original checkpoint is kept")
    model = load_model(weights)
    config = dataclasses.replace(model.config, name=name, **changes)
    rebuilt = M2AENet(config)
    rebuilt.load_state_dict(model.state_dict())
    return save_weights(rebuilt, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("out")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        dest="assignments")
    parser.add_argument("--name", default="custom", help="the config's name (shown by loaders)")
    args = parser.parse_args(argv)
    try:
        changes = dict(parse_assignment(a) for a in args.assignments)
        path = with_config(args.weights, args.out, changes, args.name)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        print(f"set_config: {exc}", file=sys.stderr)
        return 2
    settings = [f"{k}={v}" for k, v in changes.items()] + [f"name={args.name}"]
    print(f"wrote {path} ({', '.join(settings)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
