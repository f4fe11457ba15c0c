"""Image-wide pooling for tiled inference: recorded means, fixed means, and the tiled result."""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import randomize_
from m2ae_core import build_model, deblur
from m2ae_core.global_context import ContextRecorder, fixed_context, pooling_sites
from m2ae_core.layers import GlobalMax, GlobalMean
from m2ae_core.tiling import DEFAULT_OVERLAP, blend_weight, tile_grid


class PointwiseThenPool(nn.Module):
    """A pooling site whose input is a per-pixel function of the image: its image-wide mean is
    known exactly, whatever the tiling."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = GlobalMean()

    def forward(self, x):
        return self.pool(x * x + 1)


class PointwiseThenMax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = GlobalMax()

    def forward(self, x):
        return self.pool(x * x - 1)


def shares(tiles, h, w):
    total = torch.zeros(h, w)
    for t in tiles:
        total[t.slices] += blend_weight(t, h, w, DEFAULT_OVERLAP)
    return [blend_weight(t, h, w, DEFAULT_OVERLAP) / total[t.slices] for t in tiles]


def test_global_mean_observes_and_can_be_fixed():
    site = GlobalMean()
    x = torch.rand(2, 3, 5, 7)
    seen = []
    site.observer = lambda s, features: seen.append((s, features))
    assert torch.allclose(site(x), x.mean(dim=(2, 3), keepdim=True))
    assert seen[0][0] is site and seen[0][1] is x
    site.observer = None
    site.fixed = torch.full((2, 3, 1, 1), 0.25)
    assert torch.equal(site(x), site.fixed)
    with pytest.raises(ValueError, match="channels"):
        site(torch.rand(2, 4, 5, 7))


@pytest.mark.parametrize("h, w, tile", [(150, 230, 96), (64, 300, 128)])
def test_recorded_mean_over_tiles_equals_the_image_mean(h, w, tile):
    torch.manual_seed(0)
    net = PointwiseThenPool()
    # a left-to-right ramp under the noise: each tile's mean differs from the image's by far
    # more than the check below (on noise alone a tile's mean came within 1e-3 by chance)
    image = torch.rand(2, 3, h, w) + torch.linspace(0, 2, w)
    tiles = tile_grid(h, w, tile)
    assert len(tiles) > 2
    recorder = ContextRecorder(net, pad_multiple=1)
    for t, share in zip(tiles, shares(tiles, h, w)):
        with recorder.tile(share):
            local = net(image[:, :, t.slices[0], t.slices[1]])
        assert not torch.allclose(local, net(image), atol=1e-3)  # a tile alone is off
    means = recorder.pooled()
    assert torch.allclose(means[net.pool], net(image), atol=1e-5)
    assert net.pool.observer is None  # observers removed after each tile


def test_recorded_max_over_tiles_equals_the_image_max():
    h, w = 150, 230
    net = PointwiseThenMax()
    image = torch.rand(2, 3, h, w)
    image[1, 2, 149, 229] = 3.0  # the peak sits in the corner of the last tile
    tiles = tile_grid(h, w, 96)
    recorder = ContextRecorder(net, pad_multiple=1)
    for t, share in zip(tiles, shares(tiles, h, w)):
        with recorder.tile(share):
            net(image[:, :, t.slices[0], t.slices[1]])
    assert torch.equal(recorder.pooled()[net.pool], net(image))
    assert recorder.pooled()[net.pool][1, 2].item() == 8.0


def test_recorded_max_ignores_padding_and_tile_edges():
    net = PointwiseThenMax()
    padded = torch.full((1, 1, 32, 48), 5.0)  # padding far above the image's values
    padded[..., :30, :40] = torch.rand(1, 1, 30, 40)
    share = torch.ones(30, 40)
    share[:, -2:] = 0.1  # a tile edge that another tile covers better
    padded[..., 5, 39] = 4.0
    recorder = ContextRecorder(net, pad_multiple=16)
    with recorder.tile(share):
        net(padded)
    expected = net(padded[..., :30, :38])
    assert torch.equal(recorder.pooled()[net.pool], expected) and expected.item() < 0


def test_recorded_mean_ignores_the_padding_the_network_adds():
    net = PointwiseThenPool()
    padded = torch.zeros(1, 1, 32, 48)
    padded[..., :30, :40] = torch.rand(1, 1, 30, 40)
    recorder = ContextRecorder(net, pad_multiple=16)
    with recorder.tile(torch.ones(30, 40)):
        net(padded)
    assert torch.allclose(recorder.pooled()[net.pool], net(padded[..., :30, :40]), atol=1e-6)


def test_fixed_context_is_undone_even_on_error():
    model = build_model("small", width=8)
    sites = pooling_sites(model)
    assert len(sites) == sum(1 for name, _ in model.named_modules() if name.endswith("sca")) + \
        len(model.config.m2as_stages)  # every channel attention + one mask predictor per stage
    with pytest.raises(RuntimeError):
        with fixed_context({site: torch.zeros(1, 1, 1, 1) for site in sites}):
            raise RuntimeError
    assert all(site.fixed is None for site in sites)


def psnr(a, b):
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))


def test_image_context_brings_tiles_close_to_the_untiled_result():
    # Random non-zero beta/gamma: channel attention matters, so tile-local pooling shows.
    model = randomize_(build_model("small", width=8), seed=5).eval()
    image = torch.rand(1, 3, 192, 256)
    mask = torch.zeros(1, 1, 192, 256, dtype=torch.bool)
    mask[..., 40:120, 60:200] = True
    whole = deblur(model, image, mask=mask, tile=0)
    steps = []
    per_tile = deblur(model, image, mask=mask, tile=128, tile_context="tile")
    shared = deblur(model, image, mask=mask, tile=128, tile_context="image",
                    progress=lambda done, total: steps.append((done, total)))
    assert shared.stats["tiles"] == per_tile.stats["tiles"] == 6
    assert shared.stats["tile_context"] == "image"
    assert steps[-1] == (12, 12)  # two passes over six tiles
    gain = psnr(shared.image, whole.image) - psnr(per_tile.image, whole.image)
    assert gain > 3, gain
    assert all(site.fixed is None and site.observer is None for site in pooling_sites(model))


@pytest.mark.parametrize("heads", [{}, {"mask_global_max": True}])
def test_analyze_with_image_context_and_bad_context_name(heads):
    # with a global max, the tiles also share the image's max
    model = randomize_(build_model("small", width=8, **heads), seed=5).eval()
    # not stationary (a noise image would give every tile the image's statistics): a ramp on
    # the top half, black below
    ramp = np.linspace(0, 255, 200)[None, :, None] * np.ones((160, 1, 3))
    image = (ramp * (np.arange(160)[:, None, None] < 80)).astype(np.uint8)
    from m2ae_core import analyze

    whole = analyze(model, image, tile=0)
    shared = analyze(model, image, tile=96, tile_context="image")
    per_tile = analyze(model, image, tile=96, tile_context="tile")
    err_shared = np.abs(shared.probability - whole.probability).mean()
    err_tile = np.abs(per_tile.probability - whole.probability).mean()
    assert err_shared < 0.5 * err_tile, (err_shared, err_tile)
    with pytest.raises(ValueError, match="tile_context"):
        deblur(model, image, tile=96, tile_context="whole")


def test_macs_count_both_passes():
    model = randomize_(build_model("small", width=8), seed=5).eval()
    image = torch.rand(1, 3, 192, 256)
    mask = torch.zeros(1, 1, 192, 256, dtype=torch.bool)
    mask[..., 40:120, 60:200] = True
    one = deblur(model, image, mask=mask, tile=128, tile_context="tile").stats
    two = deblur(model, image, mask=mask, tile=128, tile_context="image").stats
    assert two["dense_macs"] == 2 * one["dense_macs"]
    assert two["macs"] == 2 * one["macs"]  # the user mask fixes the pruned pixels of both passes


def test_every_tile_gets_the_whole_images_shake_verdict():
    model = randomize_(build_model("small", width=8, mask_global_max=True, mask_shake_head=True),
                       seed=5).eval()
    ramp = np.linspace(0, 255, 200)[None, :, None] * np.ones((160, 1, 3))
    image = (ramp * (np.arange(160)[:, None, None] < 80)).astype(np.uint8)
    predictor = next(s.mask_predictor for s in model.encoders if hasattr(s, "mask_predictor"))
    seen = []
    handle = predictor.register_forward_hook(lambda m, i, out: seen.append(out[1].flatten()))
    from m2ae_core import analyze

    try:
        analyze(model, image, tile=0)
        whole = seen[-1]
        seen.clear()
        analyze(model, image, tile=96, tile_context="tile")
        own = torch.cat(seen)  # one verdict per tile, from the tile alone
        seen.clear()
        analyze(model, image, tile=96, tile_context="image")
        shared = torch.cat(seen[-len(own):])  # the second pass, on the recorded context
    finally:
        handle.remove()
    assert len(own) > 1
    assert torch.allclose(shared, whole.expand(len(own)), atol=1e-4)
    assert (shared.max() - shared.min()) < 1e-6 < (own.max() - own.min())
