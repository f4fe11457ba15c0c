"""Weights I/O: save and load M2AENet checkpoints (DESIGN §1).

Formats
-------
* ``.safetensors`` written by :func:`save_weights`; the architecture travels in the file's
  metadata (``format="m2ae"``, ``m2ae_config`` = JSON of ``M2AEConfig.to_dict()``,
  ``m2ae_version="1"``).
* A Hugging Face style directory written by :func:`save_pretrained`: ``config.json`` (the
  config plus ``"model_type": "m2aenet"``) and ``model.safetensors``.
* A Hub repo id ``owner/name[@revision][:filename]``, fetched with ``huggingface_hub``;
  the local cache is tried first (no network call when the file is there) and
  ``HF_HUB_OFFLINE`` is honoured, read when the call is made.
* PyTorch checkpoints (``.pth``/``.pt``/``.ckpt``/``.bin``) read with ``weights_only=True``:
  ``{'params': sd}`` / ``{'params_ema': sd}`` (NAFNet / BasicSR), ``{'state_dict': sd}``,
  ``{'model': sd}`` or a bare state dict; a ``module.`` prefix is stripped.

A plain NAFNet checkpoint (no M2AS keys) loads into the plain parts of an M2AS model
(``preset="paper"``): every checkpoint key must be used, the M2AS-only parameters stay at
their initialisation and are listed in ``model.m2ae_missing_keys`` and in a log warning.

Every failure is a :class:`WeightsError` with a one-line message that says what to do.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import struct
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import PRESETS, M2AEConfig, get_config
from .errors import ConfigError, WeightsError
from .network import M2AENet
from .precision import resolve_dtype

__all__ = ["DEFAULT_WEIGHTS", "CONFIG_NAME", "WEIGHTS_NAME", "MODEL_TYPE", "FORMAT_VERSION",
           "save_weights", "save_pretrained", "load_state", "load_model", "infer_config",
           "parse_hub_id", "HubId", "hub_cache_dir", "hub_offline"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "m2ae_default.safetensors"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "m2aenet"
FORMAT_VERSION = "1"
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
_WEIGHT_SUFFIXES = (".safetensors",) + _TORCH_SUFFIXES
_USAGE = ("pass a .safetensors/.pth file, a directory with config.json + model.safetensors, "
          "or a Hugging Face Hub repo id 'owner/name'")


# --------------------------------------------------------------------------- small helpers

def _sample(items, limit: int = 8) -> str:
    """``a, b, c (+5 more)`` — a short list for one-line messages."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    if len(items) > limit:
        shown += f" (+{len(items) - limit} more)"
    return shown or "none"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _shape(shape) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


# --------------------------------------------------------------------------- config handling

_INT_FIELDS = ("width", "middle_blocks", "in_channels", "trajectory_instants")
_TUPLE_FIELDS = ("enc_blocks", "dec_blocks", "m2as_stages")
_BOOL_FIELDS = ("gate_trajectory",)


def _config_from_dict(data: Any, where: str) -> M2AEConfig:
    """``M2AEConfig.from_dict`` with type checks that name the offending field."""
    if not isinstance(data, dict):
        raise WeightsError(f"{where}: the config is a {type(data).__name__}, not a JSON object; "
                           "re-save the model with m2ae_core.save_weights / save_pretrained")
    data = {k: v for k, v in data.items() if k not in ("model_type", "m2ae_version")}
    for key, value in data.items():
        bad = None
        if key in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
            bad = "an integer"
        elif key in _TUPLE_FIELDS and (not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in value)):
            bad = "a list of integers"
        elif key in _BOOL_FIELDS and not isinstance(value, bool):
            bad = "true or false"
        elif key == "name" and not isinstance(value, str):
            bad = "a string"
        if bad:
            raise WeightsError(f"{where}: invalid config field {key!r} = {value!r} "
                               f"(must be {bad}); fix the config or pass preset=...")
    try:
        return M2AEConfig.from_dict(data)
    except (ConfigError, TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: invalid config: {_first_line(exc)}; "
                           "fix the config or pass preset=...") from None


