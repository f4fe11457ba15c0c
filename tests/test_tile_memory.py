"""scripts/tile_memory.py: the calibration behind automatic tiling measures real growth."""
import json

from conftest import load_script


def test_peak_memory_per_pixel_of_an_untiled_run(tmp_path, capsys):
    script = load_script("tile_memory")
    out = tmp_path / "rows.json"
    assert script.main(["--models", "small", "--sizes", "384x384", "1024x768",
                        "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    small, large = row["runs"]
    assert row["model"] == "small" and row["width"] == 16
    assert small["size"] == [384, 384] and large["size"] == [1024, 768]
    # the forward grows the peak well beyond what loading the model reached
    assert large["peak_after"] > large["peak_before"] + 50 * 2**20
    # a width-16 forward holds a few float maps of its width per pixel; the tiling estimate
    # (PEAK_MAPS) must stay above what is measured
    from m2ae_core.tiling import PEAK_MAPS

    assert 2 < row["maps_of_width"] < PEAK_MAPS
    assert "float maps of the width" in capsys.readouterr().out
