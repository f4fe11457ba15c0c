"""The camera-shake test from sharp edges (m2ae_core/shake.py) and how the model uses it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from m2ae_core import build_model, deblur, load_model
from m2ae_core.errors import ConfigError
from m2ae_core.shake import at_working_scale, looks_shaken, sharp_edge_counts, sharp_edge_share
from m2ae_core.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]


def step_edge(height=20, width=30, at=15) -> torch.Tensor:
    image = torch.zeros(1, 1, height, width)
    image[..., at:] = 1.0
    return image


def sharp_discs(size=96, seed=0) -> torch.Tensor:
    """Grey image with a few hard-edged discs: sharp edges in every direction."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.full((1, 3, size, size), 0.3)
    for _ in range(6):
        cy, cx = torch.randint(10, size - 10, (2,), generator=g).tolist()
        radius = int(torch.randint(5, 15, (1,), generator=g))
        image[..., (ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2] = float(torch.rand(1, generator=g))
    return image


def motion_blur(image: torch.Tensor, length: int, horizontal: bool = True) -> torch.Tensor:
    """Box blur along one axis (a linear camera shake), replicate-padded."""
    c = image.shape[1]
    kernel = torch.full((c, 1, 1, length), 1.0 / length)
    pad = (length // 2, length - 1 - length // 2, 0, 0)
    if not horizontal:
        kernel = kernel.transpose(2, 3)
        pad = (0, 0, length // 2, length - 1 - length // 2)
    return F.conv2d(F.pad(image, pad, mode="replicate"), kernel, groups=c)


def test_step_edge_counts_two_sharp_pixels_per_row_in_each_crossing_direction():
    # a vertical step: along x (and both diagonals) the rise over 4 px is 1 at four pixels
    # of each row, and the one-pixel step is the whole rise at the two beside the edge; along
    # y nothing rises. The interior skips 2 px on each side: 16 of 20 rows.
    assert sharp_edge_counts(step_edge()).tolist() == [[32, 0, 32, 32]]


def test_a_ramp_wider_than_four_pixels_is_an_edge_but_not_a_sharp_one():
    image = torch.zeros(1, 1, 20, 40)
    image[..., 24:] = 1.0
    image[..., 16:24] = torch.arange(1, 9) / 9.0  # rises over 9 px: 1/9 per pixel
    assert sharp_edge_counts(image).sum() == 0
    assert sharp_edge_counts(image, sharp_share=0.2)[0, 0] > 0  # it is an edge, just soft


def test_sharp_frames_pass_and_motion_blur_in_any_direction_fails():
    sharp = sharp_discs()
    assert sharp_edge_share(sharp).item() > 5.0
    for horizontal in (True, False):
        blurred = motion_blur(sharp, 9, horizontal)
        assert sharp_edge_share(blurred).item() == 0.0
    flat = torch.full((1, 3, 64, 64), 0.5)
    assert sharp_edge_share(flat).item() == 0.0


def test_a_local_blur_leaves_the_background_sharp():
    sharp = sharp_discs()
    local = sharp.clone()
    local[..., :48, :] = motion_blur(sharp, 9)[..., :48, :]  # the top half moved
    assert sharp_edge_share(local).item() > 1.0


def test_looks_shaken_is_per_frame_and_off_at_zero():
    batch = torch.cat([sharp_discs(), motion_blur(sharp_discs(), 9)])
    assert looks_shaken(batch, 0.5).tolist() == [False, True]
    assert looks_shaken(batch, 0.0).tolist() == [False, False]
    with pytest.raises(ValueError, match="batch"):
        sharp_edge_counts(torch.zeros(3, 8, 8))


def test_big_images_are_judged_at_the_working_scale():
    # a sharp scene photographed at 4x the pixels, its edges spread over 3 of them: soft per
    # pixel, sharp at a quarter size
    big = F.interpolate(sharp_discs(), scale_factor=4, mode="nearest")
    big = F.avg_pool2d(F.pad(big, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert sharp_edge_share(big).item() < 0.5  # at its own scale it would look shaken
    assert not looks_shaken(big, 0.5, working_side=96)[0]
    assert looks_shaken(big, 0.5, working_side=384)[0]  # not brought down: judged as is
    assert at_working_scale(big, 96).shape[-2:] == (96, 96)
    small = sharp_discs()
    assert at_working_scale(small, 1024) is small  # never upscaled


def test_config_validates_the_threshold():
    assert build_model("small", shake_edges_below=0.5).config.shake_edges_below == 0.5
    with pytest.raises(ConfigError, match="shake_edges_below"):
        build_model("small", shake_edges_below=-1)
    with pytest.raises(ConfigError, match="M2AS"):
        build_model("nafnet-small", shake_edges_below=0.5)
    with pytest.raises(ConfigError, match="choose one"):
        build_model("small", mask_global_max=True, mask_shake_head=True, shake_edges_below=0.5)
    with pytest.raises(ConfigError, match="number"):
        build_model("small", shake_edges_below="often")


def gated_model(below=0.5):
    torch.manual_seed(0)
    return build_model("small", mask_context=1, shake_edges_below=below).eval()


def test_a_shaken_frame_is_processed_whole_and_a_sharp_one_by_its_heads():
    model = gated_model()
    shaken = motion_blur(sharp_discs(), 9)
    with torch.no_grad():
        out = model(shaken)
        assert all(bool(s.mask.all()) and bool((s.probability == 1).all()) for s in out.stages)
        heads_only = build_model("small", mask_context=1).eval()
        heads_only.load_state_dict(model.state_dict())
        plain = heads_only(sharp_discs())
        gated = model(sharp_discs())  # not shaken: exactly what the heads decide
        for a, b in zip(plain.stages, gated.stages):
            assert torch.equal(a.probability, b.probability)
        torch.testing.assert_close(plain.image, gated.image)
        # the caller's decision wins over the model's own test
        forced = model(sharp_discs(), shaken=torch.tensor([True]))
        assert all(bool(s.mask.all()) for s in forced.stages)
        assert model.analyze(shaken).mask.all()


def test_a_given_mask_wins_and_training_masks_follow_the_test():
    model = gated_model()
    shaken = motion_blur(sharp_discs(), 9)
    user = torch.zeros(1, 1, 96, 96, dtype=torch.bool)
    user[..., 40:60, 40:60] = True
    with torch.no_grad():
        out = model(shaken, mask=user)
    assert not out.stages[0].mask.all()  # the given mask is used as it is
    # training: the restoration sees the whole-frame mask inference would use, while the
    # logits the mask loss reads stay the heads' own
    model.train()
    batch = torch.cat([shaken, sharp_discs()])
    out = model(batch, pruned=False)
    for stage in out.stages:
        assert stage.mask[0].min() == 1.0 and stage.mask[1].min() == 0.0
        assert not (stage.probability[0] == 1).all()
    heads_only = build_model("small", mask_context=1).train()
    heads_only.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    plain = heads_only(batch, pruned=False)
    torch.manual_seed(1)
    gated = model(batch, pruned=False)
    for a, b in zip(plain.stages, gated.stages):
        assert torch.equal(a.logits, b.logits)
        assert torch.equal(a.mask[1], b.mask[1])  # the unshaken frame: the heads' sample


def test_tiles_get_the_whole_images_decision():
    # left half: smooth (alone it looks shaken); right half: sharp discs. With threshold
    # 0.999 only a shaken frame's probability (exactly 1) marks a pixel.
    model = gated_model(below=0.5)
    image = torch.full((1, 3, 96, 192), 0.4)
    image[..., 96:] = sharp_discs()
    assert not looks_shaken(image, 0.5)[0]
    assert looks_shaken(image[..., :96], 0.5)[0]
    whole = deblur(model, image, threshold=0.999, tile=0)
    tiled = deblur(model, image, threshold=0.999, tile=96)
    assert whole.stats["camera_shake"] is False and tiled.stats["camera_shake"] is False
    assert tiled.stats["tiles"] > 1
    assert not tiled.mask[:, :48].any()
    shaken = deblur(model, motion_blur(image, 9), threshold=0.999, tile=96)
    assert shaken.stats["camera_shake"] is True and shaken.mask.all()


def test_the_threshold_survives_save_and_load(tmp_path):
    path = save_weights(gated_model(0.75), tmp_path / "gated.safetensors")
    assert load_model(path).config.shake_edges_below == 0.75


def load_set_config():
    spec = importlib.util.spec_from_file_location("set_config", ROOT / "scripts" / "set_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_config_puts_the_test_on_trained_weights(tmp_path, capsys):
    set_config = load_set_config()
    source = save_weights(build_model("small", mask_context=1), tmp_path / "heads.safetensors")
    before = source.read_bytes()
    out = tmp_path / "gated.safetensors"
    assert set_config.main([str(source), str(out), "--set", "shake_edges_below=0.5"]) == 0
    gated, plain = load_model(out), load_model(source)
    assert gated.config.shake_edges_below == 0.5 and plain.config.shake_edges_below == 0.0
    for (name, a), (_, b) in zip(plain.state_dict().items(), gated.state_dict().items()):
        assert torch.equal(a, b), name
    assert source.read_bytes() == before
    named = tmp_path / "named.safetensors"
    assert set_config.main([str(source), str(named), "--name", "small-edges"]) == 0
    assert load_model(named).config.name == "small-edges"
    assert set_config.main([str(source), str(tmp_path / "x.safetensors"), "--set", "width=8"]) == 2
    assert "cannot be set on trained weights" in capsys.readouterr().err
    assert set_config.main([str(source), str(source), "--set", "shake_edges_below=1"]) == 2
    assert "must differ from WEIGHTS" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_the_caller_can_turn_the_test_off():
    model = gated_model()
    shaken = motion_blur(torch.cat([sharp_discs(), sharp_discs()], 3), 9)
    on = deblur(model, shaken, threshold=0.999, tile=96)
    off = deblur(model, shaken, threshold=0.999, tile=96, shake_test=False)
    assert on.stats["camera_shake"] is True and on.mask.all()
    assert off.stats["camera_shake"] is False and not off.mask.any()
    from m2ae_core.inference import analyze
    assert not analyze(model, shaken, threshold=0.999, shake_test=False).mask.any()
    # a model without the test reports nothing about it
    assert "camera_shake" not in deblur(build_model("small").eval(), shaken).stats


def test_cli_says_when_a_frame_was_restored_whole(tmp_path, capsys):
    from m2ae_core.cli import main
    from m2ae_core import imageio
    weights = save_weights(gated_model(), tmp_path / "gated.safetensors")
    picture = motion_blur(sharp_discs(), 9)[0].permute(1, 2, 0).numpy()
    imageio.save_image((picture * 255).round().astype("uint8"), tmp_path / "in.png")
    args = ["deblur", str(tmp_path / "in.png"), "--weights", str(weights)]
    assert main(args + ["-o", str(tmp_path / "a.png")]) == 0
    assert "camera shake: whole frame restored" in capsys.readouterr().out
    assert main(args + ["-o", str(tmp_path / "b.png"), "--no-shake-test"]) == 0
    assert "camera shake" not in capsys.readouterr().out