_STAGE_BLOCK = re.compile(r"^(encoders|decoders)\.(\d+)\.(\d+)\.")
_MIDDLE_BLOCK = re.compile(r"^middle_blks\.(\d+)\.")
_DOWN = re.compile(r"^downs\.(\d+)\.weight$")
_M2AS_KEY = re.compile(r"^encoders\.(\d+)\.(?:mask_predictor\.|motion_analyzer\.|\d+\.dconv\.)")
_CONTEXT_UNIT = re.compile(r"^encoders\.\d+\.mask_predictor\.context\.(\d+)\.")
_MAX_PROJ = re.compile(r"^encoders\.\d+\.mask_predictor\.max_proj\.")
_SHAKE_HEAD = re.compile(r"^encoders\.\d+\.mask_predictor\.shake_head\.")
_EVIDENCE_CONV = re.compile(r"^mask_evidence\.layers\.(\d+)\.weight$")


def _is_m2as_key(key: str) -> bool:
    return _M2AS_KEY.match(key) is not None


def _evidence_channels(state_dict: dict[str, torch.Tensor]) -> int:
    """Output channels of the blur-evidence stem's last conv (0: no stem)."""
    convs = {int(m.group(1)): v for k, v in state_dict.items() if (m := _EVIDENCE_CONV.match(k))}
    last = convs[max(convs)] if convs else None
    return int(last.shape[0]) if isinstance(last, torch.Tensor) and last.dim() == 4 else 0


def infer_config(state_dict: dict[str, torch.Tensor], name: str = "inferred") -> M2AEConfig:
    """Read the architecture off a NAFNet / M2AENet state dict (key indices and shapes).

    Works for plain NAFNet checkpoints and for M2AS ones (a stage is M2AS when it has a
    mask predictor, a motion analyzer or ``dconv`` keys). ``gate_trajectory`` cannot be seen
    in the weights and keeps its default.
    """
    intro = state_dict.get("intro.weight")
    if not isinstance(intro, torch.Tensor) or intro.dim() != 4:
        raise WeightsError(
            "not an M2AENet/NAFNet state dict: it has no 4-D 'intro.weight' "
            f"({len(state_dict)} keys, e.g. {_sample(sorted(state_dict), 5)}); "
            "pass preset=... only if it is an M2AENet with renamed keys")
    width, in_channels = int(intro.shape[0]), int(intro.shape[1])
    downs = sorted(int(m.group(1)) for k in state_dict if (m := _DOWN.match(k)))
    stages = len(downs)
    if stages == 0 or downs != list(range(stages)):
        raise WeightsError(f"not an M2AENet/NAFNet state dict: encoder downsamplers {downs} "
                           "are not numbered 0..n-1; pass preset=... to choose the architecture")
    enc: list[set[int]] = [set() for _ in range(stages)]
    dec: list[set[int]] = [set() for _ in range(stages)]
    middle: set[int] = set()
    m2as: set[int] = set()
    for key in state_dict:
        if (m := _STAGE_BLOCK.match(key)):
            target = enc if m.group(1) == "encoders" else dec
            stage = int(m.group(2))
            if stage >= stages:
                raise WeightsError(f"not an M2AENet/NAFNet state dict: key {key!r} names stage "
                                   f"{stage} but there are {stages} downsamplers")
            target[stage].add(int(m.group(3)))
        elif (m := _MIDDLE_BLOCK.match(key)):
            middle.add(int(m.group(1)))
        if (m := _M2AS_KEY.match(key)):
            m2as.add(int(m.group(1)))
    context_units = {int(m.group(1)) for k in state_dict if (m := _CONTEXT_UNIT.match(k))}
    taps = 9
    for key, value in state_dict.items():
        if key.endswith(".dconv.weight") and isinstance(value, torch.Tensor) and value.dim() == 2:
            taps = int(value.shape[1])
            break
    # Decoder module i runs at the depth of encoder stage n-1-i (the deepest first).
    dec_blocks = tuple(len(blocks) for blocks in reversed(dec))
    try:
        return M2AEConfig(width=width, enc_blocks=tuple(len(b) for b in enc),
                          middle_blocks=len(middle), dec_blocks=dec_blocks,
                          m2as_stages=tuple(sorted(m2as)), in_channels=in_channels,
                          trajectory_instants=taps, mask_context=len(context_units),
                          mask_global_max=any(_MAX_PROJ.match(k) for k in state_dict),
                          mask_evidence=_evidence_channels(state_dict),
                          mask_shake_head=any(_SHAKE_HEAD.match(k) for k in state_dict),
                          name=name)
    except ConfigError as exc:
        raise WeightsError(f"could not infer an M2AENet config from the state dict: {exc}; "
                           "pass preset=... to choose the architecture") from None


