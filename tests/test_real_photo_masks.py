import numpy as np
import pytest
from PIL import Image

from conftest import load_script, randomize_
from m2ae_core import analyze, build_model
from m2ae_core.cli import collect_inputs


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=6).eval()


def _photos(root):
    rng = np.random.default_rng(3)
    root.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not a photo")
    (root / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "sub" / "c.png")
    return root


def test_shares_are_the_mask_analyze_uses_for_each_photo_of_a_folder(tmp_path, model):
    script = load_script("real_photo_masks")
    folder = _photos(tmp_path / "photos")
    paths = collect_inputs([str(folder)])
    assert [p.name for p in paths] == ["a.png", "b.jpg"]  # no text file, no subfolder
    rows = script.marked_shares(model, paths)
    for (name, share), path in zip(rows, paths):
        expected = analyze(model, np.asarray(Image.open(path).convert("RGB"))).mask.mean()
        assert name == path.name and share == pytest.approx(expected)
    table = script.report([("a.png", 0.25), ("b.jpg", 1.0)])
    assert "| a.png | 25.0 % |" in table and "| b.jpg | 100.0 % |" in table


def test_main_reports_unreadable_photos_and_empty_folders(tmp_path, capsys):
    script = load_script("real_photo_masks")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert script.main([str(broken)]) == 2
    assert "broken.png" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert script.main([str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
