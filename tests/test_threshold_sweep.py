from pathlib import Path

import numpy as np
import pytest
import torch
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


def _shaky_model(shake_bias: float):
    model = randomize_(build_model("small", width=8, mask_global_max=True, mask_shake_head=True),
                       seed=7).eval()
    for stage in model.encoders:
        if hasattr(stage, "mask_predictor"):
            head = stage.mask_predictor.shake_head[-1]
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.constant_(head.bias, shake_bias)
    return model


def test_a_shaken_verdict_marks_whole_frames_and_none_leaves_the_local_mask(tmp_path):
    local = np.zeros((48, 48), bool)
    local[:12] = True  # a quarter of the pixels
    data = _dataset(tmp_path, {"local": local, "global": np.ones((48, 48), bool)})
    script = _load()
    # shake probability sigmoid(2) = 0.88: flagged below that, not above
    result = script.shake_sweep(_shaky_model(2.0), data, thresholds=(0.5, 0.95))
    assert result["local"] == 1 and result["global"] == 1
    flagged, kept = result["rows"]
    assert flagged["local_flagged"] == flagged["global_flagged"] == 1
    assert flagged["local_iou"] == 0.25 and flagged["global_iou"] == 1.0
    assert kept["local_flagged"] == kept["global_flagged"] == 0
    # unflagged frames score their local mask, the same at any threshold
    low = script.shake_sweep(_shaky_model(-2.0), data, thresholds=(0.5,))["rows"][0]
    assert kept["local_iou"] == pytest.approx(low["local_iou"])
    assert kept["global_iou"] == pytest.approx(low["global_iou"])


def test_shake_mode_prints_its_table_and_refuses_a_model_without_shake_head(tmp_path, capsys):
    script = _load()
    local = np.zeros((32, 32), bool)
    local[:8] = True
    data = _dataset(tmp_path, {"0": local})
    weights = tmp_path / "plain.safetensors"
    from m2ae_core.weights import save_weights

    save_weights(build_model("small", width=8), weights)
    assert script.main([str(data), "--weights", str(weights), "--shake"]) == 2
    assert "no shake head" in capsys.readouterr().err
    save_weights(_shaky_model(0.0), weights)
    assert script.main([str(data), "--weights", str(weights), "--shake",
                        "--thresholds", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "1 local and 0 global samples" in out and "| 0.40 |" in out and "| 1 |" in out


def test_edges_mode_marks_frames_without_sharp_edges_whole(tmp_path, model, capsys):
    local = np.zeros((48, 48), bool)
    local[:12] = True
    data = _dataset(tmp_path, {"local": local, "global": np.ones((48, 48), bool)})
    # the shaken frame: flat grey, not one sharp edge; the local one stays random noise
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(data / "blur" / "global.png")
    script = _load()
    result = script.edges_sweep(model, data, thresholds=(0.0, 0.5), sharp_shares=(0.8,))
    off, on = result["rows"]
    assert off["local_flagged"] == off["global_flagged"] == 0
    assert on["sharp_share"] == 0.8 and on["local_flagged"] == 0 and on["global_flagged"] == 1
    assert on["global_iou"] == 1.0 and on["local_iou"] == off["local_iou"]
    from m2ae_core import analyze  # not flagged: the heads' own mask (IoU with all = marked share)
    grey = np.asarray(Image.open(data / "blur" / "global.png"))
    assert off["global_iou"] == pytest.approx(analyze(model, grey).mask.mean())
    weights = tmp_path / "w.safetensors"
    from m2ae_core.weights import save_weights

    save_weights(model, weights)
    assert script.main([str(data), "--weights", str(weights), "--shake-edges",
                        "--thresholds", "0.5", "--sharp-shares", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "mean IoU" in out and "| 0.70 | 0.50 |" in out
    with pytest.raises(SystemExit):
        script.main([str(data), "--shake-edges", "--sharp-shares", "1.5"])
