"""Row-band inference (m2ae_core/banded.py): same values as the whole-map path, less memory."""
import pytest
import torch

from m2ae_core import banded
from m2ae_core.benchmark.workload import activate_all_branches_
from m2ae_core.layers import NAFBlock
from m2ae_core.network import build_model


def _whole(block, x):
    """The block's ordinary path (autograd on, so no banding), detached."""
    with torch.enable_grad():
        return block(x).detach()


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("batch, height, width", [(1, 37, 23), (2, 20, 9)])
@pytest.mark.parametrize("rows", [1, 3, 8, 64])
def test_banded_block_equals_the_whole_map(memory_format, batch, height, width, rows):
    torch.manual_seed(0)
    block = activate_all_branches_(NAFBlock(16).eval())
    x = torch.randn(batch, 16, height, width).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        out = banded.naf_block_banded(block, x, rows)
    # band edges, image edges (the depthwise conv's zero padding) and the whole-image pooled
    # attention all agree with the ordinary evaluation
    torch.testing.assert_close(out, _whole(block, x), atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=memory_format)


def test_banded_block_overwrites_its_input_only_when_handed_over():
    torch.manual_seed(0)
    block = activate_all_branches_(NAFBlock(16).eval())
    x = torch.randn(1, 16, 29, 13).contiguous(memory_format=torch.channels_last)
    original = x.clone()
    with torch.inference_mode():
        kept = banded.naf_block_banded(block, x, 4)
        assert torch.equal(x, original)
        handed_over = banded.naf_block_banded(block, x, 4, overwrite_input=True)
    assert handed_over.data_ptr() == x.data_ptr()
    torch.testing.assert_close(handed_over, kept, atol=1e-6, rtol=1e-6)


def test_naf_stage_overwrites_only_its_own_maps_unless_handed_over(monkeypatch):
    """A stage's later blocks write into the stage's own intermediate maps; the caller's
    input is written into only when the caller hands it over."""
    from m2ae_core.layers import NAFStage

    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)
    torch.manual_seed(0)
    stage = NAFStage(*[activate_all_branches_(NAFBlock(8)) for _ in range(3)]).eval()
    x = torch.randn(1, 8, 33, 10).contiguous(memory_format=torch.channels_last)
    original = x.clone()
    with torch.enable_grad():
        whole = stage(x).detach()
    with torch.inference_mode():
        kept = stage(x)
        assert torch.equal(x, original)
        handed_over = stage(x, overwrite_input=True)
    assert handed_over.data_ptr() == x.data_ptr()
    torch.testing.assert_close(kept, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(handed_over, whole, atol=1e-5, rtol=1e-5)


def test_naf_stage_gives_its_banded_blocks_one_scratch_map(monkeypatch):
    """The blocks of a stage share one intermediate map (allocated once), and only blocks whose
    input is the stage's own (or handed over) get it: the values stay those of whole maps."""
    from m2ae_core.layers import NAFStage

    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)
    torch.manual_seed(2)
    stage = NAFStage(*[activate_all_branches_(NAFBlock(8)) for _ in range(4)]).eval()
    x = torch.randn(1, 8, 33, 10).contiguous(memory_format=torch.channels_last)
    seen = []
    original = banded.naf_block_banded

    def recording(block, x, rows=None, overwrite_input=False, scratch=None):
        seen.append(None if scratch is None else scratch.data_ptr())
        return original(block, x, rows, overwrite_input, scratch)

    monkeypatch.setattr("m2ae_core.layers.naf_block_banded", recording)
    with torch.enable_grad():
        whole = stage(x).detach()
    with torch.inference_mode():
        kept = stage(x)
        assert seen[0] is None and len(set(seen[1:])) == 1 and seen[1] is not None
        seen.clear()
        handed_over = stage(x.clone(), overwrite_input=True)
        assert seen[0] is not None and len(set(seen)) == 1
    torch.testing.assert_close(kept, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(handed_over, whole, atol=1e-5, rtol=1e-5)


def test_a_scratch_map_needs_the_input_handed_over():
    block = NAFBlock(8).eval()
    x = torch.randn(1, 8, 20, 6).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), pytest.raises(ValueError, match="overwrite_input"):
        banded.naf_block_banded(block, x, 4, scratch=torch.empty_like(x))


def test_banded_block_in_bfloat16():
    torch.manual_seed(1)
    block = activate_all_branches_(NAFBlock(16).eval()).bfloat16()
    x = torch.randn(1, 16, 30, 17).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = banded.naf_block_banded(block, x, 4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _whole(block, x).float(), atol=3e-2, rtol=2e-2)


