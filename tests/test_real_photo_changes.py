import numpy as np
import pytest
from PIL import Image

from conftest import load_script, randomize_
from m2ae_core import build_model, deblur


def test_changes_count_brightening_above_the_level():
    script = load_script("real_photo_changes")
    original = np.full((4, 5, 3), 100, np.uint8)
    restored = original.copy()
    restored[0, 0] = (113, 100, 90)  # one pixel 13 brighter in one channel
    restored[1, 1, 2] = 112  # exactly the level: not counted
    stats = script.changes(original, restored)
    assert stats["max_brightening"] == 13 and stats["bright_pixels"] == 1
    assert stats["mean_abs"] == (13 + 10 + 12) / original.size


def test_compare_reports_each_model_against_the_first(tmp_path):
    script = load_script("real_photo_changes")
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(photo)
    first = randomize_(build_model("small", width=8), seed=1).eval()
    second = randomize_(build_model("small", width=8), seed=2).eval()
    rows = script.compare({"a": first, "b": second}, [photo], save=tmp_path)
    assert [(r["photo"], r["model"]) for r in rows] == [("photo.png", "a"), ("photo.png", "b")]
    assert rows[0]["vs_first"] is None
    expected = np.asarray(Image.open(tmp_path / "photo.b.png")).astype(int) \
        - np.asarray(Image.open(tmp_path / "photo.a.png")).astype(int)
    assert rows[1]["vs_first"] == (np.abs(expected).mean(), np.abs(expected).max())
    restored = deblur(first, np.asarray(Image.open(photo))).image
    assert rows[0] == {"photo": "photo.png", "model": "a", "vs_first": None,
                       "processed": rows[0]["processed"],
                       **script.changes(np.asarray(Image.open(photo)), restored)}
    table = script.report(rows)
    assert table.count("| photo.png |") == 2


def test_main_needs_one_name_per_weights_file(tmp_path, capsys):
    script = load_script("real_photo_changes")
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path), "--weights", "a.safetensors", "--names", "x", "y"])
    assert stop.value.code == 2
    assert "one name per weights file" in capsys.readouterr().err
