"""ComfyUI nodes of M2AE (V3 schema API): Load M2AE Model, Predict Blur Mask, Estimate
Trajectory, Pruned Deblur.

Imported by the repository-root ``__init__.py`` only inside ComfyUI (it needs ``comfy``,
``comfy_api`` and ``folder_paths``). Importing it registers the ``m2ae`` model folder.
"""
import logging
import sys

from ._bootstrap import ensure_core

ensure_core()
logging.info("M2AE nodes: m2ae_core from %s", getattr(sys.modules["m2ae_core"], "__path__", ["?"])[0])

from . import models  # noqa: E402  (m2ae_core must be importable first)
from .nodes import (NODES, M2AEEstimateTrajectory, M2AEExtension, M2AELoadModel,  # noqa: E402
                    M2AEModelType, M2AEPredictBlurMask, M2AEPrunedDeblur, M2AETrajectory,
                    M2AETrajectoryType, comfy_entrypoint, run_deblur)

models.register_model_folder()

__all__ = ["NODES", "M2AEExtension", "comfy_entrypoint", "M2AELoadModel", "M2AEPredictBlurMask",
           "M2AEEstimateTrajectory", "M2AEPrunedDeblur", "M2AEModelType", "M2AETrajectoryType",
           "M2AETrajectory", "run_deblur", "models"]