# --------------------------------------------------------------------------- saving

def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name next to the target: same file system, so the rename is atomic.
    temp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        with open(temp, "xb"):
            pass
        # Keep an existing file's permissions; else the umask's (safetensors writes 0600).
        mode = (path if path.exists() else Path(temp)).stat().st_mode & 0o777
        write(temp)
        os.chmod(temp, mode)
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _cpu_fp32_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        tensor = tensor.contiguous()
        # safetensors refuses tensors sharing memory: give each its own storage.
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        state[key] = tensor
    return state


def _model_config(model) -> M2AEConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, M2AEConfig):
        raise TypeError("expected an M2AENet (with an M2AEConfig in .config), "
                        f"got {type(model).__name__}")
    return config


def save_weights(model: M2AENet, path: str | os.PathLike) -> Path:
    """Save ``model`` as a ``.safetensors`` file (contiguous CPU fp32) with its config embedded.

    The file is written next to ``path`` first and renamed over it, so an interrupted save
    never destroys an existing file.
    """
    from safetensors.torch import save_file

    config = _model_config(model)
    path = Path(path).expanduser()
    state = _cpu_fp32_state(model)
    metadata = {"format": "m2ae", "m2ae_config": json.dumps(config.to_dict()),
                "m2ae_version": FORMAT_VERSION}
    _atomic_write(path, lambda temp: save_file(state, temp, metadata=metadata))
    return path


def save_pretrained(model: M2AENet, directory: str | os.PathLike) -> Path:
    """Save ``model`` as a Hugging Face style folder: ``config.json`` + ``model.safetensors``."""
    config = _model_config(model)
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / WEIGHTS_NAME)
    payload = {"model_type": MODEL_TYPE, **config.to_dict(), "m2ae_version": FORMAT_VERSION}
    text = json.dumps(payload, indent=2) + "\n"

    def write(temp: str) -> None:
        Path(temp).write_text(text, encoding="utf-8")

    _atomic_write(directory / CONFIG_NAME, write)
    return directory


# --------------------------------------------------------------------------- reading files

