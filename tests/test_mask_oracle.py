"""The visible-change oracle behind the mask-IoU ceiling (scripts/mask_oracle.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_script


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two local samples and one global one. In "seen" the blur changes exactly the masked
    square; in "hidden" the mask also covers an unchanged square (a smooth moving object)."""
    root = tmp_path_factory.mktemp("oracle")
    for folder in ("blur", "sharp", "mask"):
        (root / folder).mkdir()
    rng = np.random.default_rng(2)
    records = []
    for name, is_global in (("seen", False), ("hidden", False), ("shake", True)):
        sharp = rng.integers(60, 190, (40, 40, 3), dtype=np.uint8)
        blur, mask = sharp.copy(), np.zeros((40, 40), np.uint8)
        blur[5:15, 5:15] = np.clip(blur[5:15, 5:15].astype(int) + 50, 0, 255)
        mask[5:15, 5:15] = 255
        if name == "hidden":
            mask[25:35, 25:35] = 255
        if is_global:
            mask[:] = 255
        Image.fromarray(sharp).save(root / "sharp" / f"{name}.png")
        Image.fromarray(blur).save(root / "blur" / f"{name}.png")
        Image.fromarray(mask).save(root / "mask" / f"{name}.png")
        records.append({"name": name, "is_global": is_global})
    (root / "manifest.json").write_text(json.dumps({"samples": records}))
    return root


def test_visible_change_marks_differences_and_dilates():
    oracle = load_script("mask_oracle")
    sharp = torch.zeros(1, 3, 20, 20)
    blur = sharp.clone()
    blur[0, 1, 10, 10] = 0.1  # 25.5 of 255 in one channel
    assert oracle.visible_change(blur, sharp, window=1, threshold=20, dilation=0).sum() == 1
    assert oracle.visible_change(blur, sharp, window=1, threshold=30, dilation=0).sum() == 0
    assert oracle.visible_change(blur, sharp, window=1, threshold=20, dilation=2).sum() == 25
    # a window averages the difference away: 25.5 / 9 is below 4
    assert oracle.visible_change(blur, sharp, window=3, threshold=4, dilation=0).sum() == 0


def test_grid_scores_local_samples_only_and_misses_invisible_motion(dataset):
    oracle = load_script("mask_oracle")
    rows, samples = oracle.oracle_grid(dataset, windows=(1,), thresholds=(10,),
                                       dilations=(0,))
    assert samples == 2  # the global sample is left out
    # "seen" is found exactly (IoU 1), "hidden" only half (its second square never changes)
    assert rows == [{"window": 1, "threshold": 10, "dilation": 0, "iou": pytest.approx(0.75)}]
    rows, _ = oracle.oracle_grid(dataset, limit=1, windows=(1,), thresholds=(10, 80),
                                 dilations=(0, 3))
    by_cell = {(r["threshold"], r["dilation"]): r["iou"] for r in rows}
    assert by_cell[10, 0] == 1.0 and by_cell[80, 0] == 0.0 and 0 < by_cell[10, 3] < 1


def test_main_reports_the_best_cell_and_refuses_a_folder_without_local_samples(
        dataset, tmp_path, capsys):
    oracle = load_script("mask_oracle")
    assert oracle.main([str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "Best over 2 local samples: IoU 0.750 (window 1, threshold 4, dilation 0)" in out
    assert out.count("**0.750**") == 1
    empty = tmp_path / "pairs"
    empty.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / "a_blur.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / "a_sharp.png")
    assert oracle.main([str(empty)]) == 2
    assert "no local samples with a mask" in capsys.readouterr().err
