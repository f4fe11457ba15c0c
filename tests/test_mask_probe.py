from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_script


def _bench(root: Path) -> Path:
    """Two local samples (a quarter blurred) and one global sample."""
    rng = np.random.default_rng(2)
    for folder in ("blur", "sharp", "mask"):
        (root / folder).mkdir(parents=True)
    local = np.zeros((40, 40), bool)
    local[:10] = True
    for name, mask in (("0", local), ("1", local), ("2", np.ones((40, 40), bool))):
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "blur" / f"{name}.png")
        Image.fromarray(image).save(root / "sharp" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "mask" / f"{name}.png")
    return root


def _biased(net, blurred: bool):
    """Make the net say 'blurred' (or 'sharp') everywhere, whatever the image."""
    last = net.head.mlp_out[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([5.0, -5.0] if blurred else [-5.0, 5.0]))
    return net


def test_probe_mask_has_the_image_size_and_scores_follow_the_mask(tmp_path):
    script = load_script("mask_probe")
    net = script.ProbeNet(channels=8, context_units=1)
    image = torch.rand(1, 3, 37, 41)  # not a multiple of the stride
    assert script.probe_mask(_biased(net, True), image).shape == (37, 41)
    assert script.probe_mask(net, image).all()
    bench = _bench(tmp_path / "bench")
    everything = script.bench_scores(net, bench)
    assert everything["local_samples"] == 2 and everything["global_samples"] == 1
    assert everything["local_iou"] == pytest.approx(0.25)
    assert everything["local_marked"] == 1.0 and everything["global_marked"] == 1.0
    nothing = script.bench_scores(_biased(net, False), bench)
    assert nothing["local_iou"] == 0.0 and nothing["global_marked"] == 0.0
    assert net.training  # scoring leaves the net in training mode


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = rng.random((12, 16, 3)).repeat(8, 0).repeat(8, 1)
        Image.fromarray((smooth * 255).astype(np.uint8)).save(root / f"photo{i}.png")
    return root


def test_a_short_run_trains_and_reports(photos, tmp_path):
    script = load_script("mask_probe")
    bench = _bench(tmp_path / "bench")
    out = tmp_path / "out"
    assert script.main(["--photos", str(photos), "--bench", str(bench), "--steps", "2",
                        "--eval-at", "1", "2", "--crop", "48", "--out", str(out),
                        "--save", str(out / "probe.safetensors"), "--channels", "16"]) == 0
    text = (out / "results.md").read_text()
    from safetensors.torch import load_file

    saved = script.ProbeNet(16)
    saved.load_state_dict(load_file(out / "probe.safetensors"))
    assert not torch.equal(saved.head.max_proj.weight, torch.zeros_like(saved.head.max_proj.weight))
    assert "| 1 |" in text and "| 2 |" in text
    assert script.main(["--photos", str(photos), "--bench", str(tmp_path / "none"),
                        "--steps", "1", "--crop", "48"]) == 2
    for bad in (["--eval-at", "3"], ["--channels", "6"]):
        with pytest.raises(SystemExit):
            script.main(["--photos", str(photos), "--bench", str(bench), "--steps", "2", *bad])