def _describe(head: bytes) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    signatures = [(b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                  (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
                  (b"\x1f\x8b", "a gzip archive"), (b"\x89HDF", "an HDF5 file (Keras/TF?)"),
                  (b"\x93NUMPY", "a NumPy .npy array"), (b"7z\xbc\xaf", "a 7-Zip archive"),
                  (b"version https://git-lfs", "a Git LFS pointer (run `git lfs pull`)")]
    for magic, what in signatures:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.lstrip()[:1] in (b"<",) and b"html" in head[:512].lower():
        return "an HTML page (a failed download?)"
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary file"


def _safetensors_header(path: Path, head: bytes, size: int) -> dict | None:
    """Parse and check a safetensors header; None when the file is not a safetensors file."""
    if len(head) < 9:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if length < 2 or length > 100_000_000 or head[8:9] != b"{":
        return None
    if size < 8 + length:
        raise WeightsError(f"{path} is a truncated .safetensors file: its header needs "
                           f"{8 + length} bytes but the file has {size}; "
                           "download or copy it again")
    with open(path, "rb") as stream:
        stream.seek(8)
        raw = stream.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WeightsError(f"{path} is not a valid .safetensors file (its header is not JSON); "
                           "download or copy it again") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a valid .safetensors file (bad header); "
                           "download or copy it again")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise WeightsError(f"{path} is not a valid .safetensors file (entry {key!r} has no "
                               "data offsets); download or copy it again") from None
    if size < 8 + length + end:
        raise WeightsError(f"{path} is a truncated .safetensors file: it should hold "
                           f"{8 + length + end} bytes but has {size}; download or copy it again")
    return header


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            for key in reader.keys():
                tensors[key] = reader.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types (Rust side)
        raise WeightsError(f"{path} could not be read as .safetensors ({_first_line(exc)}); "
                           "the file is corrupt or truncated: download or copy it again") from None
    return tensors, metadata


def _read_torch(path: Path, head: bytes) -> Any:
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is a truncated or corrupt PyTorch checkpoint (incomplete zip "
                           f"archive of {path.stat().st_size} bytes); download or copy it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise WeightsError(
                f"{path} holds Python objects{what} besides tensors, which are not loaded for "
                "safety (weights_only=True); re-save it as torch.save({'params': "
                "model.state_dict()}, path) or as .safetensors") from None
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)}); "
                           "it is corrupt or truncated: download or copy it again") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)}); "
                           "it is corrupt or truncated: download or copy it again") from None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` and any prefix shared by every key (``model.``...)."""
    while state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    if "intro.weight" not in state:
        for key in state:
            if key.endswith(".intro.weight"):
                prefix = key[: -len("intro.weight")]
                if all(k.startswith(prefix) for k in state):
                    state = {k[len(prefix):]: v for k, v in state.items()}
                break
    return state


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _extract_state(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Find the state dict (and an embedded config, if any) inside a loaded checkpoint."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict; "
                           "save checkpoints as torch.save({'params': model.state_dict()}, path)")
    config = obj.get("m2ae_config", obj.get("config"))
    config = config if isinstance(config, dict) else None
    for key in ("params_ema", "params", "state_dict", "model", "model_state_dict", "net_g"):
        if _is_state_dict(obj.get(key)):
            if key == "params_ema" and "params" in obj:
                log.info("%s: using the EMA weights ('params_ema')", path)
            return dict(obj[key]), config
    if _is_state_dict(obj):
        return dict(obj), None
    tensors = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
    raise WeightsError(
        f"{path} has no state dict: expected {{'params': ...}}, {{'params_ema': ...}}, "
        f"{{'state_dict': ...}}, {{'model': ...}} or a dict of tensors, found keys "
        f"{_sample(sorted(map(str, obj)), 8)}" + (f" ({len(tensors)} tensors)" if tensors else ""))


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], M2AEConfig | None]:
    """State dict and embedded config (None when absent) of one checkpoint file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(4096)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}; "
                           "check the path and its permissions") from None
    header = _safetensors_header(path, head, size)
    if header is not None:
        state, metadata = _read_safetensors(path)
        config = None
        raw = metadata.get("m2ae_config")
        if raw is not None:
            version = metadata.get("m2ae_version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise WeightsError(f"{path} uses M2AE weights format version {version!r}, this "
                                   f"m2ae_core reads version {FORMAT_VERSION!r}; upgrade m2ae_core")
            try:
                data = json.loads(raw)
            except ValueError:
                raise WeightsError(f"{path}: the 'm2ae_config' metadata is not valid JSON; "
                                   "pass preset=... or re-save the model") from None
            config = _config_from_dict(data, f"{path} metadata")
        return _strip_prefixes(state), config
    if head.startswith(b"PK") or head[:1] == b"\x80":
        obj = _read_torch(path, head)
        state, raw_config = _extract_state(obj, path)
        config = _config_from_dict(raw_config, f"{path} config") if raw_config else None
        return _strip_prefixes(state), config
    kind = _describe(head)
    raise WeightsError(f"{path} is not a checkpoint (it looks like {kind}); expected a "
                       ".safetensors file or a PyTorch checkpoint (.pth/.pt/.ckpt)")


def _read_config_json(path: Path) -> M2AEConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable JSON config ({_first_line(exc)}); "
                           "fix it, delete it to use the weights' metadata, "
                           "or pass preset=...") from None
    if isinstance(data, dict) and data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise WeightsError(f"{path} describes a {data['model_type']!r} model, not an "
                           f"{MODEL_TYPE!r}; point load_model at an M2AE model")
    return _config_from_dict(data, str(path))


def _read_directory(directory: Path) -> tuple[dict[str, torch.Tensor], M2AEConfig | None]:
    candidates = [directory / WEIGHTS_NAME, directory / "pytorch_model.bin"]
    weights = next((c for c in candidates if c.is_file()), None)
    if weights is None:
        others = sorted(p.name for p in directory.iterdir()
                        if p.suffix in _WEIGHT_SUFFIXES)[:5] if directory.is_dir() else []
        hint = (f"; it holds {', '.join(others)}: pass that file's path" if others else
                "; save one with m2ae_core.save_pretrained(model, directory)")
        raise WeightsError(f"directory {directory} has no {WEIGHTS_NAME} (looked for "
                           f"{', '.join(str(c) for c in candidates)}){hint}")
    state, config = _read_file(weights)
    config_path = directory / CONFIG_NAME
    if config_path.is_file():
        from_json = _read_config_json(config_path)
        if config is not None and config != from_json:
            log.warning("%s and the metadata of %s disagree; using %s", config_path, weights,
                        CONFIG_NAME)
        config = from_json
    return state, config


# --------------------------------------------------------------------------- Hugging Face Hub

@dataclasses.dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None
    filename: str = WEIGHTS_NAME

    def __str__(self) -> str:
        text = self.repo_id
        if self.revision:
            text += f"@{self.revision}"
        if self.filename != WEIGHTS_NAME:
            text += f":{self.filename}"
        return text


_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[^:@\s]+))?(?::(?P<file>[^:@\s]+))?$")


def parse_hub_id(text: str) -> HubId | None:
    """``owner/name[@revision][:filename]`` -> HubId; None when ``text`` is not of that form."""
    match = _HUB_ID.match(text.strip())
    if not match:
        return None
    repo = match.group("repo")
    if "--" in repo or ".." in repo:
        return None
    filename = match.group("file")
    if filename is None and repo.lower().endswith(_WEIGHT_SUFFIXES):
        return None  # 'folder/model.safetensors' is a path, not a repo
    return HubId(repo, match.group("rev"), filename or WEIGHTS_NAME)


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, read from the environment now (not at import)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME")
    if not home:
        home = os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for offline mode, read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_error_class(name: str) -> type:
    for module in ("huggingface_hub.errors", "huggingface_hub.utils"):
        try:
            found = getattr(__import__(module, fromlist=[name]), name, None)
        except ImportError:
            found = None
        if isinstance(found, type):
            return found
    return type(name, (Exception,), {})  # never raised: matches nothing


def _hub_fetch(hub: HubId, filename: str, optional: bool = False) -> Path | None:
    """Path of ``filename`` of ``hub`` in the local cache, downloading it only when it is not
    cached and offline mode is off. ``optional``: None when the repo has no such file.

    The cache is looked up with ``try_to_load_from_cache``, which only reads the file system:
    ``hf_hub_download(local_files_only=True)`` is not used for that because recent
    huggingface_hub versions may contact the Hub while building request headers.
    """
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(f"loading the Hub repo '{hub.repo_id}' needs huggingface_hub: "
                           "pip install huggingface_hub, or pass a local path") from None
    cache = hub_cache_dir()
    where = f"Hub repo '{hub.repo_id}'" + (f" at revision '{hub.revision}'" if hub.revision else "")
    tail = f"(cache dir {cache})"
    invalid = _hub_error_class("HFValidationError")
    try:
        cached = huggingface_hub.try_to_load_from_cache(
            hub.repo_id, filename, cache_dir=str(cache), revision=hub.revision)
    except (invalid, ValueError) as exc:
        raise WeightsError(f"'{hub}' is not a valid Hub repo id or file name "
                           f"({_first_line(exc)}); {_USAGE}") from None
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached)
    known_absent = cached is not None  # the cache recorded that the repo lacks this file
    if known_absent and optional:
        return None
    if hub_offline():
        if optional:
            return None
        raise WeightsError(
            f"{where}: offline mode is on (HF_HUB_OFFLINE=1) and '{filename}' is not in the "
            f"local cache {tail}; unset HF_HUB_OFFLINE to download it, fill the cache with "
            f"`hf download {hub.repo_id}`, or pass a local path")
    local_missing = _hub_error_class("LocalEntryNotFoundError")
    entry_missing = _hub_error_class("EntryNotFoundError")
    offline_error = _hub_error_class("OfflineModeIsEnabled")
    gated = _hub_error_class("GatedRepoError")
    repo_missing = _hub_error_class("RepositoryNotFoundError")
    revision_missing = _hub_error_class("RevisionNotFoundError")
    http_error = _hub_error_class("HfHubHTTPError")
    try:
        return Path(huggingface_hub.hf_hub_download(
            repo_id=hub.repo_id, filename=filename, revision=hub.revision, cache_dir=str(cache)))
    except gated:
        raise WeightsError(f"{where} is gated: accept its terms on huggingface.co and log in "
                           f"(`hf auth login` or HF_TOKEN) {tail}") from None
    except repo_missing:
        raise WeightsError(f"{where} does not exist on the Hub or is private {tail}; check the "
                           "id, log in if it is private, or pass a local path") from None
    except revision_missing:
        raise WeightsError(f"{where}: revision '{hub.revision}' not found {tail}; check the "
                           "branch, tag or commit after '@'") from None
    except offline_error:
        raise WeightsError(f"{where}: huggingface_hub is in offline mode and '{filename}' is not "
                           f"in the local cache {tail}; unset HF_HUB_OFFLINE or pass a local "
                           "path") from None
    except local_missing:
        if optional:
            return None
        raise WeightsError(f"{where}: the Hub could not be reached and '{filename}' is not in "
                           f"the local cache {tail}; check the network/proxy (HF_ENDPOINT), or "
                           "pass a local path") from None
    except entry_missing:
        if optional:
            return None
        raise WeightsError(f"{where} has no file '{filename}' {tail}; name the weights file as "
                           f"'{hub.repo_id}:<file>.safetensors'") from None
    except http_error as exc:
        raise WeightsError(f"{where}: the Hub answered with an error ({_first_line(exc)}) "
                           f"{tail}; retry later or pass a local path") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{where}: download failed ({_first_line(exc)}) {tail}; check the "
                           "network, or pass a local path") from None


def _read_hub(hub: HubId) -> tuple[dict[str, torch.Tensor], M2AEConfig | None, Path]:
    weights = _hub_fetch(hub, hub.filename)
    state, config = _read_file(weights)
    if config is None:
        folder = os.path.dirname(hub.filename)
        config_file = _hub_fetch(hub, f"{folder}/{CONFIG_NAME}" if folder else CONFIG_NAME,
                                 optional=True)
        if config_file is not None:
            config = _read_config_json(config_file)
    return state, config, weights


# --------------------------------------------------------------------------- resolution

def _not_found(source: str | os.PathLike, places: list[str]) -> WeightsError:
    return WeightsError(f"no weights found for {str(source)!r}; searched: "
                        + "; ".join(places) + f"; {_USAGE}")


def _read_source(source) -> tuple[dict[str, torch.Tensor], M2AEConfig | None, str]:
    """Resolve ``source`` (see :func:`load_model`) and read it."""
    if source is None:
        default = Path(DEFAULT_WEIGHTS)
        if not default.is_file():
            raise WeightsError(
                f"the bundled default model is not installed yet (looked for {default}); "
                f"{_USAGE}, e.g. load_model('path/to/model.safetensors')")
        state, config = _read_file(default)
        return state, config, str(default)
    if not isinstance(source, (str, os.PathLike)):
        raise WeightsError(f"source must be a path or a Hub repo id string, got "
                           f"{type(source).__name__}; {_USAGE}")
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise WeightsError(f"source is an empty string; {_USAGE} (or None for the bundled default)")
    path = Path(text).expanduser()
    if path.is_file():
        state, config = _read_file(path)
        return state, config, str(path)
    if path.is_dir():
        state, config = _read_directory(path)
        return state, config, str(path)
    places = [f"no file or directory {path.absolute()}"]
    hub = parse_hub_id(text) if isinstance(source, str) else None
    if hub is None:
        if path.suffix.lower() in _WEIGHT_SUFFIXES and isinstance(source, str) and "/" in text:
            places.append("(not tried as a Hub repo id because it ends in "
                          f"{path.suffix}; write 'owner/name:file{path.suffix}' for a Hub file)")
        raise _not_found(source, places)
    try:
        state, config, weights = _read_hub(hub)
    except WeightsError as exc:
        raise WeightsError(f"{path.absolute()} is not a local file or directory, and as a Hub "
                           f"repo id: {exc}") from None
    return state, config, str(weights)


def load_state(source=None, *, preset: str | M2AEConfig | None = None
               ) -> tuple[M2AEConfig, dict[str, torch.Tensor]]:
    """Resolve ``source`` and return ``(config, state_dict)`` without building a model.

    The config is ``preset`` when given, else the one stored with the weights (config.json,
    then the safetensors metadata, then a ``config`` entry of a .pth), else inferred from
    the state dict's keys and shapes (:func:`infer_config`).
    """
    state, config, _ = _read_source(source)
    return _choose_config(state, config, preset), state


def _choose_config(state, stored: M2AEConfig | None, preset) -> M2AEConfig:
    if preset is not None:
        return get_config(preset)  # ConfigError for an unknown preset name
    if stored is not None:
        return stored
    return infer_config(state)


# --------------------------------------------------------------------------- building models

def _parse_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; "
                          "use 'cpu', 'cuda', 'cuda:1', 'mps'...") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; "
                          "use device='cpu'")
    return parsed


def _mismatch_error(where: str, config: M2AEConfig, missing, unexpected, shapes) -> WeightsError:
    parts = [f"{len(missing)} missing keys ({_sample(missing)})",
             f"{len(unexpected)} unexpected keys ({_sample(unexpected)})"]
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (" + _sample(
            f"{k}: checkpoint {_shape(a)} vs model {_shape(b)}" for k, a, b in shapes) + ")")
    desc = (f"'{config.name}'" if config.name in PRESETS else "config") + (
        f" (width {config.width}, enc {list(config.enc_blocks)}, m2as {list(config.m2as_stages)})")
    hint = "" if shapes else " (or strict=False to load only the matching keys)"
    return WeightsError(f"{where} does not fit M2AENet {desc}: " + ", ".join(parts)
                        + "; it is another architecture: pass the matching preset= "
                          f"or leave preset out to use the checkpoint's own config{hint}")


def _load_into(model: M2AENet, state: dict[str, torch.Tensor], strict: bool, where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    plain_checkpoint = not any(_is_m2as_key(k) for k in state)
    allowed = {k for k in missing if plain_checkpoint and _is_m2as_key(k)}
    bad_missing = [k for k in missing if k not in allowed]
    used = len(own) - len(missing)
    if shapes or used == 0 or (strict and (bad_missing or unexpected)):
        raise _mismatch_error(where, model.config, bad_missing if strict else missing,
                              unexpected, shapes)
    with torch.no_grad():
        for key, value in state.items():
            if key in own:
                own[key].copy_(value)
    model.m2ae_missing_keys = missing
    model.m2ae_unexpected_keys = unexpected
    if allowed:
        log.warning("%s: plain NAFNet checkpoint loaded into the plain parts; %d M2AS parameters "
                    "stay at initialisation: %s", where, len(allowed), _sample(sorted(allowed), 6))
    if bad_missing or unexpected:
        log.warning("%s: strict=False: %d parameters not in the checkpoint (%s), %d checkpoint "
                    "keys unused (%s)", where, len(bad_missing), _sample(bad_missing, 6),
                    len(unexpected), _sample(unexpected, 6))


def load_model(source=None, device=None, dtype=None, *, preset: str | M2AEConfig | None = None,
               strict: bool = True) -> M2AENet:
    """Load an M2AENet in eval mode.

    ``source`` is resolved in this order:

    1. ``None``: the bundled default (:data:`DEFAULT_WEIGHTS`);
    2. an existing file: ``.safetensors`` (config from its metadata) or a PyTorch checkpoint
       (``{'params': sd}`` NAFNet/BasicSR, ``params_ema``, ``state_dict``, ``model`` or a bare
       state dict; ``module.`` stripped) — the format is told from the file's content;
    3. an existing directory: ``config.json`` + ``model.safetensors``;
    4. a Hub repo id ``owner/name[@revision][:filename]``: the local HF cache first, the
       network only when the file is not cached and ``HF_HUB_OFFLINE`` is not set;
    5. anything else: :class:`WeightsError` naming every place searched.

    ``preset`` (a preset name or an :class:`M2AEConfig`) chooses the architecture instead of
    the stored/inferred config; a plain NAFNet checkpoint then fills the plain parts of an
    M2AS preset (the M2AS-only keys are listed in ``model.m2ae_missing_keys``).
    ``strict=False`` also tolerates other missing or unexpected keys (never shape mismatches).
    ``device``: str or torch.device (None = cpu); ``dtype``: torch dtype, 'fp32'/'fp16'/'bf16',
    or 'auto' (bf16 on a CPU with native bf16, else float32: :mod:`m2ae_core.precision`);
    None = float32.
    """
    target_device = _parse_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    state, stored, where = _read_source(source)
    config = _choose_config(state, stored, preset)
    model = M2AENet(config)
    _load_into(model, state, strict, where)
    model.m2ae_source = where
    model.to(device=target_device, dtype=target_dtype)
    return model.eval()
