"""Exponential moving average of a model's weights (``optim.ema_decay``).

A running average of the weights smooths out the noise of the last steps, which small CPU
batches have plenty of; restoration networks are often evaluated with it. The average is
kept beside the model (same keys as its state dict) and goes into checkpoints, so a resumed
run continues it exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every optimiser step.

    It starts from the model's weights when built. Integer buffers (counters) are copied,
    not averaged. There is no warm-up: a fine-tune starts from trained weights, and a run
    from scratch is long enough for ``decay ** steps`` to vanish.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie strictly between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            average = self.weights[key]
            if average.is_floating_point():
                average.lerp_(value.detach(), 1.0 - self.decay)
            else:
                average.copy_(value)
        self.updates += 1

    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged weights into ``model`` (a copy of the trained one)."""
        model.load_state_dict(self.weights)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["weights"]) != set(self.weights):
            raise ValueError("the checkpoint's weight average does not match the model")
        for key, value in state["weights"].items():
            self.weights[key].copy_(value)
        self.updates = int(state["updates"])
