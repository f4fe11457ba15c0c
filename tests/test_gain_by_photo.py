import json

import numpy as np
from PIL import Image

from conftest import load_script


def _load():
    return load_script("gain_by_photo")


def _row(name, kind, restored, blurred):
    return {"name": name, "kind": kind, "weighted_psnr": restored,
            "input_weighted_psnr": blurred}


def test_gains_are_credited_to_every_object_photo_of_local_samples(tmp_path, capsys):
    script = _load()
    manifest = {"samples": [{"name": "0", "objects": ["a.jpg"]},
                            {"name": "1", "objects": ["a.jpg", "b.jpg"]},
                            {"name": "2", "objects": []}]}
    results = {"samples": [_row("0", "local", 22.0, 21.0), _row("1", "local", 23.0, 20.0),
                           _row("2", "global", 30.0, 20.0)]}
    gains = script.gains_by_object_photo(manifest, results)
    assert gains == {"a.jpg": [1.0, 3.0], "b.jpg": [3.0]}  # the global sample counts nowhere
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    (tmp_path / "r.json").write_text(json.dumps(results))
    assert script.main([str(tmp_path / "m.json"), str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| a.jpg | 2 | +2.00 |" in out and "| b.jpg | 1 | +3.00 |" in out


def test_mask_texture_averages_neighbour_steps_inside_the_mask():
    script = _load()
    stripes = np.zeros((4, 4), np.float32)
    stripes[:, 1::2] = 0.5  # every horizontal step is 0.5, every vertical one 0
    everywhere = np.ones((4, 4), bool)
    assert script.mask_texture(stripes, everywhere) == 0.5
    assert script.mask_texture(np.zeros((4, 4), np.float32), everywhere) == 0.0
    left_only = np.zeros((4, 4), bool)
    left_only[:, 0] = True
    assert script.mask_texture(stripes, left_only) == 0.5


def test_texture_is_printed_for_a_dataset_with_its_images(tmp_path, capsys):
    script = _load()
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, 1::2] = 255  # every horizontal step is 1.0 in grey, every vertical one 0
    for folder in ("blur", "sharp", "mask"):
        (tmp_path / folder).mkdir()
    Image.fromarray(stripes).save(tmp_path / "blur" / "0.png")
    Image.fromarray(stripes).save(tmp_path / "sharp" / "0.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "mask" / "0.png")
    manifest = {"samples": [{"name": "0", "is_global": False, "objects": ["a.jpg"]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "r.json").write_text(json.dumps({"samples": [_row("0", "local", 21.0, 20.0)]}))
    assert script.main([str(tmp_path / "manifest.json"), str(tmp_path / "r.json")]) == 0
    assert "mean texture in the blurred regions: 1.0000" in capsys.readouterr().out
