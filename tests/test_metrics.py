"""Metrics (DESIGN §6) checked against hand-computed values."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from m2ae_core import metrics
from m2ae_core.metrics import (endpoint_error, mask_f1, mask_iou, psnr, quantize, sharp_psnr,
                               ssim, ssim_map, weighted_psnr, weighted_ssim)

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def _u8(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint8)


def test_psnr_one_wrong_pixel():
    gt = np.full((4, 4, 3), 100, np.uint8)
    out = gt.copy()
    out[1, 2, 0] = 110  # one channel of one pixel off by 10 grey levels
    # MSE = 10^2 / (4*4*3) = 100/48
    expected = 10 * math.log10(255 ** 2 / (100 / 48))
    assert psnr(out, gt) == pytest.approx(expected, abs=1e-12)
    assert psnr(gt, gt) == math.inf


def test_psnr_accepts_layouts_and_kinds():
    gt = np.full((4, 4, 3), 100, np.uint8)
    out = gt.copy()
    out[0, 0] = 104  # three channels off by 4: MSE = 3*16/48 = 1
    expected = 10 * math.log10(255 ** 2)
    assert psnr(out, gt) == pytest.approx(expected)
    chw = torch.from_numpy(out).permute(2, 0, 1).float() / 255
    assert psnr(chw, gt) == pytest.approx(expected)
    assert psnr(chw[None], torch.from_numpy(gt).permute(2, 0, 1)) == pytest.approx(expected)
    assert psnr(Image.fromarray(out), Image.fromarray(gt)) == pytest.approx(expected)
    rgba = np.concatenate([out, np.zeros((4, 4, 1), np.uint8)], axis=2)
    assert psnr(rgba, gt) == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ in size"):
        psnr(out[:3], gt)


def test_quantisation_to_8_bit():
    gt = np.full((12, 12, 3), 0.5, np.float32)
    # 0.5*255 = 127.5 -> 128; 0.501*255 = 127.76 -> 128: identical after quantisation.
    assert psnr(gt + 0.001, gt) == math.inf
    assert ssim(gt + 0.001, gt) == 1.0
    assert np.array_equal(quantize(gt), np.full((12, 12, 3), 128.0))
    # Clamping: values outside 0..1 count as 0 / 255.
    assert np.array_equal(quantize(np.array([[-0.5, 1.7]])), np.array([[[0.0], [255.0]]]))
    # Round half up: 0.5/255 -> 1, just below -> 0.
    assert quantize(np.array([[0.5 / 255]]))[0, 0, 0] == 1.0
    assert quantize(np.array([[0.49 / 255]]))[0, 0, 0] == 0.0
    # uint16 goes through 0..1 first.
    assert quantize(np.array([[65535, 0]], np.uint16)).ravel().tolist() == [255.0, 0.0]
    # A float image equals its 8-bit rendering.
    rng = np.random.default_rng(0)
    f = rng.random((16, 16, 3)).astype(np.float32)
    u8 = np.floor(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert psnr(f, u8) == math.inf


def test_weighted_psnr_is_psnr_of_masked_pixels_by_hand():
    gt = np.zeros((4, 4, 3), np.uint8)
    out = gt.copy()
    out[0, 0] = (3, 0, 0)
    out[0, 1] = (0, 6, 0)
    out[3, 3] = (9, 9, 9)  # outside the mask
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True
    # Masked squared errors: 9 + 36 = 45 over 2 pixels * 3 channels = 6 values.
    expected = 10 * math.log10(255 ** 2 / (45 / 6))
    assert weighted_psnr(out, gt, mask) == pytest.approx(expected, abs=1e-12)
    # Same as plain PSNR of the masked pixels only.
    assert weighted_psnr(out, gt, mask) == pytest.approx(psnr(out[0:1, :2], gt[0:1, :2]))
    # Outside the mask: 3*81 = 243 over 14 pixels * 3 channels.
    assert sharp_psnr(out, gt, mask) == pytest.approx(10 * math.log10(255 ** 2 / (243 / 42)))
    # The mask kinds: uint8 0/255, float 0/1, torch bool.
    assert weighted_psnr(out, gt, mask.astype(np.uint8) * 255) == pytest.approx(expected)
    assert weighted_psnr(out, gt, mask.astype(np.float32)) == pytest.approx(expected)
    assert weighted_psnr(out, gt, torch.from_numpy(mask)[None]) == pytest.approx(expected)
    # Full mask = plain PSNR; empty mask = nan; an all-blurred mask leaves no sharp pixel.
    full = np.ones((4, 4), bool)
    assert weighted_psnr(out, gt, full) == pytest.approx(psnr(out, gt))
    assert math.isnan(weighted_psnr(out, gt, ~full))
    assert math.isnan(sharp_psnr(out, gt, full))
    assert sharp_psnr(out, gt, ~full) == pytest.approx(psnr(out, gt))
    assert weighted_psnr(gt, gt, mask) == math.inf
    with pytest.raises(ValueError, match="mask is 3x4"):
        weighted_psnr(out, gt, mask[:3])


def test_ssim_identical_is_one():
    rng = np.random.default_rng(1)
    img = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim_map(img, img).shape == (10, 14, 3)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img[:10], img[:10])


def test_ssim_constant_images_closed_form():
    # Constant images: every variance/covariance is zero, SSIM = luminance term only.
    a, b = 100.0, 140.0
    gt = np.full((16, 16, 3), int(a), np.uint8)
    out = np.full((16, 16, 3), int(b), np.uint8)
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(out, gt) == pytest.approx(expected, abs=1e-12)


def test_ssim_constant_offset_on_a_ramp_closed_form():
    # gt(x) = 40 + 2x along the columns; out = gt + 20. The Gaussian window is symmetric, so the
    # local mean of a linear ramp is the value at the window centre, and both images have the
    # same structure (sigma_x = sigma_y = sigma_xy): the contrast-structure term is exactly 1
    # and each map value is the luminance term (2 mu (mu+20) + C1) / (mu^2 + (mu+20)^2 + C1).
    h, w, d = 15, 30, 20.0
    ramp = 40 + 2 * np.arange(w)
    gt = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2).astype(np.uint8)
    out = (gt + int(d)).astype(np.uint8)
    mu = 40.0 + 2.0 * (np.arange(w - 10) + 5)  # centre columns of the valid windows
    lum = (2 * mu * (mu + d) + C1) / (mu ** 2 + (mu + d) ** 2 + C1)
    smap = ssim_map(out, gt)
    assert smap.shape == (h - 10, w - 10, 3)
    assert np.allclose(smap, lum[None, :, None], atol=1e-9)
    assert ssim(out, gt) == pytest.approx(lum.mean(), abs=1e-9)


def test_weighted_ssim():
    rng = np.random.default_rng(2)
    gt = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    out = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    full = np.ones((24, 24), bool)
    assert weighted_ssim(out, gt, full) == pytest.approx(ssim(out, gt), abs=1e-12)
    # Only mask pixels inside the valid area count: a mask on the 5-pixel border is empty.
    border = full.copy()
    border[5:-5, 5:-5] = False
    assert math.isnan(weighted_ssim(out, gt, border))
    # A single valid mask pixel picks the map value at (row-5, col-5), averaged over channels.
    one = np.zeros((24, 24), bool)
    one[7, 12] = True
    assert weighted_ssim(out, gt, one | border) == pytest.approx(
        ssim_map(out, gt)[2, 7].mean(), abs=1e-12)


def test_mask_iou_and_f1_by_hand():
    pred = np.array([[1, 1, 0],
                     [0, 1, 0]], bool)
    gt = np.array([[1, 0, 0],
                   [0, 1, 1]], bool)
    # intersection 2, union 4, |P| = 3, |G| = 3
    assert mask_iou(pred, gt) == pytest.approx(2 / 4)
    assert mask_f1(pred, gt) == pytest.approx(2 * 2 / 6)
    empty = np.zeros((2, 3), bool)
    assert mask_iou(empty, empty) == 1.0 and mask_f1(empty, empty) == 1.0
    assert mask_iou(empty, gt) == 0.0 and mask_f1(pred, empty) == 0.0
    assert mask_iou(gt, gt) == 1.0 and mask_f1(gt, gt) == 1.0


def test_endpoint_error_by_hand():
    gt = np.zeros((2, 2, 1, 2), np.float32)
    pred = np.zeros_like(gt)
    # pixel 0: start off by (3, 4) -> 5, end exact -> EPE (5 + 0)/2 = 2.5
    pred[0, :, 0, 0] = (3, 4)
    # pixel 1: start exact, end off by (0, -1) -> EPE (0 + 1)/2 = 0.5
    pred[1, :, 0, 1] = (0, -1)
    assert endpoint_error(pred, gt) == pytest.approx((2.5 + 0.5) / 2)
    assert endpoint_error(pred, gt, np.array([[True, False]])) == pytest.approx(2.5)
    assert endpoint_error(pred.reshape(4, 1, 2), torch.from_numpy(gt)) == pytest.approx(1.5)
    assert math.isnan(endpoint_error(pred, gt, np.zeros((1, 2), bool)))
    # Reversed time: start and end swapped.
    g = np.zeros((2, 2, 1, 1))
    g[0, :, 0, 0], g[1, :, 0, 0] = (-2, 0), (2, 0)
    swapped = g[::-1].copy()
    assert endpoint_error(swapped, g) == pytest.approx(4.0)
    assert endpoint_error(swapped, g, symmetric=True) == 0.0
    with pytest.raises(ValueError):
        endpoint_error(np.zeros((2, 1, 2)), g)


def test_module_constants_match_the_protocol():
    assert metrics.SSIM_WINDOW == 11 and metrics.SSIM_SIGMA == 1.5
    assert metrics.SSIM_C1 == pytest.approx(C1) and metrics.SSIM_C2 == pytest.approx(C2)
    assert metrics.SSIM_MARGIN == 5


def test_ssim_and_weighted_from_one_map():
    rng = np.random.default_rng(3)
    gt = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
    out = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
    mask = rng.random((20, 20)) > 0.5
    plain, weighted = metrics.ssim_and_weighted(out, gt, mask)
    assert plain == ssim(out, gt) and weighted == weighted_ssim(out, gt, mask)
    assert math.isnan(metrics.ssim_and_weighted(out, gt)[1])
