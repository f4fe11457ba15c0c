"""Make the pack's own ``m2ae_core`` importable inside ComfyUI.

A user installs the pack by cloning the repository into ``ComfyUI/custom_nodes/`` and letting
ComfyUI-Manager run ``pip install -r requirements.txt`` (the core's dependencies, never torch):
``m2ae_core`` is then a folder beside ``m2ae_nodes``, not an installed package. The nodes are
written against that copy, so it is imported as the top-level package ``m2ae_core`` (unless a
``m2ae_core`` is already imported), without adding the repository to ``sys.path`` (none of
its other folders can shadow a module that ComfyUI imports).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
CORE_DIR = PACK_DIR / "m2ae_core"


def _explain(exc: ModuleNotFoundError) -> ImportError:
    if exc.name == "m2ae_core":
        return ImportError(f"M2AE nodes: m2ae_core was not found (looked in {CORE_DIR}); "
                           "reinstall the pack with git clone into ComfyUI/custom_nodes/")
    return ImportError(f"M2AE nodes need the Python package '{exc.name}': run "
                       f"'python -m pip install -r {PACK_DIR / 'requirements.txt'}' with "
                       "ComfyUI's Python (ComfyUI-Manager does this on install), then restart "
                       "ComfyUI")


def ensure_core() -> None:
    if "m2ae_core" in sys.modules:
        return
    try:
        if (CORE_DIR / "__init__.py").is_file():
            spec = importlib.util.spec_from_file_location(
                "m2ae_core", CORE_DIR / "__init__.py", submodule_search_locations=[str(CORE_DIR)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["m2ae_core"] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                for name in [n for n in sys.modules if n == "m2ae_core" or n.startswith("m2ae_core.")]:
                    del sys.modules[name]
                raise
        else:
            importlib.import_module("m2ae_core")
    except ModuleNotFoundError as exc:
        raise _explain(exc) from exc
