"""Where M2AE weights come from inside ComfyUI, and the loaded-model cache.

* ``models/m2ae/`` is registered with ``folder_paths`` under the name ``m2ae`` (``.safetensors``
  only); ``extra_model_paths.yaml`` may add more folders with the key ``m2ae:``.
* The first entry of the model combo, :data:`BUNDLED`, is the default model shipped inside the
  package (``m2ae_core/weights/m2ae_default.safetensors``). It is always listed, so workflows
  that use it stay valid; while the file is absent, loading it fails with a message that says
  where to put weights instead.
* Loaded weights are cached by (file, modification time, size, dtype): loading the same file
  again (another graph, another node) is free, and a replaced file is read anew.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

import comfy.model_management as model_management
import folder_paths
import m2ae_core.weights as core_weights
from m2ae_core import M2AENet, WeightsError, load_model
from m2ae_core.precision import resolve_dtype as core_resolve_dtype

FOLDER = "m2ae"
EXTENSIONS = {".safetensors"}
BUNDLED = "m2ae_default (bundled)"  # never a listed file name: those end in .safetensors
DEVICES = ["auto", "cpu", "cuda"]
DTYPES = ["auto", "fp32", "fp16", "bf16"]
CACHE_SIZE = 2  # models kept loaded (on their offload device)


def register_model_folder() -> None:
    """Add ``<models_dir>/m2ae`` to ComfyUI's model folders, keeping any extra paths that an
    ``extra_model_paths.yaml`` registered before the pack was imported, and restrict the
    folder to ``.safetensors`` (pickled checkpoints are never offered)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = list(folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0])
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


def model_folders() -> list[str]:
    return folder_paths.get_folder_paths(FOLDER)


def model_options() -> list[str]:
    return [BUNDLED] + [name for name in folder_paths.get_filename_list(FOLDER)
                        if os.path.splitext(name)[1].lower() in EXTENSIONS]


def _where_to_put() -> str:
    return (f"put an M2AE .safetensors file into ComfyUI's models/m2ae folder "
            f"({' or '.join(model_folders())}), refresh the page (press R) and choose it as "
            f"model_name")


def resolve(model_name: str) -> Path:
    """Path of a combo entry; :class:`WeightsError` with what to do when it is missing."""
    if model_name == BUNDLED:
        path = Path(core_weights.DEFAULT_WEIGHTS)
        if not path.is_file():
            raise WeightsError(f"M2AE: the bundled default model is not installed (looked for "
                               f"{path}); {_where_to_put()}")
        return path
    if os.path.splitext(model_name)[1].lower() not in EXTENSIONS:
        raise WeightsError(f"M2AE: '{model_name}' is not a .safetensors file (only .safetensors "
                           f"weights are loaded); {_where_to_put()}")
    full = folder_paths.get_full_path(FOLDER, model_name)
    if full is None or not os.path.isfile(full):
        raise WeightsError(f"M2AE: model file '{model_name}' was not found in "
                           f"{', '.join(model_folders())}; {_where_to_put()}")
    return Path(full)


def file_stamp(model_name: str) -> tuple:
    """What identifies the weights behind a combo entry (for ComfyUI's output cache)."""
    try:
        path = resolve(model_name)
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)
    except (WeightsError, OSError):
        return (model_name, None, None)


def compute_device(choice: str) -> torch.device:
    if choice == "auto":
        return model_management.get_torch_device()
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("M2AE: device 'cuda' was chosen but this ComfyUI has no usable CUDA "
                               "GPU (torch.cuda.is_available() is False); choose device 'auto' or "
                               "'cpu'")
        if model_management.get_torch_device().type == "cuda":
            return model_management.get_torch_device()
        return torch.device("cuda", torch.cuda.current_device())
    raise ValueError(f"M2AE: unknown device '{choice}'; choose one of {DEVICES}")


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is m2ae_core's rule (:func:`m2ae_core.precision.auto_dtype`): bf16 on a CPU
    that computes it natively (faster, results within 0.01 dB on the benchmark), float32
    elsewhere, GPUs included. fp16/bf16 stay available on request."""
    if choice not in DTYPES:
        raise ValueError(f"M2AE: unknown dtype '{choice}'; choose one of {DTYPES}")
    return core_resolve_dtype(choice, device)


@dataclass
class M2AEModel:
    """What the ``M2AE_MODEL`` type carries between nodes.

    ``network`` lives on ``offload_device`` between runs and is moved to ``device`` for a run
    (ComfyUI's convention, so GPU memory is shared with other models).
    """

    network: M2AENet
    name: str
    source: str
    device: torch.device
    offload_device: torch.device
    dtype: torch.dtype

    @property
    def has_trajectory(self) -> bool:
        return bool(self.network.config.m2as_stages)


_cache: OrderedDict[tuple, M2AENet] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def cached_models() -> int:
    return len(_cache)


def load(model_name: str, device: str = "auto", dtype: str = "auto") -> M2AEModel:
    path = resolve(model_name)
    target = compute_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    offload = target if target.type == "cpu" else model_management.unet_offload_device()
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, torch_dtype)
    with _cache_lock:
        network = _cache.get(key)
        if network is not None:
            _cache.move_to_end(key)
    if network is None:
        network = load_model(str(path), device=offload, dtype=torch_dtype)
        with _cache_lock:
            _cache[key] = network
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return M2AEModel(network=network, name=model_name, source=str(path), device=target,
                     offload_device=offload, dtype=torch_dtype)
