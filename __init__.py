"""ComfyUI entry point of the M2AE node pack.

Outside ComfyUI (no ``comfy_api``), or imported as a bare module rather than a package,
importing this file exposes nothing and has no side effects.
Inside ComfyUI it exports ``comfy_entrypoint`` (V3 API), which lists the nodes of
``m2ae_nodes``.
"""
import importlib.util as _importlib_util

# A test runner may import this file as a bare module (its folder name need not be a valid
# package name, e.g. a checkout called "ci-check"): only a package import registers nodes.
if __package__ and _importlib_util.find_spec("comfy_api") is not None:
    from .m2ae_nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
else:
    __all__ = []

del _importlib_util
