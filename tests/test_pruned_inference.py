"""Pixel-pruned evaluation must equal the dense masked formula (DESIGN §3)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_
from m2ae_core import build_model
from m2ae_core.deform import deform_conv_all, deform_conv_dense, deform_conv_rows
from m2ae_core.layers import pixel_rows, simple_gate
from m2ae_core.m2as import M2ASBlock
from m2ae_core import masked_conv
from m2ae_core.masked_conv import (DENSE_MIX_SHARE, PrunePlan, masked_conv_dense,
                                   masked_gated_conv_pruned)

TOL = 1e-4


def blob_mask(b, h, w, seed=0, fraction=0.15):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 1, max(2, h // 4), max(2, w // 4), generator=gen)
    smooth = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    flat = smooth.flatten(1)
    cut = flat.quantile(1 - fraction, dim=1).view(b, 1, 1, 1)
    return smooth >= cut


def masks_for(b, h, w):
    gen = torch.Generator().manual_seed(1)
    border = torch.zeros(b, 1, h, w, dtype=torch.bool)
    border[:, :, 0, :] = True
    border[:, :, :, -1] = True
    border[:, :, h // 2, w // 2] = True
    return {
        "random": torch.rand(b, 1, h, w, generator=gen) > 0.7,
        "blob": blob_mask(b, h, w),
        "empty": torch.zeros(b, 1, h, w, dtype=torch.bool),
        "full": torch.ones(b, 1, h, w, dtype=torch.bool),
        "border": border,
    }


@pytest.mark.parametrize("kind", ["random", "blob", "empty", "full", "border"])
@pytest.mark.parametrize("size", [(7, 9), (1, 5), (16, 16)])
@pytest.mark.parametrize("tile", [1, 3, 5, 12])
def test_masked_conv_pruned_equals_dense(kind, size, tile):
    """Any tile side, tiles cut by the image's edge, neighbours in other tiles."""
    torch.manual_seed(0)
    block = randomize_(M2ASBlock(8))
    f1 = torch.randn(2, 8, *size)
    mask = masks_for(2, *size)[kind]
    dense = simple_gate(masked_conv_dense(f1, mask, block.conv1, block.conv2))
    plan = PrunePlan.from_mask(mask, tile=tile)
    pruned = masked_gated_conv_pruned(f1, plan, block.conv1, block.conv2)
    assert pruned.shape == dense.shape
    assert (pruned - dense).abs().max() <= TOL


@pytest.mark.parametrize("chunk_bytes", [1, 5000, 1 << 30])
def test_tiled_depthwise_in_groups_of_tiles_equals_dense(monkeypatch, chunk_bytes):
    """Tiles are convolved in groups (one tile, a few, all at once): same values, and every
    masked pixel is written (an unwritten one would keep garbage)."""
    monkeypatch.setattr(masked_conv, "TILE_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    block = randomize_(M2ASBlock(8))
    f1 = torch.randn(2, 8, 23, 29).contiguous(memory_format=torch.channels_last)
    mask = blob_mask(2, 23, 29, fraction=0.3)
    plan = PrunePlan.from_mask(mask, tile=4)
    assert plan.tiles.count > 4
    rows = pixel_rows(f1)
    with torch.inference_mode():
        table = masked_conv.pointwise_table(rows.index_select(0, plan.table_index), block.conv1)
        picked = masked_conv.masked_gated_depthwise(table, plan, block.conv2)
    dense = pixel_rows(simple_gate(masked_conv_dense(f1, mask, block.conv1, block.conv2)))
    assert (picked - dense.index_select(0, plan.mask_index)).abs().max() <= TOL


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.6, 0.9, 1.0])
def test_gated_pruned_mix_equals_dense_on_both_sides_of_the_crossover(fraction):
    """Below DENSE_MIX_SHARE the conv runs on the tiles the mask touches, above it runs densely and
    selects; both must equal the gated dense formula."""
    torch.manual_seed(0)
    block = randomize_(M2ASBlock(8))
    f1 = torch.randn(2, 8, 13, 17).contiguous(memory_format=torch.channels_last)
    mask = blob_mask(2, 13, 17, fraction=fraction) if 0 < fraction < 1 else torch.full(
        (2, 1, 13, 17), bool(fraction))
    plan = PrunePlan.from_mask(mask)
    assert (plan.masked > DENSE_MIX_SHARE * plan.total) == (fraction > DENSE_MIX_SHARE)
    dense = simple_gate(masked_conv_dense(f1, mask, block.conv1, block.conv2))
    pruned = masked_gated_conv_pruned(f1, plan, block.conv1, block.conv2)
    assert pruned.shape == dense.shape
    assert (pruned - dense).abs().max() <= TOL
    if 0 < fraction < 1:  # a wrong mask is caught, on either side of the crossover
        shifted = PrunePlan.from_mask(mask.roll(1, dims=-1))
        wrong = masked_gated_conv_pruned(f1, shifted, block.conv1, block.conv2)
        assert (wrong - dense).abs().max() > 100 * TOL


