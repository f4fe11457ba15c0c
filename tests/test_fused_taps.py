"""The compiled deformable-tap kernel (m2ae_core.fused_taps) against the PyTorch ops."""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from m2ae_core import deform, fused_taps
from m2ae_core.deform import accumulate_taps, sample_corners


@pytest.fixture(autouse=True)
def switched_on(monkeypatch):
    """The kernel is opt-in: these tests switch it on (``auto``) unless they say otherwise.
    kernel() is cached per process, so the cache is emptied before and after each test."""
    monkeypatch.setenv(fused_taps.ENV_SWITCH, "auto")
    fused_taps.kernel.cache_clear()
    yield
    monkeypatch.undo()
    fused_taps.kernel.cache_clear()


def built_kernel():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skip below gives the reason
        module = fused_taps.kernel()
    if module is None:
        pytest.skip("the fused-tap kernel cannot be built here (no C++ compiler with OpenMP "
                    "or no ninja); the PyTorch ops run instead, tested elsewhere")
    return module


def taps_case(channels: int, pixels: int = 300, height: int = 23, width: int = 31,
              seed: int = 0, outside_row: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(height * width, generator=gen)[:pixels]
    start = torch.randn(pixels, 2, generator=gen) * 4
    end = torch.randn(pixels, 2, generator=gen) * 4
    corner_rows, corner_weights = sample_corners(
        (1, height, width), torch.zeros(pixels, dtype=torch.long), flat // width, flat % width,
        start, end, 9, outside_row=outside_row)
    rows = torch.randn(height * width + 1, channels, generator=gen)
    weight = torch.randn(channels, 9, generator=gen)
    bias = torch.randn(channels, generator=gen)
    border = torch.randn(channels, generator=gen)
    return rows, corner_rows, corner_weights, weight, bias, border


def reference_taps(monkeypatch, out, *args):
    """accumulate_taps through the PyTorch ops (the kernel switched away for this call only;
    the test's other patches, the switch among them, stay)."""
    with monkeypatch.context() as patch:
        patch.setattr(fused_taps, "kernel", lambda: None)
        accumulate_taps(out, *args)
    return out


@pytest.mark.parametrize("channels", [512, 37, 1])
@pytest.mark.parametrize("with_border", [False, True])
def test_kernel_sums_the_same_taps_as_the_pytorch_ops(monkeypatch, channels, with_border):
    built_kernel()
    rows, corner_rows, corner_weights, weight, bias, border = taps_case(channels)
    border = border if with_border else None
    with torch.inference_mode():
        expected = reference_taps(monkeypatch, bias.expand(300, -1).clone(), rows,
                                  corner_rows, corner_weights, weight, border)
        out = bias.expand(300, -1).clone()
        assert fused_taps.accumulate_taps(out, rows, corner_rows, corner_weights,
                                          weight.t().contiguous(), border)
    assert (out - expected).abs().max() <= 2e-5 * expected.abs().max()
    # the taps did something: a wrong or skipped sum would not pass the check above
    assert (expected - bias).abs().max() > 0.1


def test_kernel_reads_a_slice_of_the_pixels_and_a_border_row_of_the_table(monkeypatch):
    """The banded blocks pass [taps, a:b, 4] slices (a stride of all pixels between taps) and
    corners outside the image indexing the table's last row."""
    built_kernel()
    rows, corner_rows, corner_weights, weight, bias, _ = taps_case(64, outside_row=23 * 31)
    assert (corner_rows == 23 * 31).any()  # some corners do read the border row
    part = slice(100, 220)
    args = (rows, corner_rows[:, part], corner_weights[:, part], weight)
    assert not corner_rows[:, part].is_contiguous()
    with torch.inference_mode():
        expected = reference_taps(monkeypatch, bias.expand(120, -1).clone(), *args)
        out = bias.expand(120, -1).clone()
        assert fused_taps.accumulate_taps(out, args[0], args[1], args[2],
                                          weight.t().contiguous(), None)  # the kernel ran
    assert (out - expected).abs().max() <= 2e-5 * expected.abs().max()


def test_a_corner_outside_the_table_is_an_error_not_a_stray_read():
    built_kernel()
    rows, corner_rows, corner_weights, weight, bias, _ = taps_case(16)
    corner_rows = corner_rows.clone()
    corner_rows[3, 7, 2] = rows.shape[0]  # one past the end
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside the table"):
        fused_taps.accumulate_taps(bias.expand(300, -1).clone(), rows, corner_rows,
                                   corner_weights, weight.t().contiguous(), None)


@pytest.mark.parametrize("case", ["grad", "bf16", "float64"])
def test_kernel_is_not_used_where_it_does_not_apply(case):
    rows, corner_rows, corner_weights, weight, bias, _ = taps_case(8)
    out = bias.expand(300, -1).clone()
    if case == "bf16":
        rows = rows.bfloat16()
    elif case == "float64":
        rows, out, corner_weights = rows.double(), out.double(), corner_weights.double()
    with torch.set_grad_enabled(case == "grad"):
        assert not fused_taps.applies(out, rows, corner_weights)
        before = out.clone()
        assert not fused_taps.accumulate_taps(out, rows, corner_rows, corner_weights,
                                              weight.t().contiguous().to(out.dtype), None)
        assert torch.equal(out, before)


@pytest.mark.parametrize("value", [None, "off", "0"])
def test_switched_off_it_is_neither_built_nor_used(monkeypatch, value):
    """Off is the default (DESIGN §2: pure PyTorch ops)."""
    if value is None:
        monkeypatch.delenv(fused_taps.ENV_SWITCH)
    else:
        monkeypatch.setenv(fused_taps.ENV_SWITCH, value)
    monkeypatch.setattr(fused_taps, "_build", lambda name: pytest.fail("built while off"))
    assert fused_taps.kernel() is None
    assert fused_taps.status().startswith("off")
    rows, corner_rows, corner_weights, weight, bias, _ = taps_case(8)
    with torch.inference_mode():
        assert not fused_taps.accumulate_taps(bias.expand(300, -1).clone(), rows, corner_rows,
                                              corner_weights, weight.t().contiguous(), None)


def test_an_unknown_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv(fused_taps.ENV_SWITCH, "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        fused_taps.kernel()


def unbuildable(name):
    raise OSError("no C++ compiler")


def test_a_failed_build_warns_once_and_the_pytorch_ops_run(monkeypatch, tmp_path):
    monkeypatch.setenv(fused_taps.ENV_SWITCH, "auto")
    monkeypatch.setenv(fused_taps.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(fused_taps, "_build", unbuildable)
    with pytest.warns(RuntimeWarning, match="no C.. compiler.*PyTorch ops instead"):
        assert fused_taps.kernel() is None
    assert fused_taps.status() == "unavailable (OSError: no C++ compiler)"
    rows, corner_rows, corner_weights, weight, bias, border = taps_case(8)
    with torch.inference_mode():
        out = bias.expand(300, -1).clone()
        accumulate_taps(out, rows, corner_rows, corner_weights, weight, border)
    assert (out - bias).abs().max() > 0.1  # the taps were still added


def test_a_failed_build_is_an_error_when_the_kernel_is_required(monkeypatch, tmp_path):
    monkeypatch.setenv(fused_taps.ENV_SWITCH, "on")
    monkeypatch.setenv(fused_taps.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(fused_taps, "_build", unbuildable)
    with pytest.raises(RuntimeError, match="could not be built"):
        fused_taps.kernel()


def test_a_built_kernel_is_loaded_from_the_cache_without_building(monkeypatch, tmp_path):
    built_kernel()
    built = fused_taps._built_file(fused_taps.module_name())
    monkeypatch.setenv(fused_taps.ENV_CACHE, str(tmp_path))
    fused_taps.kernel.cache_clear()
    shutil.copyfile(built, fused_taps._built_file(fused_taps.module_name()))
    monkeypatch.setattr(fused_taps, "_build", lambda name: pytest.fail("rebuilt"))
    assert fused_taps.kernel() is not None
    assert str(tmp_path) in fused_taps.status()


def test_each_cpu_gets_its_own_build(monkeypatch):
    """A kernel built with -march=native must not load on another CPU sharing the cache."""
    first = fused_taps.module_name()
    monkeypatch.setattr(fused_taps, "_cpu_flags", lambda: "fpu sse2")
    assert fused_taps.module_name() != first


def test_deform_takes_the_kernel_at_inference_only(monkeypatch):
    """accumulate_taps hands float32 inference calls to the kernel; under autograd the kernel
    declines (it has no backward) and the PyTorch ops run."""
    built_kernel()
    taken = []
    real = fused_taps.accumulate_taps
    monkeypatch.setattr(deform.fused_taps, "accumulate_taps",
                        lambda *args: taken.append(real(*args)) or taken[-1])
    rows, corner_rows, corner_weights, weight, bias, _ = taps_case(8)
    with torch.inference_mode():
        accumulate_taps(bias.expand(300, -1).clone(), rows, corner_rows, corner_weights, weight)
    weight.requires_grad_(True)
    out = bias.expand(300, -1).clone()
    accumulate_taps(out, rows, corner_rows, corner_weights, weight)
    assert taken == [True, False]
    assert out.requires_grad  # the ops' result, with a gradient towards the weights


@pytest.mark.parametrize("mask_kind", ["blob", "border"])
def test_network_with_the_kernel_equals_the_dense_network_in_bands(monkeypatch, mask_kind):
    """The whole pruned network, its M2AS blocks in bands (taps from the table, corners
    outside the image on its border row), with the kernel: equal to the dense formula."""
    built_kernel()
    from conftest import randomize_
    from m2ae_core import banded, build_model

    model = randomize_(build_model("small", width=8), seed=3).eval()
    x = torch.rand(1, 3, 64, 80)
    mask = torch.zeros(1, 1, 64, 80, dtype=torch.bool)
    if mask_kind == "blob":
        mask[:, :, 10:40, 20:60] = True
    else:  # touching the image's edges: taps leave the image
        mask[:, :, :12, :] = True
        mask[:, :, :, -10:] = True
    calls = []
    real = fused_taps.accumulate_taps
    monkeypatch.setattr(deform.fused_taps, "accumulate_taps",
                        lambda *args: calls.append(real(*args)) or calls[-1])
    monkeypatch.setattr(banded, "CPU_BAND_BYTES", 1)  # bands of a few rows
    with torch.inference_mode():
        pruned = model(x, mask=mask, pruned=True).image
        dense = model(x, mask=mask, pruned=False).image
    assert calls and all(calls)  # the kernel did the taps
    # fp32 rounding leaves ~4e-7 here; taps off by 0.1 % would leave ~2e-5
    assert (pruned - dense).abs().max() <= 5e-6
