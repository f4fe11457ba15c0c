"""Mask-predictor options: a global max of the context, and a blur-evidence stem."""
import pytest
import torch

from conftest import randomize_
from m2ae_core import build_model, deblur, get_config
from m2ae_core.errors import ConfigError
from m2ae_core.m2as import BlurEvidence, MaskPredictor


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