def test_row_gather_deform_equals_grid_sample_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 11).contiguous(memory_format=torch.channels_last)
    start, end = torch.randn(2, 2, 9, 11) * 3, torch.randn(2, 2, 9, 11) * 3
    weight, bias = torch.randn(6, 9), torch.randn(6)
    reference = deform_conv_dense(x, start, end, weight, bias)
    assert (deform_conv_all(x, start, end, weight, bias) - reference).abs().max() <= TOL
    assert (deform_conv_all(x.contiguous(), start, end, weight, bias)
            - reference).abs().max() <= TOL


def test_masked_conv_detects_a_skipped_or_misplaced_pixel():
    """The comparison above is sensitive: dropping one mask pixel, or shifting the neighbour
    lookup by one, changes the result far beyond the tolerance."""
    torch.manual_seed(0)
    block = randomize_(M2ASBlock(8))
    f1 = torch.randn(1, 8, 11, 13)
    mask = blob_mask(1, 11, 13)
    dense = simple_gate(masked_conv_dense(f1, mask, block.conv1, block.conv2))

    fewer = mask.clone()
    fewer.view(-1)[fewer.flatten().nonzero()[0]] = False
    skipped = masked_gated_conv_pruned(f1, PrunePlan.from_mask(fewer), block.conv1, block.conv2)
    assert (skipped - dense).abs().max() > 1e-2

    interior = torch.zeros_like(mask)
    interior[..., 3:7, 4:9] = True
    dense = simple_gate(masked_conv_dense(f1, interior, block.conv1, block.conv2))
    plan = PrunePlan.from_mask(interior)
    # every pixel reads its right-hand neighbourhood
    plan.tiles.table_rows = plan.tiles.table_rows.roll(-1, dims=1)
    shifted = masked_gated_conv_pruned(f1, plan, block.conv1, block.conv2)
    assert (shifted - dense).abs().max() > 1e-2


def naive_deform(x, start, end, weight, bias):
    """Per-pixel loop: tap n reads x bilinearly at z + o_n(z), zero outside."""
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(b):
        for y in range(h):
            for xx in range(w):
                acc = bias.clone()
                for n in range(9):
                    s = 2 * n / 8 - 1
                    o = (start[i, :, y, xx] + end[i, :, y, xx]) / 2 * s * s + (end[i, :, y, xx] - start[i, :, y, xx]) / 2 * s
                    px, py = xx + float(o[0]), y + float(o[1])
                    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
                    val = torch.zeros(c)
                    for dy in (0, 1):
                        for dx in (0, 1):
                            cx, cy = x0 + dx, y0 + dy
                            wgt = (1 - abs(px - cx)) * (1 - abs(py - cy))
                            if 0 <= cx < w and 0 <= cy < h:
                                val += wgt * x[i, :, cy, cx]
                    acc += weight[:, n] * val
                out[i, :, y, xx] = acc
    return out


def test_deform_conv_matches_naive_loop():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6)
    start = torch.randn(2, 2, 5, 6) * 2
    end = torch.randn(2, 2, 5, 6) * 2
    weight, bias = torch.randn(3, 9), torch.randn(3)
    reference = naive_deform(x, start, end, weight, bias)
    assert (deform_conv_dense(x, start, end, weight, bias) - reference).abs().max() <= TOL
    b_idx, ys, xs = torch.meshgrid(torch.arange(2), torch.arange(5), torch.arange(6), indexing="ij")
    b_idx, ys, xs = b_idx.flatten(), ys.flatten(), xs.flatten()
    at = deform_conv_rows(pixel_rows(x), (2, 5, 6), b_idx, ys, xs, start[b_idx, :, ys, xs],
                          end[b_idx, :, ys, xs], weight, bias)
    assert (at - reference.permute(0, 2, 3, 1).reshape(-1, 3)).abs().max() <= TOL


