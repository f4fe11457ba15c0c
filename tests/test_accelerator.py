"""The library on an accelerator: the pruned path, precision, tiling, the CLI and training.

Runs on ``$M2AE_TEST_DEVICE`` (default ``cuda``) and is skipped where that device is absent:
the rest of the suite covers the same code on the CPU. ``M2AE_TEST_DEVICE=cpu`` runs these
checks on the CPU too, which is how they were written and checked without a GPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize_
from m2ae_core import build_model, deblur, load_model
from m2ae_core.benchmark.workload import blob_mask

DEVICE = torch.device(os.environ.get("M2AE_TEST_DEVICE", "cuda"))
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "m2ae_core" / "examples" / "coffee_9.png"


def _device_present(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    backend = getattr(torch, device.type, None)
    return bool(backend is not None and backend.is_available())


pytestmark = pytest.mark.skipif(not _device_present(DEVICE),
                                reason=f"needs the device {DEVICE} (set M2AE_TEST_DEVICE)")


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 would round the dense convolutions and the pruned matmuls differently."""
    if DEVICE.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _photo(height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(EXAMPLE) as image:
        return np.asarray(image.convert("RGB"))[:height, :width]


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 0.996, 1.0])
def test_pruned_paper_model_equals_dense(fraction):
    """Every partial mask runs the banded blocks with a stage workspace; a full one does not."""
    model = randomize_(build_model("paper"), seed=4).eval().to(DEVICE)
    image = torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    mask = blob_mask(384, 512, fraction, seed=2).to(DEVICE)
    with torch.no_grad():
        pruned = model(image, mask=mask, pruned=True).image
        dense = model(image, mask=mask, pruned=False).image
    assert pruned.device.type == DEVICE.type
    assert torch.isfinite(pruned).all()
    assert (pruned - dense).abs().max().item() <= 1e-4


def test_default_model_restores_as_on_the_cpu():
    if DEVICE.type == "cpu":
        pytest.skip("compares another device with the CPU")
    image = _photo(256, 320)
    on_cpu = deblur(load_model(device="cpu"), image).image.astype(np.float64)
    on_device = deblur(load_model(device=DEVICE), image)
    assert on_device.stats["fraction_processed"] > 0
    diff = np.abs(on_device.image.astype(np.float64) - on_cpu)
    # uint8 outputs: rounding flips, and a mask pixel at the threshold may flip, nothing more
    assert diff.mean() < 0.05 and np.quantile(diff, 0.999) <= 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_restores_close_to_float32(dtype):
    image = _photo(256, 320)
    full = deblur(load_model(device=DEVICE), image).image.astype(np.float64)
    half = deblur(load_model(device=DEVICE, dtype=dtype), image).image.astype(np.float64)
    assert np.isfinite(half).all()
    assert np.abs(full - half).mean() < 1.0  # in 0..255: rounding, not another result


def test_tiled_restoration_matches_untiled():
    image = _photo(512, 512)
    model = load_model(device=DEVICE)
    whole = deblur(model, image, tile=0).image.astype(np.float64)
    tiled = deblur(model, image, tile=256)
    assert tiled.stats["tiles"] > 1
    mse = np.mean((whole - tiled.image.astype(np.float64)) ** 2)
    assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-12)) >= 40


def test_cli_deblurs_on_the_device(tmp_path):
    out = tmp_path / "restored.png"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "m2ae_core.cli", "deblur", str(EXAMPLE), "-o",
                          str(out), "--device", str(DEVICE)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    from PIL import Image

    with Image.open(out) as restored, Image.open(EXAMPLE) as original:
        assert restored.size == original.size


def test_training_steps_run_on_the_device(tmp_path):
    import json

    from PIL import Image

    from m2ae_core.training.config import load_config
    from m2ae_core.training.trainer import train

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(
            photos / f"photo{i}.png")
    config = {"steps": 4, "batch_size": 2, "log_every": 1, "val_every": 4, "threads": 1,
              "checkpoint_every": 4, "out_dir": str(tmp_path / "run"), "progress": False,
              "device": str(DEVICE), "amp": "bf16",
              "model": {"preset": "small", "overrides": {"width": 8}},
              "data": {"photos": str(photos), "crop": 64, "val_samples": 1, "val_size": 64}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    train(load_config(path))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(r["total"]) for r in steps)
    assert (tmp_path / "run" / "final.safetensors").is_file()
