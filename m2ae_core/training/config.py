"""Training configuration: nested dataclasses loaded from YAML or TOML (strict keys).

File layout (YAML shown; TOML uses the same names with ``[model]``, ``[data]`` ... tables)::

    seed: 0
    steps: 20000          # length of the cosine schedule = total optimiser steps
    batch_size: 8         # per process
    out_dir: runs/small-cpu
    model: {preset: small, overrides: {}}
    data:  {photos: ../shared/data/photos, crop: 128, ...}
    optim: {lr: 1.0e-3, min_lr: 1.0e-6, betas: [0.9, 0.9], weight_decay: 1.0e-3, ...}
    loss:  {l1_mask_weight: 1.0, mask_weight: 0.01, tv_weight: 0.01, ...}

Relative paths (photos, datasets, out_dir) are relative to the working directory of the run.
Numbers written like ``1e-3`` (which YAML 1.1 reads as a string) are accepted for float
fields.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from .datasets import StreamSettings
from .losses import LossConfig

__all__ = ["ModelSection", "DataSection", "OptimSection", "TrainConfig", "load_config",
           "config_from_dict", "set_by_path"]


@dataclass
class ModelSection:
    preset: str = "small"
    overrides: dict = field(default_factory=dict)  # M2AEConfig fields, e.g. {width: 8}
    # Fine-tuning: start a fresh run from these weights (any source load_model accepts;
    # its architecture must equal preset + overrides). Ignored when resuming a checkpoint.
    init_weights: str | None = None
    # Train only the parameters whose dotted name contains one of these parts (e.g.
    # [mask_predictor]); every other parameter stays frozen. Empty = train everything.
    trainable: list = field(default_factory=list)
    # ... and then freeze those whose name contains one of these (e.g. [mask_predictor]: the
    # restoration adapts to masks from heads that keep what they learned on their own).
    frozen: list = field(default_factory=list)


@dataclass
class DataSection:
    # Synthetic samples rendered on the fly from the photos of ``photo_split`` (never the
    # held-out benchmark photos: data.bench.photo_paths(root, "train") excludes them).
    photos: str | None = "../shared/data/photos"
    photo_split: str = "train"
    # More photo folders for the synthetic samples (e.g. the Debian wallpapers that
    # scripts/fetch_extra_photos.sh unpacks); every photo there trains except held-out names.
    extra_photos: list = field(default_factory=list)
    # True: the synthetic target keeps the input's noise and JPEG error (sharp + degraded
    # blur - clean blur), so only blur is removed and the background is left as it was.
    # Validation still scores against the clean sharp image, as the benchmark does.
    target_keeps_degradation: bool = False
    seed: int | None = None  # sample stream seed; None = the top-level seed
    crop: int = 128
    render_scale: float = 1.5  # synthetic samples are rendered at crop*scale, then cropped
    blur_crop_prob: float = 0.5  # centre the crop on a blurred pixel with this probability
    flips: bool = True
    rotations: bool = True
    global_prob: float = 0.5  # share of synthetic samples with global (camera) blur
    synthetic: dict = field(default_factory=dict)  # SynthParams overrides
    synthetic_weight: float = 1.0  # relative sampling weights of the sources
    max_side: int = 1024  # photos are decoded with their long side at most this
    reloblur: str | None = None
    reloblur_split: str = "train"
    reloblur_masks: str | None = None  # default <reloblur>/masks
    reloblur_weight: float = 1.0
    gopro: str | None = None
    gopro_split: str = "train"
    gopro_gamma: bool = False
    gopro_weight: float = 1.0
    workers: int = 0  # DataLoader worker processes per training process
    prefetch: int = 2  # batches prefetched per worker
    # Validation: fixed local synthetic samples from the training photos, own seed.
    val_samples: int = 8
    val_size: int = 128
    val_seed: int = 917_251
    val_batch: int = 4

    def stream_settings(self, default_seed: int) -> StreamSettings:
        names = {f.name for f in dataclasses.fields(StreamSettings)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        values["seed"] = default_seed if self.seed is None else self.seed
        values["extra_photos"] = tuple(self.extra_photos)
        return StreamSettings(**values)


@dataclass
class OptimSection:
    lr: float = 1e-3
    min_lr: float = 1e-6  # cosine schedule floor, reached at the last step
    betas: tuple = (0.9, 0.9)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up before the cosine (0 = none)
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping (norm still logged)
    # Decay of an exponential moving average of the weights, written beside the trained
    # ones (final_ema.safetensors) and validated too; 0 = off.
    ema_decay: float = 0.0


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    steps: int = 1000  # total optimiser steps (schedule length)
    batch_size: int = 8  # per process; the global batch is batch_size * world size
    stop_at: int | None = None  # stop (with a checkpoint) once this step is reached
    time_limit: float | None = None  # seconds; stop with a checkpoint when exceeded
    log_every: int = 10
    val_every: int = 500  # 0 = only at the end
    checkpoint_every: int = 100
    out_dir: str = "runs/train"
    resume: bool = False  # continue from <out_dir>/last.pt when it exists
    threads: int = 0  # torch intra-op threads per process; 0 = leave torch's default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 (autocast of the forward on CUDA or CPU)
    tf32: bool = True  # allow TF32 matmuls/convs on CUDA
    ddp_find_unused: bool = False
    progress: bool = True  # print a progress line every log_every steps (rank 0)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> "TrainConfig":
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.data.crop >= 16 and self.data.crop % 16 == 0,
             "data.crop must be a multiple of 16 (>= 16)"),
            (self.data.render_scale >= 1.0, "data.render_scale must be >= 1"),
            (self.data.workers >= 0, "data.workers must be >= 0"),
            (self.log_every >= 1 and self.checkpoint_every >= 0 and self.val_every >= 0,
             "log_every must be >= 1, checkpoint_every and val_every >= 0"),
            (len(tuple(self.optim.betas)) == 2, "optim.betas must have two values"),
            (self.optim.lr > 0 and 0 <= self.optim.min_lr <= self.optim.lr,
             "optim.lr must be > 0 and 0 <= min_lr <= lr"),
            (0.0 <= self.optim.ema_decay < 1.0, "optim.ema_decay must be in [0, 1) (0 = off)"),
            (self.amp in ("none", "bf16"), "amp must be 'none' or 'bf16'"),
            (self.stop_at is None or self.stop_at >= 1, "stop_at must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.optim.betas = tuple(float(b) for b in self.optim.betas)
        return self


# --------------------------------------------------------------------------- loading

def _coerce(value: Any, annotation: str, where: str) -> Any:
    ann = str(annotation).replace(" ", "")
    if value is None:
        if "None" in ann:
            return None
        raise ConfigError(f"{where} must not be empty")
    if ann.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if ann.startswith("int"):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else value
            except ValueError:
                pass
        if not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if ann.startswith("float"):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if ann.startswith("str"):
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if ann == "dict":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if ann == "tuple":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(float(v) for v in value)
    if ann == "list":
        # A lone string would otherwise be iterated letter by letter.
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return list(value)
    return value


def _build(cls, data: Mapping[str, Any] | None, where: str):
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'the config'}; "
                          f"known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        f = fields[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(f.default_factory() if f.default_factory
                                    is not dataclasses.MISSING else None):
            values[name] = _build(type(f.default_factory()), value, path)
        else:
            values[name] = _coerce(value, f.type, path)
    return cls(**values)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and check a :class:`TrainConfig` from plain data (unknown keys are errors)."""
    return _build(TrainConfig, data, "").validate()


def _toml_loads(text: str) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("TOML configs need Python >= 3.11 or the 'tomli' package; "
                              "use a YAML config instead") from None
    return tomllib.loads(text)


def read_config_file(path) -> dict:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            data = _toml_loads(text)
        elif suffix in (".yaml", ".yml", ".json"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("YAML configs need PyYAML: pip install 'm2ae[train]' "
                                  "(or use a .toml config)") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: use a .yaml, .yml or .toml config file")
    except ConfigError:
        raise
    except Exception as exc:  # TOMLDecodeError / yaml.YAMLError, both parse errors
        raise ConfigError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    return data or {}


def set_by_path(data: dict, dotted: str, value: Any) -> None:
    """``set_by_path(d, "optim.lr", 5e-4)``: set a nested key, creating tables as needed."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {key} is not a table")
    node[keys[-1]] = value


def load_config(path=None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load a YAML/TOML config (or the defaults when ``path`` is None) and apply dotted
    ``overrides`` such as ``{"steps": 10, "model.overrides.width": 8}``."""
    data = read_config_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_by_path(data, key, value)
    return config_from_dict(data)