def test_deform_conv_with_zero_motion_reads_the_pixel_itself():
    x = torch.randn(1, 4, 6, 7)
    zero = torch.zeros(1, 2, 6, 7)
    weight, bias = torch.randn(4, 9), torch.randn(4)
    expected = x * weight.sum(1).view(1, 4, 1, 1) + bias.view(1, 4, 1, 1)
    assert (deform_conv_dense(x, zero, zero, weight, bias) - expected).abs().max() <= TOL


def _eval_model(preset, seed=0, **overrides):
    return randomize_(build_model(preset, **overrides), seed=seed).eval()


@pytest.mark.parametrize("size", [(37, 53), (16, 16), (1, 1), (33, 17)])
def test_network_pruned_equals_dense_with_predicted_masks(size):
    model = _eval_model("small", width=8)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        pruned = model(x, pruned=True)
        dense = model(x, pruned=False)
    assert (pruned.image - dense.image).abs().max() <= TOL
    for p, d in zip(pruned.stages, dense.stages):
        assert torch.equal(p.mask, d.mask)


@pytest.mark.parametrize("kind", ["random", "blob", "empty", "full", "border"])
def test_network_pruned_equals_dense_with_user_masks(kind):
    model = _eval_model("small", width=8, gate_trajectory=kind != "border")
    x = torch.rand(2, 3, 29, 35)
    mask = masks_for(2, 29, 35)[kind]
    with torch.no_grad():
        pruned = model(x, mask=mask, pruned=True)
        dense = model(x, mask=mask, pruned=False)
    assert (pruned.image - dense.image).abs().max() <= TOL


def test_batch_items_with_different_masks_are_independent():
    model = _eval_model("small", width=8)
    x = torch.rand(2, 3, 24, 40)
    mask = torch.zeros(2, 1, 24, 40, dtype=torch.bool)
    mask[0, :, :10, :12] = True
    mask[1, :, 14:, 25:] = True
    with torch.no_grad():
        both = model(x, mask=mask).image
        first = model(x[:1], mask=mask[:1]).image
        second = model(x[1:], mask=mask[1:]).image
        dense = model(x, mask=mask, pruned=False).image
    assert (both - dense).abs().max() <= TOL
    assert (both[:1] - first).abs().max() <= TOL
    assert (both[1:] - second).abs().max() <= TOL


def test_perturbed_mask_changes_the_output():
    """Guard against a pruned path that ignores the mask: a different mask, different result."""
    model = _eval_model("small", width=8)
    x = torch.rand(1, 3, 32, 32)
    mask = blob_mask(1, 32, 32)
    other = mask.clone()
    other[..., :8, :8] = ~other[..., :8, :8]
    with torch.no_grad():
        a = model(x, mask=mask).image
        b = model(x, mask=other).image
    assert (a - b).abs().max() > 1e-3


def test_paper_preset_parameter_count():
    count = sum(p.numel() for p in build_model("paper").parameters())
    assert abs(count - 17.44e6) <= 0.01 * 17.44e6
    plain = sum(p.numel() for p in build_model("nafnet-w32").parameters())
    assert abs(plain - 17.11e6) <= 0.01 * 17.11e6