def test_band_rows_follow_the_byte_budget():
    x = torch.zeros(1, 32, 1000, 500)
    row = 500 * 64 * 4  # bytes of one row of the 64-channel temporary
    assert banded.band_rows(x, 64, band_bytes=20 * row) == 20
    assert banded.band_rows(x, 64, band_bytes=1) == banded.MIN_BAND_ROWS
    assert banded.band_rows(x, 64, band_bytes=10 ** 12) == 1000  # one band: the whole map


def test_bands_only_at_inference_on_large_maps(monkeypatch):
    x = torch.zeros(1, 8, 100, 10)
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 10 * 10 * 16 * 4)  # 10 rows per band
    with torch.inference_mode():
        assert banded.wants_bands(x, 16)
        assert not banded.wants_bands(x[:, :, :10], 16)  # one band: the ordinary path
    with torch.enable_grad():
        assert not banded.wants_bands(x, 16)  # training keeps its graph


def test_upsample_add_in_bands_equals_the_sum(monkeypatch):
    torch.manual_seed(2)
    model = build_model("small").eval()
    up = model.ups[-1]
    channels = up[0].in_channels
    x = torch.randn(1, channels, 11, 7).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(1, channels // 2, 22, 14).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)  # bands of MIN_BAND_ROWS rows: two here
    with torch.inference_mode():
        expected = up(x) + skip
        consumed = skip.clone()
        out = banded.upsample_add(up, x, consumed)
    assert out is consumed  # written into the skip, band by band
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    with torch.enable_grad():  # training: the ordinary sum, the skip left alone
        kept = skip.clone()
        assert banded.upsample_add(up, x, kept) is not kept
        assert torch.equal(kept, skip)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_whole_network_with_bands_equals_it_without(monkeypatch, preset):
    """Every full-resolution block, the upsampling adds and (for NAF stages) the low-resolution
    blocks run in bands of a few rows; the restored image is unchanged, mask path included."""
    torch.manual_seed(3)
    model = activate_all_branches_(build_model(preset, width=8).eval())
    image = torch.rand(1, 3, 64, 48)
    mask = torch.zeros(1, 1, 64, 48, dtype=torch.bool)
    mask[..., 20:40, 10:30] = True
    with torch.inference_mode():
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 10 ** 12)  # never banded
        whole = model(image, mask=mask).image
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)  # bands of MIN_BAND_ROWS rows
        calls = []
        original = banded.naf_block_banded
        monkeypatch.setattr("m2ae_core.layers.naf_block_banded",
                            lambda *a, **k: calls.append(1) or original(*a, **k))
        in_bands = model(image, mask=mask).image
    assert calls, "no block ran in bands"
    torch.testing.assert_close(in_bands, whole, atol=1e-5, rtol=1e-5)


def _m2as_case(fraction_mask: str, height=40, width=30, channels=8, seed=4, motion=3.0):
    from m2ae_core.m2as import M2ASBlock
    from m2ae_core.masked_conv import PrunePlan

    torch.manual_seed(seed)
    block = activate_all_branches_(M2ASBlock(channels).eval())
    x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool)
    if fraction_mask == "blob":
        mask[..., 5:17, 8:20] = True
    elif fraction_mask == "border":  # taps leave the image: the folded map's border value
        mask[..., :4, :] = True
        mask[..., :, -3:] = True
    elif fraction_mask == "mostly":  # above DENSE_MIX_SHARE: the mix runs densely per band
        mask[...] = True
        mask[..., 10:14, 3:9] = False
    elif fraction_mask == "full":
        mask[...] = True
    start = torch.randn(1, 2, height, width) * motion * mask
    end = torch.randn(1, 2, height, width) * motion * mask
    return block, x, mask, start, end, PrunePlan.from_mask(mask)


@pytest.mark.parametrize("kind", ["blob", "border", "empty", "mostly", "full"])
@pytest.mark.parametrize("rows", [1, 7, 16])
@pytest.mark.parametrize("motion", [3.0, 15.0])
def test_banded_m2as_block_equals_the_pruned_block(kind, rows, motion):
    """Taps reading bands above and below (up to ~3 bands of 7 rows away at motion 15)."""
    from m2ae_core.m2as_banded import m2as_block_banded

    block, x, mask, start, end, plan = _m2as_case(kind, motion=motion)
    with torch.inference_mode():
        expected = block.motion_aware_half(block.masked_spatial_mix(x, mask, plan), start, end,
                                           plan, True, True)
        out = m2as_block_banded(block, x, plan, start, end, rows)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["blob", "empty"])
