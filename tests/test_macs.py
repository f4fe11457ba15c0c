"""MAC accounting (ptflops-style multiply-accumulates, DESIGN §3)."""
import pytest
import torch

from m2ae_core import build_model, get_config
from m2ae_core.layers import GlobalMean
from m2ae_core.macs import StagePixels, conv_macs, count_macs, naf_block_macs, stage_head_macs
from m2ae_core.m2as import MaskPredictor


def test_nafnet_w32_at_paper_resolution_is_764_gmac():
    macs = count_macs(get_config("nafnet-w32"), 1436, 2152)
    assert macs == pytest.approx(764e9, rel=0.01)


def hooked_conv_macs(model, image):
    """Independent count: forward hooks on every conv and pool of a plain network."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (k * module.in_channels // module.groups + (module.bias is not None))

    def pool_hook(module, inputs, output):
        nonlocal total
        total += inputs[0].numel()

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, GlobalMean):
            m.register_forward_hook(pool_hook)
    with torch.no_grad():
        model(image)
    return total


def test_analytic_count_matches_hooks_on_plain_network():
    model = build_model("nafnet-small").eval()
    assert count_macs(model.config, 45, 70) == hooked_conv_macs(model, torch.rand(1, 3, 45, 70))


def test_mask_context_units_are_counted():
    # the context units are convs only: hooks on them count exactly what the formula adds
    predictor = MaskPredictor(16, context_units=3).eval()
    features = torch.rand(1, 16, 12, 20)
    hooked = hooked_conv_macs(predictor.context, features)
    assert hooked > 0
    assert stage_head_macs(16, 240, 3) - stage_head_macs(16, 240, 0) == hooked
    config = get_config("small", mask_context=3)
    assert count_macs(config, 64, 64) > count_macs(get_config("small"), 64, 64)


def test_global_max_evidence_and_shake_head_are_counted():
    # hooks count every conv and pool module; the functional average pool that brings the
    # stride-4 evidence to the stride-8 stage is added by hand
    base = get_config("small", mask_context=2)
    extended = get_config("small", mask_context=2, mask_global_max=True, mask_evidence=32,
                          mask_shake_head=True)
    h, w = 48, 80
    image = torch.rand(1, 3, h, w)

    class Dense(torch.nn.Module):  # the pruned path's convs depend on the random masks
        def __init__(self, config):
            super().__init__()
            self.net = build_model(config).eval()

        def forward(self, x):
            return self.net(x, pruned=False)

    hooked = hooked_conv_macs(Dense(extended), image) - hooked_conv_macs(Dense(base), image)
    stage3_pool = (h // 4) * (w // 4) * 32
    assert count_macs(extended, h, w) - count_macs(base, h, w) == hooked + stage3_pool
    # a given mask skips the stem, both projections and the shake head
    assert count_macs(extended, h, w, mask_given=True) == count_macs(base, h, w, mask_given=True)


def test_pruned_counts_shrink_with_the_mask_and_never_exceed_dense():
    config = get_config("paper")
    grid = (1440 // 8) * (2160 // 8)
    dense = count_macs(config, 1436, 2152)
    ten = count_macs(config, 1436, 2152, {3: StagePixels(grid // 10, int(grid * 0.12))})
    empty = count_macs(config, 1436, 2152, {3: StagePixels(0, 0)})
    full = count_macs(config, 1436, 2152, {3: StagePixels(grid, grid)})
    assert empty < ten < dense
    assert full == dense
    plain = count_macs(get_config("nafnet-w32"), 1436, 2152)
    assert ten <= 0.82 * plain


def test_block_formula():
    # conv1 + conv2 + pool + sca + conv3 + conv4 + conv5 for C=4 on 10 pixels
    expected = 10 * 8 * 5 + 10 * 8 * 10 + 10 * 4 + 4 * 5 + 10 * 4 * 5 + 10 * 8 * 5 + 10 * 4 * 5
    assert naf_block_macs(4, 10) == expected
    assert conv_macs(10, 4, 8, 3, groups=1, bias=False) == 10 * 8 * 36


def test_a_given_mask_drops_exactly_the_mask_predictors():
    config = get_config("small", mask_context=2)
    h, w = 64, 96
    dropped = 0
    channels, pixels = config.width, h * w
    for stage in range(len(config.enc_blocks)):
        if stage in config.m2as_stages:
            head = stage_head_macs(channels, pixels, config.mask_context)
            analyzer = stage_head_macs(channels, pixels, config.mask_context, predictor_runs=False)
            assert analyzer == conv_macs(pixels, channels, 4, 3)
            # the predictor part is what hooks on a MaskPredictor count
            predictor = MaskPredictor(channels, config.mask_context).eval()
            grid_h, grid_w = h >> stage, w >> stage
            assert head - analyzer == hooked_conv_macs(
                predictor, torch.rand(1, channels, grid_h, grid_w)) * pixels // (grid_h * grid_w)
            dropped += head - analyzer
        channels, pixels = 2 * channels, pixels // 4
    assert count_macs(config, h, w) - count_macs(config, h, w, mask_given=True) == dropped
