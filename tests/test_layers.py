"""1x1 convolutions: oneDNN's convolution at inference on CPU, a matmul otherwise; same values."""
import pytest
import torch
import torch.nn.functional as F

from m2ae_core.layers import Conv1x1, linear_rows, onednn_pointwise, pixel_rows
from m2ae_core.masked_conv import PrunePlan, pointwise_table


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_linear_rows_equals_linear_at_inference(monkeypatch, dtype, tol):
    from m2ae_core import layers

    monkeypatch.setattr(layers, "cpu_has_native_bf16", lambda: True)  # the convolution
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(37, 12, generator=gen).to(dtype)
    weight = torch.randn(20, 12, generator=gen).to(dtype)
    bias = torch.randn(20, generator=gen).to(dtype)
    with torch.inference_mode():
        assert onednn_pointwise(rows)
        out = linear_rows(rows, weight, bias)
        unbiased = linear_rows(rows, weight)
    reference = F.linear(rows.float(), weight.float(), bias.float())
    assert out.shape == (37, 20) and out.dtype == dtype
    assert (out.float() - reference).abs().max() <= tol * reference.abs().max()
    assert (unbiased.float() + bias.float() - reference).abs().max() <= tol * reference.abs().max()


def test_linear_rows_falls_back_to_the_matmul_where_the_convolution_does_not_apply():
    weight, bias = torch.randn(6, 4), torch.randn(6)
    strided = torch.randn(4, 10)[:, ::2].t()  # rows not contiguous
    with torch.inference_mode():
        assert torch.allclose(linear_rows(strided, weight, bias), F.linear(strided, weight, bias))
        assert linear_rows(torch.empty(0, 4), weight, bias).shape == (0, 6)
    with torch.enable_grad():  # training keeps the matmul
        assert not onednn_pointwise(torch.zeros(1))
    with torch.inference_mode():
        assert not onednn_pointwise(torch.zeros(1, dtype=torch.float64))
        assert not onednn_pointwise(torch.zeros(1, dtype=torch.float16))


def test_bf16_takes_the_convolution_only_where_the_cpu_computes_it(monkeypatch):
    from m2ae_core import layers

    with torch.inference_mode():
        monkeypatch.setattr(layers, "cpu_has_native_bf16", lambda: False)
        assert not onednn_pointwise(torch.zeros(1, dtype=torch.bfloat16))
        assert onednn_pointwise(torch.zeros(1))
        monkeypatch.setattr(layers, "cpu_has_native_bf16", lambda: True)
        assert onednn_pointwise(torch.zeros(1, dtype=torch.bfloat16))


def test_conv1x1_gives_the_same_values_by_either_kernel_and_keeps_channels_last():
    torch.manual_seed(0)
    conv = Conv1x1(8, 16)
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    training = conv(x)  # grad enabled: the matmul
    with torch.inference_mode():
        inference = conv(x)  # oneDNN's convolution
    assert (inference - training.detach()).abs().max() <= 1e-5
    assert inference.is_contiguous(memory_format=torch.channels_last)
    assert pixel_rows(inference).data_ptr() == inference.data_ptr()  # rows are a view
    training.sum().backward()
    assert conv.weight.grad is not None


@pytest.mark.parametrize("inference", [True, False])
def test_pointwise_table_has_a_zero_last_row_in_both_modes(inference):
    torch.manual_seed(0)
    conv = Conv1x1(6, 12)
    mask = torch.zeros(1, 1, 9, 11, dtype=torch.bool)
    mask[0, 0, 2:5, 3:6] = True
    plan = PrunePlan.from_mask(mask)
    assert plan.table_index.numel() == plan.dilated + 1
    rows = torch.randn(99, 6)
    with torch.inference_mode(inference):
        table = pointwise_table(rows.index_select(0, plan.table_index), conv)
    assert table.shape == (plan.dilated + 1, 12)
    assert torch.equal(table[-1], torch.zeros(12))
    expected = F.linear(rows.index_select(0, plan.dilated_index), conv.weight.view(12, 6),
                        conv.bias)
    assert (table[:-1] - expected.detach()).abs().max() <= 1e-5
