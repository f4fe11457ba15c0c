"""Exceptions with messages meant for end users (one line, says what to do)."""


class M2AEError(Exception):
    """Base class of every error m2ae_core raises on purpose."""


class ImageInputError(M2AEError, ValueError):
    """An image or mask could not be used: unreadable, truncated, too large, NaN/Inf..."""


class WeightsError(M2AEError):
    """Weights could not be found or do not fit the architecture."""


class ConfigError(M2AEError, ValueError):
    """Unknown preset or invalid configuration field."""