def test_training_forward_returns_logits_and_displacements_with_gradients():
    model = randomize_(build_model("small", width=8)).train()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.image.shape == x.shape
    assert len(out.stages) == 2
    loss = out.image.mean()
    for stage in out.stages:
        assert stage.logits.shape[1] == 2
        assert stage.start.shape == stage.end.shape == (2, 2, 32 // stage.scale, 32 // stage.scale)
        loss = loss + stage.logits.mean() + stage.start.abs().mean() + stage.end.abs().mean()
    loss.backward()
    analyzer = model.encoders[2].motion_analyzer
    assert analyzer.weight.grad is not None and analyzer.weight.grad.abs().sum() > 0


def test_plain_backbone_has_no_stages():
    model = build_model("nafnet-small").eval()
    out = model(torch.rand(1, 3, 20, 20))
    assert out.stages == [] and out.image.shape == (1, 3, 20, 20)


def test_sparse_trajectory_sampling_in_training_matches_dense_values_and_gradients():
    """Training samples the gated trajectory only on the mask: values and the gradients to
    features, weights and displacements match the dense deformable conv."""
    torch.manual_seed(0)
    block = randomize_(M2ASBlock(4))
    f4 = torch.randn(2, 8, 9, 11, requires_grad=True)
    mask = blob_mask(2, 9, 11, fraction=0.3).float()
    start = (torch.randn(2, 2, 9, 11) * 2 * mask).requires_grad_()
    end = (torch.randn(2, 2, 9, 11) * 2 * mask).requires_grad_()
    plan = PrunePlan.from_mask(mask > 0.5)
    sparse = block.gated_deform_pruned(f4, plan, start, end)
    # Reference: grid_sample, independent of the row gather both model paths use.
    dense = simple_gate(deform_conv_dense(f4, start, end, block.dconv.weight, block.dconv.bias))
    assert (sparse - dense).abs().max() <= TOL
    g = torch.randn_like(dense)
    grads_sparse = torch.autograd.grad((sparse * g).sum(), (f4, block.dconv.weight, start, end))
    grads_dense = torch.autograd.grad((dense * g).sum(), (f4, block.dconv.weight, start, end))
    for a, b in zip(grads_sparse, grads_dense):
        on_mask = a * mask[:, :1] if a.dim() == 4 and a.shape[1] == 2 else a
        ref = b * mask[:, :1] if b.dim() == 4 and b.shape[1] == 2 else b
        assert (on_mask - ref).abs().max() <= 1e-3


def test_half_precision_samples_with_full_precision_coordinates():
    """bf16 holds integers only up to 256 exactly: coordinates must not be computed in it."""
    x = torch.zeros(1, 1, 1, 600)
    x[..., 517] = 1.0
    start = torch.zeros(1, 2, 1, 600)
    end = torch.zeros(1, 2, 1, 600)
    weight, bias = torch.zeros(1, 9), torch.zeros(1)
    weight[0, 4] = 1.0  # the middle instant: zero displacement, reads the pixel itself
    out = deform_conv_dense(x.bfloat16(), start, end, weight, bias)
    assert out.dtype == torch.bfloat16
    assert out[0, 0, 0].float().argmax().item() == 517


def test_half_precision_rows_are_sampled_at_full_precision_coordinates():
    """Inference reads bf16 feature rows in place (no fp32 copy of the map) while the
    coordinates, bilinear weights and tap sums stay fp32: pixel 517 of a 600-wide row is
    found, and the result matches the fp32 one to bf16's precision, border included."""
    row_map = torch.zeros(600, 1)
    row_map[517] = 1.0
    weight, bias = torch.zeros(1, 9), torch.zeros(1)
    weight[0, 4] = 1.0  # the middle instant: zero displacement
    cols = torch.arange(600)
    zero = torch.zeros(600, 2)
    with torch.inference_mode():
        out = deform_conv_rows(row_map.bfloat16(), (1, 1, 600), cols * 0, cols * 0, cols, zero,
                               zero, weight, bias)
    assert out.dtype == torch.bfloat16
    assert out[:, 0].float().argmax().item() == 517

    torch.manual_seed(6)
    b, c, h, w = 1, 16, 12, 300
    x = torch.randn(b, c, h, w)
    start, end = torch.randn(b, 2, h, w) * 4, torch.randn(b, 2, h, w) * 4
    weight, bias, border = torch.randn(c, 9), torch.randn(c), torch.randn(c)
    grid = torch.arange(h * w)
    args = (grid * 0, grid // w, grid % w, pixel_rows(start), pixel_rows(end))
    with torch.inference_mode():
        full = deform_conv_rows(pixel_rows(x), (b, h, w), *args, weight, bias, border=border)
        half = deform_conv_rows(pixel_rows(x).bfloat16(), (b, h, w), *args, weight, bias,
                                border=border)
    assert half.dtype == torch.bfloat16
    # bf16 rounds each sampled value to 8 bits; nine taps of that stay well under 0.1
    assert (half.float() - full).abs().max() < 0.1
    assert (half.float() - full).abs().mean() < 0.01


def test_deform_rows_in_corner_blocks_equals_all_at_once(monkeypatch):
    """Inference computes the bilinear corners block by block (bounded memory); the result
    is the one of the single block that autograd uses, border included."""
    from m2ae_core import deform

    torch.manual_seed(7)
    b, c, h, w = 2, 5, 9, 13
    x = torch.randn(b, c, h, w)
    start, end = torch.randn(b, 2, h, w) * 3, torch.randn(b, 2, h, w) * 3
    weight, bias, border = torch.randn(c, 9), torch.randn(c), torch.randn(c)
    grid = torch.arange(b * h * w)
    args = (pixel_rows(x), (b, h, w), grid // (h * w), grid % (h * w) // w, grid % w,
            pixel_rows(start), pixel_rows(end), weight, bias)
    with torch.enable_grad():
        whole = deform_conv_rows(*args, border=border).detach()
    monkeypatch.setattr(deform, "CORNER_BLOCK", 7)  # 34 blocks, the last one partial
    monkeypatch.setattr(deform, "cache_chunk", lambda channels, device, itemsize=4: 3)
    with torch.inference_mode():
        blocks = deform_conv_rows(*args, border=border)
    torch.testing.assert_close(blocks, whole, atol=1e-5, rtol=1e-5)


def test_deform_rows_border_value_is_read_outside_the_image():
    torch.manual_seed(4)
    b, c, h, w = 1, 6, 9, 11
    x = torch.randn(b, c, h, w)
    start, end = torch.randn(b, 2, h, w) * 4, torch.randn(b, 2, h, w) * 4  # many taps leave
    weight, bias, border = torch.randn(c, 9), torch.randn(c), torch.randn(c)
    grid = torch.arange(h * w)
    rows = pixel_rows(x + border.view(1, c, 1, 1))  # the map is `border` plus x ...
    out = deform_conv_rows(rows, (b, h, w), grid * 0, grid // w, grid % w, pixel_rows(start),
                           pixel_rows(end), weight, bias, border=border)
    # ... and `border` outside too, so (linearity) the result is x's plus border * sum(w)
    expected = pixel_rows(deform_conv_dense(x, start, end, weight, bias)) + border * weight.sum(1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["random", "blob", "border"])
def test_folded_conv4_equals_the_unfolded_second_half(kind):
    torch.manual_seed(5)
    c, h, w = 16, 20, 26
    block = M2ASBlock(c).eval()
    randomize_(block, seed=5)
    mask = masks_for(1, h, w)[kind]
    start, end = torch.randn(1, 2, h, w) * 3 * mask, torch.randn(1, 2, h, w) * 3 * mask
    plan = PrunePlan.from_mask(mask)
    normed = torch.randn(1, h, w, c).permute(0, 3, 1, 2)
    with torch.no_grad():
        folded = block.folded_deform_pruned(normed, plan, start, end)
        reference = simple_gate(block.dconv(block.conv4(normed), start, end))
        assert folded is not None
        torch.testing.assert_close(folded, reference, atol=TOL, rtol=0)
        # the whole block in eval takes the folded path and still equals the dense formula
        x = torch.randn(1, h, w, c).permute(0, 3, 1, 2)
        torch.testing.assert_close(block(x, mask, start, end, plan, True, True),
                                   block(x, mask.float(), start, end), atol=TOL, rtol=0)


def test_fold_leaves_a_channel_whose_taps_sum_to_zero_unfolded():
    torch.manual_seed(6)
    c, h, w = 8, 12, 14
    block = M2ASBlock(c).eval()
    randomize_(block, seed=6)
    with torch.no_grad():
        block.dconv.weight[3] -= block.dconv.weight[3].mean()  # channel 3's taps sum to 0
    mask = masks_for(1, h, w)["blob"]
    start, end = torch.randn(1, 2, h, w) * mask, torch.randn(1, 2, h, w) * mask
    plan = PrunePlan.from_mask(mask)
    x = torch.randn(1, h, w, c).permute(0, 3, 1, 2)
    with torch.no_grad():
        block.dconv.weight[c + 5] -= block.dconv.weight[c + 5].mean()  # the other gate half too
        normed = block.norm2(x)
        folded = block.folded_deform_pruned(normed, plan, start, end)
        reference = simple_gate(block.dconv(block.conv4(normed), start, end))
        assert torch.isfinite(folded).all()
        torch.testing.assert_close(folded, reference, atol=TOL, rtol=0)
        torch.testing.assert_close(block(x, mask, start, end, plan, True, True),
                                   block(x, mask.float(), start, end), atol=TOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_user_mask_reaches_each_stage_grid_where_any_of_its_pixels_is_set(dtype):
    """A stage-grid pixel is masked iff any input pixel it covers is (a float mask: > 0.5);
    the padding added to reach the grid's multiple is unmasked."""
    model = build_model("small").eval()
    mask = torch.zeros(1, 1, 37, 45, dtype=dtype)
    mask[..., 5, 6] = 1  # one pixel: its stride-s block only
    mask[..., 36, 44] = 0.7 if dtype == torch.float32 else 1  # bottom-right corner pixel
    if dtype == torch.float32:
        mask[..., 20, 20] = 0.4  # below the threshold: not masked
    grids = model._stage_masks(mask)
    assert grids
    for stage, grid in grids.items():
        s = 2 ** stage
        expected = torch.zeros_like(grid)
        expected[..., 5 // s, 6 // s] = True
        expected[..., 36 // s, 44 // s] = True
        assert grid.dtype == torch.bool and torch.equal(grid, expected), stage
