from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_script, randomize_
from m2ae_core import build_model


def _load():
    return load_script("threshold_sweep")


def _dataset(root: Path, masks: dict[str, np.ndarray]) -> Path:
    rng = np.random.default_rng(1)
    for folder in ("blur", "sharp", "mask"):
        (root / folder).mkdir(parents=True)
    for name, mask in masks.items():
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "blur" / f"{name}.png")
        Image.fromarray(image).save(root / "sharp" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "mask" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=6).eval()


def test_the_extremes_mark_everything_and_nothing_and_global_samples_are_skipped(tmp_path, model):
    local = np.zeros((48, 48), bool)
    local[:12] = True  # a quarter of the pixels
    data = _dataset(tmp_path, {"local": local, "global": np.ones((48, 48), bool)})
    result = _load().sweep(model, data, thresholds=(0.0, 0.5, 1.0))
    assert result["samples"] == 1 and result["true_fraction"] == 0.25
    low, mid, high = result["rows"]
    assert low["marked"] == 1.0 and low["iou"] == 0.25
    assert high["marked"] == 0.0 and high["iou"] == 0.0
    assert low["marked"] >= mid["marked"] >= high["marked"]


def test_main_prints_a_table_and_refuses_data_without_local_samples(tmp_path, capsys):
    script = _load()
    local = np.zeros((32, 32), bool)
    local[:8] = True
    assert script.main([str(_dataset(tmp_path / "a", {"0": local})), "--thresholds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "1 local samples, 25.0 % of pixels truly blurred" in out and "| 0.50 |" in out
    only_global = _dataset(tmp_path / "b", {"0": np.ones((32, 32), bool)})
    assert script.main([str(only_global)]) == 2
    assert "no local samples" in capsys.readouterr().err
