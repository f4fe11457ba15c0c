import numpy as np
from PIL import Image

from conftest import load_script, randomize_
from m2ae_core import build_model, save_weights


def test_compares_each_dtype_with_the_first(tmp_path, capsys):
    script = load_script("dtype_speed")
    weights = tmp_path / "tiny.safetensors"
    save_weights(randomize_(build_model("small", width=8), seed=2), weights)
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(photo)

    assert script.main([str(photo), "--size", "32", "--dtypes", "fp32", "bf16", "fp32",
                        "--weights", str(weights), "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{photo}: 32x32 crop")
    full, half, again = lines[1:]
    assert "inf dB" in full and "mask agreement 100.00%" in full
    assert "inf dB" not in half  # bf16 rounds: a finite distance from the fp32 result
    assert "inf dB" in again  # fp32 twice is deterministic
