"""Training losses (DESIGN §4): forward warping, re-blur, TV, mask CE, reconstruction, total."""
import math
from types import SimpleNamespace

import pytest
import torch

from m2ae_core.network import build_model
from m2ae_core.training.losses import (LossConfig, M2AELoss, fft_l1, forward_warp,
                                       mask_cross_entropy, reblur_loss, reconstruction_loss,
                                       sharp_pixel_log_mse, soft_jaccard_loss,
                                       ssim_loss, to_stage_grid, trajectory_loss, tv_loss,
                                       weighted_l1)
from m2ae_core.m2as import StageOutput


def _shift_keep_holes(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Reference: move content by (dx, dy) with slicing; uncovered pixels keep the source."""
    out = image.clone()
    h, w = image.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = image[..., ys, xs]
    return out


def _constant_flow(b, h, w, dx, dy):
    flow = torch.zeros(b, 2, h, w)
    flow[:, 0] = dx
    flow[:, 1] = dy
    return flow


@pytest.mark.parametrize("dx,dy", [(2, 1), (-3, 0), (0, -2), (1, -1)])
def test_forward_warp_integer_shift_is_exact(dx, dy):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 9, 11)
    warped = forward_warp(image, _constant_flow(2, 9, 11, dx, dy))
    expected = _shift_keep_holes(image, dx, dy)
    torch.testing.assert_close(warped, expected, rtol=0, atol=1e-6)
    # The interior really moved: a target pixel holds its source's value.
    assert torch.allclose(warped[..., 4, 5], image[..., 4 - dy, 5 - dx])


def test_forward_warp_zero_flow_is_identity():
    image = torch.rand(1, 4, 7, 6)
    torch.testing.assert_close(forward_warp(image, torch.zeros(1, 2, 7, 6)), image,
                               rtol=0, atol=1e-7)


def test_forward_warp_averages_collisions():
    image = torch.tensor([[[[1.0, 3.0, 5.0]]]])
    flow = torch.zeros(1, 2, 1, 3)
    flow[0, 0, 0, 0] = 1.0  # pixel 0 lands on pixel 1, which also stays put
    warped = forward_warp(image, flow)
    # Target 0 is a hole (keeps 1), target 1 averages 1 and 3, target 2 keeps 5.
    torch.testing.assert_close(warped, torch.tensor([[[[1.0, 2.0, 5.0]]]]))


def test_forward_warp_gradients_reach_flow_and_image():
    torch.manual_seed(1)
    image = torch.rand(1, 3, 8, 8, requires_grad=True)
    flow = (torch.rand(1, 2, 8, 8) * 2 - 1).mul(1.3).add(0.25).requires_grad_(True)
    target = torch.rand(1, 3, 8, 8)
    loss = (forward_warp(image, flow) - target).pow(2).mean()
    loss.backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0
    assert torch.isfinite(flow.grad).all()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_forward_warp_survives_huge_displacements():
    image = torch.rand(1, 1, 5, 5)
    flow = torch.full((1, 2, 5, 5), 1e9)
    torch.testing.assert_close(forward_warp(image, flow), image)  # all holes


def test_reblur_loss_zero_for_matching_translation():
    torch.manual_seed(2)
    sharp = torch.rand(2, 3, 12, 16)
    # start (-4, 0) -> end (4, 0): instants dx = 4 s = -4..4 (integers), no curvature.
    start = _constant_flow(2, 12, 16, -4.0, 0.0)
    end = _constant_flow(2, 12, 16, 4.0, 0.0)
    blur = torch.stack([_shift_keep_holes(sharp, k, 0) for k in range(-4, 5)]).mean(0)
    assert reblur_loss(sharp, blur, start, end) < 1e-10
    # A wrong trajectory (vertical) does not explain the blur.
    wrong = reblur_loss(sharp, blur, _constant_flow(2, 12, 16, 0, -4.0),
                        _constant_flow(2, 12, 16, 0, 4.0))
    assert wrong > 1e-3
    # ... and no motion explains it worse than the right one.
    assert reblur_loss(sharp, blur, torch.zeros_like(start), torch.zeros_like(end)) > 1e-3


def test_reblur_gradient_points_towards_true_motion():
    torch.manual_seed(3)
    sharp = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 24, 24), 3, 1, 1)
    blur = torch.stack([_shift_keep_holes(sharp, k, 0) for k in range(-4, 5)]).mean(0)
    end = _constant_flow(1, 24, 24, 3.0, 0.0).requires_grad_(True)
    start = (-end.detach()).clone().requires_grad_(True)
    reblur_loss(sharp, blur, start, end).backward()
    # Too little motion: growing |dx| lowers the loss.
    assert end.grad[:, 0].sum() < 0 < start.grad[:, 0].sum()


def test_tv_loss_hand_computed():
    start = torch.zeros(1, 2, 2, 2)
    start[0, 0, 0, 1] = 1.0
    end = torch.zeros(1, 2, 2, 2)
    # 8 horizontal and 8 vertical differences over the 4 channels, one of each equals 1.
    assert tv_loss(start, end).item() == pytest.approx(1 / 8 + 1 / 8)
    assert tv_loss(torch.full_like(start, 3.0), torch.full_like(end, -2.0)).item() == 0.0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 3, 4)
    # dx and dy both ramp by 1 per column in start; end constant -> horizontal mean 2/4.
    assert tv_loss(ramp, torch.zeros(1, 2, 3, 4)).item() == pytest.approx(0.5)


def test_mask_cross_entropy_hand_computed():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1,2,1,2]: pixel A, pixel B
    full_mask = torch.zeros(1, 1, 2, 4)
    full_mask[0, 0, 1, 0] = 1.0  # one blurred pixel in A's 2x2 block only
    small = to_stage_grid(full_mask, 2, (1, 2), "max")
    assert small.flatten().tolist() == [1.0, 0.0]
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert mask_cross_entropy(logits, small).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_mask_cross_entropy_weighs_classes_alike():
    # Three sharp pixels and one blurred pixel: balanced = mean of the two class means.
    logits = torch.tensor([[[[1.0, 0.0, 0.0, -1.0]], [[0.0, 0.0, 2.0, 0.0]]]])  # [1,2,1,4]
    small = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])
    ce = [math.log(1 + math.exp(-1.0)),  # blurred pixel, logit margin +1 for class 0
          math.log(2.0), math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-1.0))]
    plain = sum(ce) / 4
    balanced = (ce[0] + sum(ce[1:]) / 3) / 2
    assert mask_cross_entropy(logits, small).item() == pytest.approx(plain, rel=1e-6)
    assert mask_cross_entropy(logits, small, balanced=True).item() == pytest.approx(balanced,
                                                                                    rel=1e-6)
    # With one class only (a global sample), balanced equals the plain mean.
    ones = torch.ones_like(small)
    assert mask_cross_entropy(logits, ones, balanced=True).item() == pytest.approx(
        mask_cross_entropy(logits, ones).item(), rel=1e-6)


def test_soft_jaccard_loss_hand_computed():
    # Two samples of 1x2 grid pixels; probabilities of "blurred" via logit margins.
    logits = torch.zeros(2, 2, 1, 2)
    logits[0, 0, 0, 0] = math.log(3.0)  # p = 0.75 on sample 0's blurred pixel
    logits[0, 0, 0, 1] = -math.log(3.0)  # p = 0.25 on its sharp pixel
    small = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    # sample 0: inter 0.75, union 0.75 + 0.25 + 1 - 0.75 = 1.25; sample 1: p = 0.5 twice,
    # no target: inter 0, union 1. eps = 1 in both.
    expected = ((1 - 1.75 / 2.25) + (1 - 1 / 2)) / 2
    assert soft_jaccard_loss(logits, small).item() == pytest.approx(expected, rel=1e-6)
    # A confident, exact prediction costs (almost) nothing, also for an empty mask.
    exact = torch.stack((small[:, 0] * 40 - 20, -(small[:, 0] * 40 - 20)), 1)
    assert soft_jaccard_loss(exact, small).item() == pytest.approx(0.0, abs=1e-6)


def test_jaccard_weight_adds_to_the_stage_mask_term():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    stage = SimpleNamespace(mask=torch.zeros(1, 1, 4, 4), logits=logits, scale=4, stage=2,
                            start=torch.zeros(1, 2, 4, 4), end=torch.zeros(1, 2, 4, 4),
                            motion=None, local_logits=None, shake_logit=None)
    sharp = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :8] = 1.0
    out = SimpleNamespace(image=None, stages=[stage])
    base = dict(l1_weight=0.0, ssim_weight=0.0, fft_weight=0.0, offset_weight=0.0)
    plain = M2AELoss(base)(out, sharp, sharp, mask)["mask_s2"]
    both = M2AELoss({**base, "mask_jaccard_weight": 0.5})(out, sharp, sharp, mask)["mask_s2"]
    small = to_stage_grid(mask, 4, (4, 4), "max")
    assert both.item() == pytest.approx(
        plain.item() + 0.5 * soft_jaccard_loss(logits, small).item(), rel=1e-6)
    both.backward()
    assert logits.grad.abs().sum() > 0


def test_to_stage_grid_pads_like_the_network():
    x = torch.ones(1, 1, 6, 6)
    area = to_stage_grid(x, 4, (2, 2), "area")  # padded to 8x8 with zeros
    assert area.flatten().tolist() == [1.0, 0.5, 0.5, 0.25]


def test_reconstruction_terms():
    torch.manual_seed(4)
    gt = torch.rand(2, 3, 32, 32)
    zero = reconstruction_loss(gt, gt, torch.ones(2, 1, 32, 32))
    assert all(v.abs().item() < 1e-6 for v in zero.values())
    out = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
    terms = reconstruction_loss(out, gt)
    assert terms["recon"].item() == pytest.approx(
        (terms["l1"] + terms["ssim"] + 0.1 * terms["fft"]).item())
    assert 0 < ssim_loss(out, gt).item() < 1
    assert fft_l1(out, gt).item() > 0
    # Mask weighting: an error only inside the mask counts more with weight.
    err = gt.clone()
    err[..., :8, :8] += 0.5
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :16, :16] = 1
    plain = weighted_l1(err, gt, mask, 0.0)
    heavy = weighted_l1(err, gt, mask, 3.0)
    assert heavy > plain
    assert weighted_l1(err, gt, torch.ones_like(mask), 3.0).item() == pytest.approx(plain.item())


def test_sharp_pixel_log_mse_hand_computed():
    gt = torch.zeros(3, 3, 4, 4)
    out = gt.clone()
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, :, :2] = 1  # sample 0: top half blurred, its errors there do not count
    out[0, :, :2] += 0.9
    out[0, :, 2:] += 0.1  # MSE 0.01 on its sharp half
    out[1, 0] += 0.2  # sample 1: one channel of three off by 0.2, MSE 0.04 / 3
    mask[2] = 1  # sample 2: no sharp pixel, left out
    out[2] += 0.5
    expected = (10 * math.log10(0.01 + 1e-6) + 10 * math.log10(0.04 / 3 + 1e-6)) / 2
    assert sharp_pixel_log_mse(out, gt, mask).item() == pytest.approx(expected, rel=1e-5)
    # An untouched background reaches the floor: 60 dB, not infinity.
    assert sharp_pixel_log_mse(gt, gt, mask).item() == pytest.approx(-60.0)
    assert sharp_pixel_log_mse(out, gt, torch.ones_like(mask)).item() == 0.0


def test_sharp_pixel_term_moves_only_sharp_pixels():
    torch.manual_seed(3)
    gt = torch.rand(2, 3, 8, 8)
    out = (gt + 0.05 * torch.randn_like(gt)).requires_grad_()
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    sharp_pixel_log_mse(out, gt, mask).backward()
    inside = out.grad * mask
    outside = out.grad * (1 - mask)
    assert inside.abs().sum() == 0 and outside.abs().sum() > 0
    # Descending it brings the sharp pixels towards the target.
    assert ((out - 0.01 * out.grad - gt) * (1 - mask)).square().sum() < \
        ((out - gt) * (1 - mask)).square().sum()


def test_sharp_pixel_weight_adds_its_term_to_the_total():
    torch.manual_seed(6)
    model = build_model("nafnet-small", width=8).train()
    blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 4:30] = 1
    output = model(blur)
    plain = M2AELoss(LossConfig())(output, blur, sharp, mask)
    weighted = M2AELoss(LossConfig(sharp_psnr_weight=0.01))(output, blur, sharp, mask)
    assert "sharp" not in plain
    assert weighted["sharp"].item() == pytest.approx(
        sharp_pixel_log_mse(output.image, sharp, mask).item())
    assert weighted["total"].item() == pytest.approx(
        (plain["total"] + 0.01 * weighted["sharp"]).item(), rel=1e-6)


@pytest.mark.parametrize("preset", ["small", "nafnet-small"])
def test_m2ae_loss_on_tiny_model(preset):
    torch.manual_seed(5)
    model = build_model(preset, width=8).train()
    blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 4:30] = 1
    loss = M2AELoss(LossConfig())
    output = model(blur)
    terms = loss(output, blur, sharp, mask)
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    if preset == "small":
        assert {"mask", "reblur", "tv", "offset", "mask_s2", "reblur_s3"} <= set(terms)
        expected = terms["recon"] + 0.01 * terms["mask"] + terms["reblur"] + 0.01 * terms["tv"]
        assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
        grads = [p.grad for n, p in model.named_parameters() if "mask_predictor" in n]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    else:
        assert "mask" not in terms and terms["total"].item() == pytest.approx(
            terms["recon"].item())


def test_stages_only_forward_gives_the_stage_terms_of_the_full_forward():
    model = build_model("small", width=8, mask_context=2).eval()
    blur, sharp = torch.rand(2, 3, 48, 32), torch.rand(2, 3, 48, 32)
    mask = torch.zeros(2, 1, 48, 32, dtype=torch.bool)
    mask[:, :, 10:30, 5:20] = True
    full = model(blur, pruned=False)
    heads = model(blur, pruned=False, stages_only=True)
    assert heads.image is None and [s.stage for s in heads.stages] == [2, 3]
    for a, b in zip(full.stages, heads.stages):
        torch.testing.assert_close(a.logits, b.logits)
        assert torch.equal(a.mask, b.mask)
    cfg = LossConfig(l1_weight=0, ssim_weight=0, fft_weight=0, mask_weight=1, offset_weight=0)
    terms, reference = M2AELoss(cfg)(heads, blur, sharp, mask), M2AELoss(cfg)(full, blur, sharp, mask)
    assert terms["recon"].item() == 0
    torch.testing.assert_close(terms["total"], reference["total"])
    with pytest.raises(ValueError, match="stages-only"):
        M2AELoss(LossConfig())(heads, blur, sharp, mask)


def _trajectory_maps(b, h, w, start, end):
    traj = torch.zeros(b, 4, h, w)
    for i, v in enumerate((*start, *end)):
        traj[:, i] = v
    return traj


def test_trajectory_loss_hand_computed():
    target = _trajectory_maps(1, 4, 4, (-3.0, 1.0), (3.0, -1.0))
    weight = torch.ones(1, 1, 4, 4)
    start, end = target[:, :2].clone(), target[:, 2:].clone()
    assert trajectory_loss(start, end, target, weight).item() == pytest.approx(0, abs=2e-3)
    # Time reversed: the same blur, no error.
    assert trajectory_loss(end, start, target, weight).item() == pytest.approx(0, abs=2e-3)
    # Start off by (3, 4): end-point errors 5 and 0, mean 2.5.
    off = start + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert trajectory_loss(off, end, target, weight).item() == pytest.approx(2.5, abs=2e-3)
    # Only weighted pixels count; no weight at all gives 0.
    half = torch.zeros_like(weight)
    half[..., :2] = 1
    off[..., 2:] += 100
    assert trajectory_loss(off, end, target, half).item() == pytest.approx(2.5, abs=2e-3)
    assert trajectory_loss(off, end, target, torch.zeros_like(weight)).item() == 0


def test_trajectory_term_compares_on_the_stage_grid_in_grid_pixels():
    b, h, w, scale = 2, 16, 16, 4
    traj = _trajectory_maps(b, h, w, (-8.0, 4.0), (8.0, -4.0))
    mask = torch.zeros(b, 1, h, w)
    mask[..., 2:10, 1:7] = 1  # partly covers grid cells: their target is still (-8, 4) / 4
    traj = traj * mask

    def stages_with(start, end):
        grid = (h // scale, w // scale)
        logits = torch.zeros(b, 2, *grid)
        stage = StageOutput(stage=2, scale=scale, logits=logits,
                            probability=torch.full((b, 1, *grid), 0.5),
                            mask=torch.ones(b, 1, *grid), start=start, end=end)
        return type("Output", (), {"image": None, "stages": [stage]})()

    grid_start = torch.tensor([-2.0, 1.0]).view(1, 2, 1, 1).expand(b, 2, h // scale, w // scale)
    cfg = LossConfig(l1_weight=0, ssim_weight=0, fft_weight=0, mask_weight=0, offset_weight=0,
                     trajectory_weight=1)
    loss = M2AELoss(cfg)
    blur = sharp = torch.rand(b, 3, h, w)
    right = loss(stages_with(grid_start, -grid_start), blur, sharp, mask, traj,
                 torch.tensor([True, True]))
    assert right["traj"].item() == pytest.approx(0, abs=2e-3)
    assert right["total"].item() == pytest.approx(right["traj"].item())
    # In input pixels instead of grid pixels: (-8, 4) vs (-2, 1) is 3 * sqrt(5) off.
    wrong = loss(stages_with(4 * grid_start, -4 * grid_start), blur, sharp, mask, traj,
                 torch.tensor([True, True]))
    assert wrong["traj"].item() == pytest.approx(3 * math.sqrt(5), rel=1e-3)
    # Samples without a known trajectory do not count.
    unknown = loss(stages_with(4 * grid_start, -4 * grid_start), blur, sharp, mask, traj,
                   torch.tensor([False, False]))
    assert unknown["traj"].item() == 0


def test_trajectory_term_moves_a_zero_initialised_motion_analyzer():
    torch.manual_seed(2)
    model = build_model("small", width=8).train()
    analyzers = [m for n, m in model.named_modules() if n.endswith("motion_analyzer")]
    assert analyzers and all(a.weight.abs().sum() == 0 for a in analyzers)
    blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 4:28] = 1
    traj = _trajectory_maps(2, 32, 32, (-6.0, 0.0), (6.0, 0.0)) * mask
    # The trajectory term alone: the re-blur term would move the analyzer anyway. A straight
    # target (o_e = -o_s) from zero motion is the tie torch.minimum would cancel.
    cfg = LossConfig(l1_weight=0, ssim_weight=0, fft_weight=0, mask_weight=0, offset_weight=0,
                     trajectory_weight=1.0)
    terms = M2AELoss(cfg)(model(blur), blur, sharp, mask, traj, torch.tensor([True, True]))
    assert {"traj", "traj_s2", "traj_s3"} <= set(terms)
    assert terms["traj"].item() > 1  # zero motion against |o| = 6 input px
    terms["total"].backward()
    assert all(a.bias.grad.abs().sum() > 0 for a in analyzers)
    # Off by default: no term, the total is the DESIGN loss.
    plain = M2AELoss(LossConfig())(model(blur), blur, sharp, mask, traj, torch.tensor([True, True]))
    assert "traj" not in plain


def test_trajectory_term_trains_the_analyzer_where_the_sampled_mask_is_off():
    torch.manual_seed(3)
    model = build_model("small", width=8).train()
    with torch.no_grad():  # every mask head sure that nothing is blurred: the gate is 0
        for name, param in model.named_parameters():
            if "mask_predictor.mlp_out.4" in name:
                param.zero_()
                if name.endswith("bias"):
                    param.copy_(torch.tensor([-50.0, 50.0]))
    blur, sharp = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    traj = _trajectory_maps(1, 32, 32, (-4.0, 2.0), (4.0, -2.0))
    output = model(blur)
    assert all(s.mask.sum() == 0 and s.start.abs().sum() == 0 for s in output.stages)
    cfg = LossConfig(l1_weight=0, ssim_weight=0, fft_weight=0, mask_weight=0, offset_weight=0,
                     trajectory_weight=1)
    M2AELoss(cfg)(output, blur, sharp, mask, traj, torch.tensor([True]))["total"].backward()
    analyzers = [m for n, m in model.named_modules() if n.endswith("motion_analyzer")]
    assert all(a.bias.grad.abs().sum() > 0 for a in analyzers)
