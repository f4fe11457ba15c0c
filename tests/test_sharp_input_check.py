import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_script, randomize_
from m2ae_core import build_model, save_weights


def _load():
    return load_script("sharp_input_check")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharp-inputs")
    rng = np.random.default_rng(4)
    for folder in ("blur", "sharp", "mask"):
        (root / folder).mkdir()
    for name in ("0", "1"):
        image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "blur" / f"{name}.png")
        Image.fromarray(image).save(root / "sharp" / f"{name}.png")
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "mask" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=5).eval()


def test_a_model_that_alters_sharp_content_is_caught_and_preserve_sharp_alters_less(dataset, model):
    script = _load()
    plain = script.check_sharp_inputs(model, dataset)
    kept = script.check_sharp_inputs(model, dataset, preserve_sharp=True)
    assert [r["name"] for r in plain] == ["0", "1"]
    for a, b in zip(plain, kept):
        assert a["psnr"] < script.IDENTICAL_DB and 0.0 <= a["marked"] <= 1.0
        assert b["psnr"] > a["psnr"] and b["marked"] == a["marked"]
    assert len(script.check_sharp_inputs(model, dataset, limit=1)) == 1
    averaged = script.check_sharp_inputs(model, dataset, ensemble=4)
    assert [r["psnr"] for r in averaged] != [r["psnr"] for r in plain]


def test_report_prints_one_row_per_sample_and_the_means(dataset, model, tmp_path, capsys):
    script = _load()
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    assert script.main([str(dataset), "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| 0 |") == 1 and "| 1 |" in out and "**mean of 2**" in out
    rows = [{"name": "a", "psnr": 30.0, "detail": 0.8, "marked": 0.5},
            {"name": "b", "psnr": 40.0, "detail": 1.0, "marked": 0.0}]
    assert "| **mean of 2** | **35.00** | **0.900** | **25.0 %** |" in script.report(rows)


def test_detail_is_the_mean_neighbour_step():
    script = _load()
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., 1::2] = 0.5  # every horizontal step 0.5, every vertical one 0
    assert script.detail(stripes) == 0.5
    assert script.detail(torch.full((1, 3, 4, 4), 0.3)) == 0.0


def test_a_missing_dataset_is_reported(tmp_path, capsys):
    assert _load().main([str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
