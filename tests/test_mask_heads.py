"""Mask-predictor options: a global max of the context, a blur-evidence stem, a shake head."""
import pytest
import torch

from conftest import randomize_
from m2ae_core import build_model, deblur, get_config
from m2ae_core.errors import ConfigError
from m2ae_core.m2as import BlurEvidence, MaskPredictor, combine_shake
from m2ae_core.training.losses import M2AELoss
from m2ae_core.weights import infer_config


def _with_heads(base, **heads):
    """A model with extra head parts, carrying ``base``'s weights (new parts stay fresh)."""
    model = build_model(get_config(base.config, **heads)).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing
    return model


def test_new_head_parts_start_as_the_model_they_extend():
    base = randomize_(build_model("small", width=8, mask_context=2), seed=3).eval()
    extended = _with_heads(base, mask_global_max=True, mask_evidence=16)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before, after = base(image), extended(image)
    assert torch.equal(before.image, after.image)
    for old, new in zip(before.stages, after.stages):
        assert torch.equal(old.logits, new.logits)


def test_global_max_sees_the_whole_image():
    # One bright spot far away changes every pixel's logits through the max (a mean of a
    # single pixel over 48x48 would barely move them).
    predictor = randomize_(MaskPredictor(8, global_max=True), seed=1).eval()
    features = torch.zeros(1, 8, 48, 48)
    spotted = features.clone()
    spotted[..., 40, 40] = 50.0
    with torch.no_grad():
        a, b = predictor(features), predictor(spotted)
    assert (a[..., :10, :10] - b[..., :10, :10]).abs().min() > 1e-3
    plain = randomize_(MaskPredictor(8), seed=1).eval()
    with torch.no_grad():
        moved_by_mean = (plain(features) - plain(spotted))[..., :10, :10].abs().max()
    assert moved_by_mean < (a - b)[..., :10, :10].abs().min()


def test_evidence_is_needed_when_the_predictor_takes_it():
    predictor = MaskPredictor(8, evidence_channels=4)
    with pytest.raises(ValueError, match="evidence"):
        predictor(torch.rand(1, 8, 6, 6))
    assert predictor(torch.rand(1, 8, 6, 6), torch.rand(1, 4, 6, 6)).shape == (1, 2, 6, 6)


def test_evidence_stem_works_at_stride_four_and_pools_to_deeper_grids():
    stem = BlurEvidence(16)
    out = stem(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 16, 16, 24)
    assert BlurEvidence.at_stride(out, 4) is out
    pooled = BlurEvidence.at_stride(out, 8)
    assert pooled.shape == (2, 16, 8, 12)
    assert torch.allclose(pooled[..., 0, 0], out[..., :2, :2].mean(dim=(-2, -1)))


def test_evidence_changes_the_mask_and_is_skipped_for_a_given_mask(monkeypatch):
    model = randomize_(build_model("small", width=8, mask_global_max=True, mask_evidence=8),
                       seed=4).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        with_evidence = model(image).stages[0].logits
        zeroed = model.mask_evidence.layers[-1]
        torch.nn.init.zeros_(zeroed.weight), torch.nn.init.zeros_(zeroed.bias)
        without = model(image).stages[0].logits
    assert not torch.allclose(with_evidence, without)
    calls = []
    monkeypatch.setattr(BlurEvidence, "forward", lambda self, x: calls.append(1) or x[:, :0])
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    deblur(model, image, mask=mask)
    assert calls == []  # a given mask replaces the prediction: the stem does not run


def test_evidence_needs_stride_four_stages():
    with pytest.raises(ConfigError, match="stride 4"):
        get_config("small", m2as_stages=(1, 3), mask_evidence=8)
    with pytest.raises(ConfigError, match="mask_evidence"):
        get_config("nafnet-small", mask_evidence=8)



def test_combine_shake_is_a_noisy_or_of_the_two_probabilities():
    local = torch.tensor([[[[2.0, -1.0, 0.0]], [[0.0, 1.0, 30.0]]]])  # [1,2,1,3]
    shake = torch.tensor([[[[-0.5]]]])
    p_local = torch.softmax(local, 1)[:, 0]
    p_shake = torch.sigmoid(shake)[:, 0]
    expected = 1 - (1 - p_local) * (1 - p_shake)
    combined = torch.softmax(combine_shake(local, shake), 1)
    assert torch.allclose(combined[:, 0], expected, atol=1e-6)
    assert torch.allclose(combined.sum(1), torch.ones(1, 1, 3))
    # A certain shake marks every pixel; a certain "no shake" leaves the local decision.
    assert torch.allclose(torch.softmax(combine_shake(local, torch.full_like(shake, 40.0)), 1)[:, 0],
                          torch.ones(1, 1, 3))
    assert torch.allclose(torch.softmax(combine_shake(local, torch.full_like(shake, -40.0)), 1),
                          torch.softmax(local, 1), atol=1e-6)


def test_shake_head_needs_the_global_max_and_is_read_back_from_weights():
    with pytest.raises(ConfigError, match="mask_global_max"):
        get_config("small", mask_shake_head=True)
    with pytest.raises(ValueError, match="global_max"):
        MaskPredictor(8, shake_head=True)
    model = build_model("small", width=8, mask_global_max=True, mask_shake_head=True)
    assert infer_config(model.state_dict()).mask_shake_head
    assert not infer_config(build_model("small", width=8, mask_global_max=True)
                            .state_dict()).mask_shake_head


def test_shake_head_starts_near_the_local_mask_and_can_mark_a_whole_frame():
    base = randomize_(build_model("small", width=8, mask_global_max=True), seed=3).eval()
    extended = _with_heads(base, mask_shake_head=True)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before, after = base(image), extended(image)
        for old, new in zip(before.stages, after.stages):
            # p_shake = sigmoid(-4) at start: the combined probability moves by < 0.02
            assert (new.probability - old.probability).abs().max() < 0.02
            assert new.shake_logit.shape == (1, 1, 1, 1)
        for stage in extended.encoders:
            if hasattr(stage, "mask_predictor"):
                torch.nn.init.constant_(stage.mask_predictor.shake_head[-1].bias, 40.0)
        shaken = extended(image)
    assert all(bool(s.mask.all()) for s in shaken.stages)


def test_shake_head_loss_keeps_shaken_frames_out_of_the_pixel_term():
    torch.manual_seed(0)
    model = build_model("small", width=8, mask_global_max=True, mask_shake_head=True).train()
    loss = M2AELoss(dict(l1_weight=0.0, ssim_weight=0.0, fft_weight=0.0, offset_weight=0.0))
    image = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 8:24, 8:24] = 1.0
    mask[1] = 1.0
    is_global = torch.tensor([False, True])
    out = model(image, stages_only=True)
    terms = loss(out, image, image, mask, is_global=is_global)
    info = out.stages[0]
    small = torch.nn.functional.max_pool2d(mask, info.scale)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        info.shake_logit.flatten(), is_global.float())
    ce_local = torch.nn.functional.cross_entropy(info.local_logits[:1],
                                                 (small[:1, 0] <= 0.5).long())
    assert terms[f"mask_s{info.stage}"].item() == pytest.approx((bce + ce_local).item(), rel=1e-5)
    # Without is_global the all-ones mask marks the second frame as shaken: same value.
    assert loss(out, image, image, mask)[f"mask_s{info.stage}"].item() == pytest.approx(
        terms[f"mask_s{info.stage}"].item(), rel=1e-6)
    terms["total"].backward()
    head = model.encoders[info.stage].mask_predictor.shake_head[0].weight
    assert head.grad is not None and head.grad.abs().sum() > 0