def test_banded_m2as_block_overwrites_its_input_only_when_handed_over(kind):
    from m2ae_core.m2as_banded import m2as_block_banded

    block, x, mask, start, end, plan = _m2as_case(kind)
    original = x.clone()
    with torch.inference_mode():
        kept = m2as_block_banded(block, x, plan, start, end, 7)
        assert torch.equal(x, original)
        handed_over = m2as_block_banded(block, x, plan, start, end, 7, overwrite_input=True)
    assert handed_over.data_ptr() == x.data_ptr()
    torch.testing.assert_close(handed_over, kept, atol=1e-6, rtol=1e-6)


def test_banded_m2as_block_keeps_the_tiling_hooks_of_its_attention():
    """Tiled inference first records what every pooling site sees (the whole gated mix), then
    fixes each site's mean: the banded block, which otherwise pools band by band and never
    holds the mix whole, must show the recorder the same map and use the fixed mean."""
    from m2ae_core.m2as_banded import m2as_block_banded

    block, x, mask, start, end, plan = _m2as_case("blob")
    pool = block.sca[0]
    seen = []
    with torch.inference_mode():
        pool.observer = lambda site, features: seen.append(features.clone())
        whole = block.motion_aware_half(block.masked_spatial_mix(x, mask, plan), start, end,
                                        plan, True, True)
        banded = m2as_block_banded(block, x, plan, start, end, 7)
        pool.observer = None
        torch.testing.assert_close(banded, whole, atol=1e-5, rtol=1e-5)
        assert len(seen) == 2
        torch.testing.assert_close(seen[1], seen[0], atol=1e-6, rtol=1e-6)

        pool.fixed = torch.randn(1, x.shape[1], 1, 1)
        whole_fixed = block.motion_aware_half(block.masked_spatial_mix(x, mask, plan), start,
                                              end, plan, True, True)
        banded_fixed = m2as_block_banded(block, x, plan, start, end, 7)
        pool.fixed = None
    torch.testing.assert_close(banded_fixed, whole_fixed, atol=1e-5, rtol=1e-5)
    assert (banded_fixed - banded).abs().max() > 1e-3  # the fixed mean was used


def test_banded_m2as_block_with_unfoldable_channels():
    """Channels whose taps sum to ~0 keep their affine before the gate (FoldedConv4.gate_)."""
    from m2ae_core.m2as_banded import m2as_block_banded

    block, x, mask, start, end, plan = _m2as_case("blob")
    with torch.no_grad():
        block.dconv.weight[3] -= block.dconv.weight[3].mean()
    assert block.folded_conv4().unfolded.numel() == 1
    with torch.inference_mode():
        expected = block.motion_aware_half(block.masked_spatial_mix(x, mask, plan), start, end,
                                           plan, True, True)
        out = m2as_block_banded(block, x, plan, start, end, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_the_m2as_block_takes_the_banded_path_on_large_maps(monkeypatch):
    from m2ae_core import m2as_banded

    block, x, mask, start, end, plan = _m2as_case("blob")
    calls = []
    original = m2as_banded.m2as_block_banded
    monkeypatch.setattr("m2ae_core.m2as.m2as_block_banded",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.inference_mode():
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 10 ** 12)
        whole = block(x, mask, start, end, plan, True, True)
        assert not calls
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)
        in_bands = block(x, mask, start, end, plan, True, True)
    assert calls
    torch.testing.assert_close(in_bands, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tile", [0, 64])
def test_deblur_with_bands_equals_without(monkeypatch, tile):
    """The library entry point, whole and tiled (tiles share the image's pooled context through
    the attention's hooks, which the banded blocks call once per map), predicted mask path."""
    import numpy as np

    from m2ae_core.inference import deblur

    torch.manual_seed(5)
    model = activate_all_branches_(build_model("small", width=8).eval())
    image = np.random.default_rng(0).random((120, 100, 3), dtype=np.float32)
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 10 ** 12)
    whole = deblur(model, image, tile=tile)
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)
    in_bands = deblur(model, image, tile=tile)
    assert (in_bands.mask == whole.mask).all()
    np.testing.assert_allclose(in_bands.image, whole.image, atol=1e-5)


def test_bfloat16_network_with_bands_matches_without(monkeypatch):
    torch.manual_seed(6)
    model = activate_all_branches_(build_model("paper", width=8).eval()).bfloat16()
    image = torch.rand(1, 3, 96, 64)
    mask = torch.zeros(1, 1, 96, 64, dtype=torch.bool)
    mask[..., 30:50, 10:30] = True
    with torch.inference_mode():
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 10 ** 12)
        whole = model(image, mask=mask).image
        monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)
        in_bands = model(image, mask=mask).image
    assert in_bands.dtype == torch.float32  # the residual is added to the fp32 input
    # bf16 rounds differently along the two paths; the images stay within its precision
    assert (in_bands - whole).abs().max() < 3e-2


