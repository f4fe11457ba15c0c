"""scripts/average_weights.py: the mean of fine-tunes of one architecture."""
import importlib.util
from pathlib import Path

import pytest
import torch

from m2ae_core import load_model
from m2ae_core.network import build_model
from m2ae_core.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("average_weights",
                                                  ROOT / "scripts" / "average_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoints(tmp_path, count=2, **config):
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = build_model("small", width=8, **config)
        with torch.no_grad():  # defaults leave some tensors equal in every run: perturb them
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        paths.append(save_weights(model, tmp_path / f"run{seed}.safetensors"))
    return paths


def test_the_average_is_the_weighted_mean_of_every_tensor(script, tmp_path):
    a, b = _checkpoints(tmp_path)
    before = a.read_bytes()
    out = tmp_path / "soup.safetensors"
    assert script.main([str(a), str(b), "-o", str(out), "--weights", "0.25", "0.75",
                        "--name", "mixed"]) == 0
    soup, first, second = load_model(out), load_model(a), load_model(b)
    assert soup.config.name == "mixed"
    mixed = 0
    for key, value in soup.state_dict().items():
        x, y = first.state_dict()[key], second.state_dict()[key]
        if value.is_floating_point():
            assert torch.allclose(value, 0.25 * x + 0.75 * y, atol=1e-6), key
            mixed += int(not torch.equal(x, y))
        else:
            assert torch.equal(value, x), key
    assert mixed > 0
    assert a.read_bytes() == before  # inputs are never touched
    # Equal weights by default.
    assert script.main([str(a), str(b), "-o", str(tmp_path / "mean.safetensors")]) == 0
    mean = load_model(tmp_path / "mean.safetensors").state_dict()
    key = next(k for k, v in mean.items() if v.is_floating_point())
    assert torch.allclose(mean[key], (first.state_dict()[key] + second.state_dict()[key]) / 2)


def test_refuses_what_cannot_be_averaged(script, tmp_path, capsys):
    a, b = _checkpoints(tmp_path)
    other = save_weights(build_model("small", width=8, mask_context=1),
                         tmp_path / "other.safetensors")
    cases = [
        ([str(a), "-o", str(tmp_path / "x.safetensors")], "at least two"),
        ([str(a), str(b), "-o", str(a)], "must differ from every input"),
        ([str(a), str(b), "-o", str(tmp_path / "x.safetensors"), "--weights", "0.5", "0.6"],
         "summing to 1"),
        ([str(a), str(b), "-o", str(tmp_path / "x.safetensors"), "--weights", "1"],
         "one non-negative value per checkpoint"),
        ([str(a), str(other), "-o", str(tmp_path / "x.safetensors")], "config differs"),
    ]
    for argv, message in cases:
        assert script.main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
