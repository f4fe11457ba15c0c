"""M2AE: fast local motion deblurring with mask- and motion-aware pixel pruning (M2AENet)."""
from .config import PRESETS, M2AEConfig, get_config
from .errors import ConfigError, ImageInputError, M2AEError, WeightsError
from .inference import DeblurResult, analyze, deblur
from .network import M2AENet, NetworkOutput, build_model
from .weights import load_model, load_state, save_pretrained, save_weights

__all__ = ["PRESETS", "M2AEConfig", "get_config", "M2AENet", "NetworkOutput", "build_model", "load_model", "load_state", "save_weights", "save_pretrained", "deblur", "analyze", "DeblurResult",
           "M2AEError", "ImageInputError", "WeightsError", "ConfigError"]
