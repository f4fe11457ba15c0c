"""Model specs of the benchmark: names like ``paper-pruned`` or ``paper-pruned/m2as=2,3``.

Grammar: ``BASE[-pruned|-dense][/MODIFIER...]``. BASE is a preset name (random seeded
weights, every branch active) or ``default`` (the bundled trained model). Plain backbones
(no M2AS stage) take no suffix: they ignore the mask. Modifiers:

* ``m2as=1,2,3`` — M2AS blocks on these 0-based encoder stages instead of the preset's;
* ``both-halves`` — also mask the second half of every M2AS block (a benchmark-local
  prototype, :mod:`.halves`; not part of the model).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import PRESETS, get_config
from ..errors import ConfigError

# NAFNet next to the pruned model: the targets compare them, so measure them back to back
DEFAULT_MODELS = ("paper-pruned", "nafnet-w32", "paper-dense", "default")
DESCRIPTIONS = {
    "paper-pruned": "paper preset, pixel-pruned path (random weights)",
    "paper-dense": "paper preset, dense masked path (same weights)",
    "nafnet-w32": "plain NAFNet-w32 backbone (random weights)",
    "default": "bundled trained default model, pruned path",
    "default-dense": "bundled trained default model, dense path",
}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as given
    base: str  # preset name or "default"
    mode: str  # "pruned", "dense" or "plain"
    m2as_stages: tuple[int, ...] | None = None
    both_halves: bool = False

    @property
    def pair_key(self) -> str:
        """Specs with the same key have the same weights (pruned and dense twin)."""
        stages = "" if self.m2as_stages is None else ",".join(map(str, self.m2as_stages))
        return f"{self.base}|{stages}"

    @property
    def uses_mask(self) -> bool:
        return self.mode != "plain"

    @property
    def description(self) -> str:
        if self.name in DESCRIPTIONS:
            return DESCRIPTIONS[self.name]
        parts = [f"{self.base} preset" if self.base != "default" else "bundled default model",
                 {"pruned": "pruned path", "dense": "dense masked path",
                  "plain": "plain backbone"}[self.mode]]
        if self.m2as_stages is not None:
            parts.append("M2AS on stages " + "+".join(str(s + 1) for s in self.m2as_stages))
        if self.both_halves:
            parts.append("both block halves masked (benchmark prototype)")
        return ", ".join(parts)


def parse_model_spec(text: str) -> ModelSpec:
    head, *modifiers = str(text).strip().split("/")
    mode = None
    for suffix in ("pruned", "dense"):
        if head.endswith("-" + suffix):
            head, mode = head[: -len(suffix) - 1], suffix
    if head != "default" and head not in PRESETS:
        raise ConfigError(f"model {text!r}: unknown base {head!r}; use 'default' or a preset "
                          f"({', '.join(sorted(PRESETS))}) with an optional -pruned/-dense suffix")
    stages, both = None, False
    for modifier in modifiers:
        if modifier.startswith("m2as="):
            try:
                stages = tuple(int(s) for s in modifier[5:].split(",") if s != "")
            except ValueError:
                raise ConfigError(f"model {text!r}: m2as= takes 0-based stage numbers "
                                  "like m2as=2,3") from None
        elif modifier == "both-halves":
            both = True
        else:
            raise ConfigError(f"model {text!r}: unknown modifier {modifier!r} "
                              "(known: m2as=..., both-halves)")
    has_m2as = bool(stages) if stages is not None else (
        head == "default" or bool(PRESETS[head].m2as_stages))
    if not has_m2as:
        if mode is not None or both:
            raise ConfigError(f"model {text!r}: a plain backbone has no pruned/dense path")
        mode = "plain"
    elif mode is None:
        mode = "pruned"
    if both and mode != "pruned":
        raise ConfigError(f"model {text!r}: both-halves is a pruned-path prototype")
    if head == "default" and (stages is not None or both):
        raise ConfigError(f"model {text!r}: the bundled model's architecture is fixed")
    return ModelSpec(str(text).strip(), head, mode, stages, both)


def spec_config(spec: ModelSpec, width: int | None = None):
    """The architecture of a preset-based spec (``width`` overrides the preset's)."""
    overrides = {}
    if spec.m2as_stages is not None:
        overrides["m2as_stages"] = spec.m2as_stages
    if width is not None:
        overrides["width"] = width
    return get_config(spec.base, name=spec.base, **overrides)


def build_spec_model(spec: ModelSpec, width: int | None = None, seed: int = 0,
                     device: str = "cpu", dtype: str = "fp32"):
    """The eval-mode model of ``spec``: seeded random weights (same seed and architecture =
    same weights, so a pruned and a dense spec share them) or the bundled default."""
    import torch

    from ..network import build_model
    from .workload import activate_all_branches_

    if spec.base == "default":
        from ..weights import load_model

        model = load_model(None)
    else:
        torch.manual_seed(seed)
        model = activate_all_branches_(build_model(spec_config(spec, width)), seed)
    if spec.both_halves:
        from .halves import mask_both_halves_

        mask_both_halves_(model)
    from ..precision import resolve_dtype

    return model.to(device=device, dtype=resolve_dtype(dtype, torch.device(device))).eval()