def test_stage_workspace_reuses_a_buffer_until_it_is_too_small():
    from m2ae_core.m2as_banded import StageWorkspace

    workspace = StageWorkspace()
    first = workspace.take("table", (10, 4), torch.float32, "cpu")
    smaller = workspace.take("table", (3, 4), torch.float32, "cpu")
    assert smaller.shape == (3, 4) and smaller.data_ptr() == first.data_ptr()
    other = workspace.take("mix", (10, 4), torch.float32, "cpu")
    assert other.data_ptr() != first.data_ptr()  # names never alias
    larger = workspace.take("table", (11, 4), torch.float32, "cpu")
    assert larger.shape == (11, 4)
    assert workspace.take("table", (11, 4), torch.float32, "cpu").data_ptr() == larger.data_ptr()
    assert workspace.take("table", (2, 2), torch.float64, "cpu").dtype == torch.float64


def test_stage_workspace_builds_the_tap_reads_once_per_plan_and_trajectory():
    from m2ae_core.m2as_banded import StageWorkspace

    _, _, _, start, end, plan = _m2as_case("blob")
    workspace = StageWorkspace()
    reads = workspace.tap_reads(plan, start, end, 9, torch.float32)
    assert workspace.tap_reads(plan, start, end, 9, torch.float32) is reads
    assert workspace.tap_reads(plan, start.clone(), end, 9, torch.float32) is not reads
    _, _, _, start2, end2, plan2 = _m2as_case("border")
    assert workspace.tap_reads(plan2, start2, end2, 9, torch.float32).needed.numel() \
        != reads.needed.numel()


@pytest.mark.parametrize("kind", ["blob", "border", "mostly", "empty"])
@pytest.mark.parametrize("chunk_rows", [7, 4096])
def test_banded_m2as_blocks_sharing_a_workspace_equal_the_pruned_blocks(kind, chunk_rows,
                                                                        monkeypatch):
    """Two blocks in a row with one workspace (as a stage runs them): the second reuses the
    first's tables and tap reads, and both give the pruned block's values (the table filled
    in chunks of 7 dilated rows, and in one)."""
    from m2ae_core import m2as_banded
    from m2ae_core.m2as import M2ASBlock
    from m2ae_core.m2as_banded import StageWorkspace, m2as_block_banded

    monkeypatch.setattr(m2as_banded, "TABLE_CHUNK_ROWS", chunk_rows)
    first, x, mask, start, end, plan = _m2as_case(kind, motion=6.0)
    torch.manual_seed(9)
    second = activate_all_branches_(M2ASBlock(x.shape[1]), seed=9).eval()
    workspace = StageWorkspace()
    with torch.inference_mode():
        expected = x
        for block in (first, second):
            expected = block.motion_aware_half(block.masked_spatial_mix(expected, mask, plan),
                                               start, end, plan, True, True)
        out = x.clone()
        pointers = []
        for block in (first, second):
            out = m2as_block_banded(block, out, plan, start, end, 7, overwrite_input=True,
                                    workspace=workspace)
            pointers.append({name: buffer.data_ptr()
                             for name, buffer in workspace._buffers.items()})
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if plan.masked:
        assert set(pointers[0]) == {"table", "mix"}
    assert pointers[1] == pointers[0]  # nothing allocated anew for the second block


def test_an_m2as_stage_hands_its_blocks_one_workspace_at_inference_only(monkeypatch):
    from m2ae_core.m2as import M2ASStage

    stage = activate_all_branches_(M2ASStage(8, blocks=3, stage=1)).eval()
    seen = []
    for block in stage.blocks():
        original = block.forward
        monkeypatch.setattr(block, "forward",
                            lambda *a, _f=original, **k: seen.append(k["workspace"])
                            or _f(*a, **k))
    x = torch.randn(1, 8, 12, 16).contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(1, 1, 12, 16, dtype=torch.bool)
    mask[..., 3:8, 4:10] = True
    with torch.inference_mode():
        stage(x, mask, pruned=True)
    assert len(seen) == 3 and seen[0] is not None and all(w is seen[0] for w in seen)
    seen.clear()
    with torch.inference_mode():
        stage(x, mask, pruned=False)
    assert seen == [None] * 3


@pytest.mark.parametrize("kind, expected", [("blob", True), ("mostly", True), ("full", False)])
def test_m2as_blocks_take_bands_for_every_partial_mask(kind, expected, monkeypatch):
    """With the stage workspace the banded block is as fast as the whole-map one up to 99.6 %
    masked (session 22); a full mask keeps the whole-map path (dense, no gathers)."""
    from m2ae_core.m2as_banded import wants_m2as_bands

    _, x, _, _, _, plan = _m2as_case(kind)
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)  # a map of many bands
    with torch.inference_mode():
        assert wants_m2as_bands(x, plan) is expected
