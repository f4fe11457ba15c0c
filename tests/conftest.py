import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("M2AE_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def load_script(name: str):
    """Import ``scripts/<name>.py`` (the scripts folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter (beta, gamma and the zero-initialised motion analyzer included)
    non-trivial random values, so no branch of the network is silently inactive."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("motion_analyzer.weight"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            elif name.endswith("motion_analyzer.bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 2.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * scale / max(1, param[0].numel()) ** 0.5)
    return model


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA
