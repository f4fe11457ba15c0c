"""The public ``deblur`` contract: kinds in = kinds out, masks, trajectory, stats, tiling."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_
from m2ae_core import ImageInputError, analyze, build_model, deblur
from m2ae_core.tiling import AUTO_TILE_SIZE, resolve_tile_size, tile_grid


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=3).eval()


def photo(h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def test_pil_in_pil_out_with_maps_and_stats(model):
    image = Image.fromarray(photo())
    result = deblur(model, image)
    assert isinstance(result.image, Image.Image) and result.image.size == image.size
    assert result.image.mode == "RGB"
    assert result.mask.shape == (40, 56) and result.mask.dtype == bool
    assert result.probability.shape == (40, 56)
    assert result.probability.min() >= 0 and result.probability.max() <= 1
    assert result.trajectory.shape == (2, 2, 40, 56)
    for key in ("macs", "dense_macs", "fraction_processed", "seconds"):
        assert key in result.stats
    assert result.stats["macs"] <= result.stats["dense_macs"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_numpy_dtype_and_layout_preserved(model, dtype):
    arr = photo().astype(np.float64) / 255
    if dtype == np.uint16:
        arr = np.round(arr * 65535).astype(np.uint16)
    elif dtype == np.uint8:
        arr = np.round(arr * 255).astype(np.uint8)
    else:
        arr = arr.astype(np.float32)
    out = deblur(model, arr).image
    assert out.dtype == dtype and out.shape == arr.shape


def test_greyscale_and_alpha(model):
    grey = photo()[..., 0]
    out = deblur(model, grey).image
    assert out.shape == grey.shape and out.dtype == np.uint8
    rgba = np.dstack([photo(), np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) % 256]).astype(np.uint8)
    out = deblur(model, Image.fromarray(rgba, "RGBA")).image
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_tensor_layouts_and_batches(model):
    nchw = torch.rand(2, 3, 24, 30)
    result = deblur(model, nchw)
    assert result.image.shape == nchw.shape and result.image.dtype == nchw.dtype
    assert result.mask.shape == (2, 24, 30)
    bhwc = torch.rand(1, 24, 30, 3)
    assert deblur(model, bhwc).image.shape == bhwc.shape


def test_plain_backbone_processes_everything():
    plain = randomize_(build_model("nafnet-small", width=8)).eval()
    result = deblur(plain, photo())
    assert result.trajectory is None
    assert result.mask.all() and result.stats["fraction_processed"] == 1.0
    assert result.stats["macs"] == result.stats["dense_macs"] > 0


def test_user_mask_of_other_resolution_replaces_prediction(model):
    image = photo(64, 64)
    low_res = np.zeros((16, 16), np.uint8)
    low_res[4:8, 4:8] = 255  # the 16..32 pixel square at full resolution
    result = deblur(model, image, mask=low_res)
    expected = np.zeros((64, 64), bool)
    expected[16:32, 16:32] = True
    assert np.array_equal(result.mask, expected)
    # small preset's first M2AS stage is 1/4 resolution: 4x4 of 16x16 grid pixels
    assert result.stats["fraction_processed"] == pytest.approx(16 / 256)
    empty = deblur(model, image, mask=np.zeros((64, 64), bool))
    assert empty.stats["fraction_processed"] == 0
    assert empty.stats["macs"] < result.stats["macs"]


def test_pruned_and_dense_paths_agree_through_deblur(model):
    image = photo().astype(np.float32) / 255
    a = deblur(model, image, pruned=True).image
    b = deblur(model, image, pruned=False).image
    assert np.abs(a - b).max() <= 1e-4


def test_preserve_sharp_keeps_far_pixels_untouched(model):
    image = photo(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[:16, :16] = True
    out = deblur(model, image, mask=mask, preserve_sharp=True).image
    assert np.array_equal(out[40:, 40:], image[40:, 40:])
    assert not np.array_equal(out[:16, :16], image[:16, :16])


def test_preserve_sharp_trusts_a_given_mask_inside_it(model):
    image = photo(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[:32, :32] = True
    kept = deblur(model, image, mask=mask, preserve_sharp=True).image
    plain = deblur(model, image, mask=mask).image
    assert np.array_equal(kept[:20, :20], plain[:20, :20])  # beyond the feathered edge


def test_preserve_sharp_weights_a_predicted_mask_by_its_probability(model):
    image = photo(64, 64).astype(np.float32) / 255
    plain = deblur(model, image)
    kept = deblur(model, image, preserve_sharp=True).image
    inside = torch.nn.functional.max_pool2d(  # pixels 4+ px from the mask's edge
        -torch.from_numpy(~plain.mask).float()[None, None], 9, stride=1, padding=4)[0, 0] == 0
    p = plain.probability[inside.numpy()]
    assert inside.any() and 0.5 < p.min() and p.max() < 0.999  # blends must be visible
    expected = image + plain.probability[..., None] * (plain.image - image)
    assert np.allclose(kept[inside.numpy()], np.clip(expected, 0, 1)[inside.numpy()], atol=1e-5)
    assert not np.allclose(kept, plain.image, atol=1e-3)


def test_tiled_output_matches_untiled():
    # A freshly built model has beta = gamma = 0: every block is the identity, so the net is a
    # local convolutional map; tiles aligned to 16 px must then agree with the whole image.
    local = build_model("small", width=8).eval()
    image = torch.rand(1, 3, 160, 176)
    whole = deblur(local, image, tile=0).image
    steps = []
    tiled = deblur(local, image, tile=96, progress=lambda done, total: steps.append((done, total))).image
    mse = torch.mean((whole - tiled) ** 2)
    assert 10 * torch.log10(1 / mse) > 40
    assert steps[-1][0] == steps[-1][1] > 1


def test_tile_grid_covers_the_image():
    tiles = tile_grid(300, 500, 128)
    covered = np.zeros((300, 500), bool)
    for t in tiles:
        covered[t.slices] = True
        assert t.height <= 128 and t.width <= 128
    assert covered.all()
    # Available memory unknown: by pixel count.
    assert resolve_tile_size(None, 4000, 3000) == AUTO_TILE_SIZE
    assert resolve_tile_size(None, 512, 512) == 0


def test_automatic_tiling_follows_the_available_memory():
    # 12 MP at 400 B/px needs 4.8 GB: whole with 10 GB available, tiled with 8 GB.
    assert resolve_tile_size(None, 3000, 4000, bytes_per_pixel=400, available=10 * 10**9) == 0
    # 8 GB: half is 4 GB, sqrt(4e9 / 400) = 3162 px -> 3072 (a multiple of 256)
    assert resolve_tile_size(None, 3000, 4000, bytes_per_pixel=400, available=8 * 10**9) == 3072
    # Very little memory: never below the smallest automatic tile.
    assert resolve_tile_size(None, 3000, 4000, bytes_per_pixel=400, available=10**6) == 512
    # A small image on a big machine is whole, where the pixel rule agrees...
    assert resolve_tile_size(None, 512, 512, bytes_per_pixel=400, available=8 * 10**9) == 0
    # ...and a big one is whole too where the pixel rule would tile it.
    assert resolve_tile_size(None, 4000, 3000, bytes_per_pixel=400, available=32 * 10**9) == 0
    # An explicit tile wins over the memory.
    assert resolve_tile_size(700, 3000, 4000, bytes_per_pixel=400, available=10 * 10**9) == 700
    assert resolve_tile_size(0, 3000, 4000, bytes_per_pixel=400, available=10**6) == 0
    from m2ae_core.tiling import PEAK_MAPS, untiled_bytes_per_pixel

    assert untiled_bytes_per_pixel(16) == PEAK_MAPS * 16 * 4
    assert untiled_bytes_per_pixel(16, torch.float16) == PEAK_MAPS * 16 * 2


def test_memory_to_free_lets_automatic_tiling_choose_as_on_the_whole_device():
    from m2ae_core.tiling import memory_to_free

    # 24 GB device: 12 MP at 400 B/px fits whole in half of it -> twice the whole estimate
    assert memory_to_free(None, 3000, 4000, 400, 24 * 10**9) == 2 * 12 * 10**6 * 400
    # 2 GB device: the tiles that fit in 1 GB (1536 px); that much free gives those tiles
    needed = memory_to_free(None, 3000, 4000, 400, 2 * 10**9)
    assert needed == 2 * 1536**2 * 400
    assert resolve_tile_size(None, 3000, 4000, bytes_per_pixel=400, available=needed) == 1536
    # an explicit tile is what runs
    assert memory_to_free(512, 3000, 4000, 400, 2 * 10**9) == 2 * 512**2 * 400


def test_available_memory_reads_the_system(monkeypatch):
    import sys

    from m2ae_core import tiling

    if sys.platform.startswith("linux"):
        total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                     if line.startswith("MemTotal:"))
        assert 0 < tiling.available_memory("cpu") <= total
    assert tiling.available_memory("meta") is None
    # CUDA: free memory plus the blocks PyTorch's allocator keeps cached but unused
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * 2**30)
    assert tiling.available_memory("cuda:0") == 7 * 2**30


def test_deblur_tiles_automatically_when_memory_is_short(model, monkeypatch):
    from m2ae_core import inference

    image = photo(600, 700, seed=5)
    roomy = deblur(model, image, tile_context="tile")
    assert roomy.stats["tiles"] == 1
    # as if the machine had only enough for a 512 px tile of this model
    per_pixel = inference.untiled_bytes_per_pixel(model.config.width)
    monkeypatch.setattr(inference, "available_memory", lambda device: int(2 * 520**2 * per_pixel))
    short = deblur(model, image, tile_context="tile")
    assert short.stats["tiles"] == 4  # 512 px tiles with 64 px overlap over 600 x 700
    # Same restoration up to the per-tile pooling of the tiles' seams.
    diff = np.abs(short.image.astype(float) - roomy.image.astype(float))
    assert 0 < diff.mean() < 3
    # Room for this image whole, but another run is in flight in the process: each gets half.
    monkeypatch.setattr(inference, "available_memory",
                        lambda device: int(2.2 * 600 * 700 * per_pixel))
    assert deblur(model, image, tile_context="tile").stats["tiles"] == 1
    with inference.RUNS_IN_FLIGHT:
        assert deblur(model, image, tile_context="tile").stats["tiles"] > 1
    assert inference.RUNS_IN_FLIGHT.count == 0


def test_progress_callback_can_interrupt(model):
    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        deblur(model, torch.rand(1, 3, 200, 200), tile=64, progress=stop)


def test_bad_inputs_raise_clear_errors(model):
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ImageInputError, match="NaN"):
        deblur(model, bad)
    with pytest.raises(ValueError, match="threshold"):
        deblur(model, photo(), threshold=2)
    with pytest.raises(ValueError, match="tile"):
        deblur(model, photo(), tile=5)


@pytest.mark.parametrize("size", [(1, 1), (17, 3), (5, 33)])
def test_tiny_and_odd_sizes(model, size):
    arr = np.full(size + (3,), 128, np.uint8)
    assert deblur(model, arr).image.shape == arr.shape


def test_analyze_gives_the_maps_of_deblur_without_restoring(model):
    image = photo(48, 64)
    full = deblur(model, image)
    quick = analyze(model, image)
    assert quick.image is None
    assert np.array_equal(quick.mask, full.mask)
    assert np.allclose(quick.probability, full.probability, atol=1e-6)
    assert np.allclose(quick.trajectory, full.trajectory, atol=1e-5)
    assert quick.stats["fraction_processed"] == full.stats["fraction_processed"]
    user = np.zeros((48, 64), bool)
    user[:8, :8] = True
    assert np.array_equal(analyze(model, image, mask=user).mask, deblur(model, image, mask=user).mask)


def test_analyze_plain_backbone_marks_everything():
    plain = build_model("nafnet-small", width=8).eval()
    result = analyze(plain, photo())
    assert result.mask.all() and result.trajectory is None


def test_a_given_mask_skips_the_mask_predictors_and_is_the_probability(model):
    calls = []
    handles = [stage.mask_predictor.register_forward_hook(lambda *a: calls.append(1))
               for stage in model.encoders if hasattr(stage, "mask_predictor")]
    try:
        image = photo(64, 64)
        predicted = deblur(model, image)
        assert len(calls) == 2  # both M2AS stages of `small` ran their predictor
        calls.clear()
        user = np.zeros((64, 64), bool)
        user[10:40, 20:50] = True
        given = deblur(model, image, mask=user)
        assert calls == []
        assert np.array_equal(given.probability, user.astype(np.float32))
        assert np.array_equal(given.mask, user)
        # the image does not depend on the skipped predictor: same as the dense reference
        dense = deblur(model, image, mask=user, pruned=False)
        assert np.abs(given.image.astype(np.float32) - dense.image.astype(np.float32)).max() <= 1
        # the skipped predictors are not counted
        assert given.stats["dense_macs"] < predicted.stats["dense_macs"]
    finally:
        for handle in handles:
            handle.remove()


def test_stage_maps_line_up_with_the_input_when_it_was_padded():
    from m2ae_core.inference import _stage_maps
    from m2ae_core.m2as import StageOutput

    # 100x90 input, padded to 112x96: a 28x24 grid at scale 4. Grid column 10 covers input
    # columns 40..43; a resize of the grid to 90 columns would put it at 38..41.
    grid = torch.zeros(1, 1, 28, 24, dtype=torch.bool)
    grid[..., 10] = True
    motion = torch.zeros(1, 2, 28, 24)
    motion[:, 0, :, 10] = 1.0
    stage = StageOutput(2, 4, None, grid.float(), grid, motion, motion)
    probability, used, trajectory = _stage_maps([stage], 100, 90, False, None)
    assert used.shape == (100, 90)
    assert used[0].nonzero().flatten().tolist() == [40, 41, 42, 43]
    assert probability[0].argmax().item() in range(40, 44)
    dx = trajectory[0, 0, 0]  # the start's dx (grid px x 4), bilinear: peaks mid-column
    assert (dx == dx.max()).nonzero().flatten().tolist() == [41, 42]


def test_reduced_precision_network_keeps_the_input_precision(model):
    """A bf16 network adds its residual to the full-precision input: with a zero residual a
    16-bit photo comes back bit for bit (bf16 itself holds only 8 bits of it)."""
    import copy

    silent = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        silent.ending.weight.zero_()
        silent.ending.bias.zero_()
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 65536, (40, 56, 3)).astype(np.uint16)
    result = deblur(silent, arr, mask=np.ones((40, 56), bool))
    assert result.image.dtype == np.uint16
    assert np.array_equal(result.image, arr)


def test_network_adds_its_residual_to_the_callers_image_cropped_to_its_size(model):
    """The padded copy of the input is not kept through the forward: the output is the
    cropped network output plus the caller's image, so a zero residual returns the image
    exactly, at its own size (not a view of a padded map)."""
    import copy

    silent = copy.deepcopy(model)
    with torch.no_grad():
        silent.ending.weight.zero_()
        silent.ending.bias.zero_()
    image = torch.rand(1, 3, 37, 53)
    with torch.inference_mode():
        out = silent(image, mask=torch.ones(1, 1, 37, 53, dtype=torch.bool)).image
    assert out.shape == image.shape
    assert out.untyped_storage().nbytes() == image.numel() * 4
    assert torch.equal(out, image)


def test_bf16_restores_close_to_fp32(model):
    import copy

    image = photo(48, 64, seed=2)
    mask = np.zeros((48, 64), bool)
    mask[8:40, 16:48] = True
    full = deblur(model, image, mask=mask).image.astype(np.float64)
    half = deblur(copy.deepcopy(model).to(torch.bfloat16), image, mask=mask).image.astype(np.float64)
    assert np.abs(full - half).mean() < 1.0  # in 0..255: bf16 rounding, not another result
    assert np.abs(full - half).max() <= 16
