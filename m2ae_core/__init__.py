"""M2AE: fast local motion deblurring with mask- and motion-aware pixel pruning (M2AENet)."""
from .config import PRESETS, M2AEConfig, get_config
from .errors import ConfigError, ImageInputError, M2AEError, WeightsError
from .inference import DeblurResult, deblur
from .network import M2AENet, NetworkOutput, build_model

__all__ = ["PRESETS", "M2AEConfig", "get_config", "M2AENet", "NetworkOutput", "build_model", "deblur", "DeblurResult",
           "M2AEError", "ImageInputError", "WeightsError", "ConfigError"]
