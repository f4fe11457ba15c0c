"""M2AE: fast local motion deblurring with mask- and motion-aware pixel pruning (M2AENet)."""
from importlib import import_module

from .errors import ConfigError, ImageInputError, M2AEError, WeightsError

# The public names below load on first use (PEP 562): `import m2ae_core` stays free of torch,
# so the `m2ae` command can restart itself (memory.restart_with_huge_pages) before paying the
# ~1.4 s torch import, instead of paying it in both processes.
_LAZY = {
    "PRESETS": ".config", "M2AEConfig": ".config", "get_config": ".config",
    "DeblurResult": ".inference", "analyze": ".inference", "deblur": ".inference",
    "M2AENet": ".network", "NetworkOutput": ".network", "build_model": ".network",
    "load_model": ".weights", "load_state": ".weights", "save_pretrained": ".weights",
    "save_weights": ".weights",
}

__all__ = ["PRESETS", "M2AEConfig", "get_config", "M2AENet", "NetworkOutput", "build_model",
           "load_model", "load_state", "save_weights", "save_pretrained", "deblur", "analyze",
           "DeblurResult", "M2AEError", "ImageInputError", "WeightsError", "ConfigError"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        # a submodule, as `import m2ae_core; m2ae_core.imageio` found it when this file
        # imported everything eagerly
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
