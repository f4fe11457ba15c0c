"""What dtype the network runs in: names, and the "auto" rule (bf16 only on CPUs with native bf16)."""
import pytest
import torch

from m2ae_core import precision
from m2ae_core.errors import ConfigError
from m2ae_core.procfs import cpuinfo_field

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw{extra}
bogomips\t: 4800.00
"""


@pytest.mark.parametrize("extra, native", [("", False), (" avx512_bf16", True),
                                           (" amx_tile amx_bf16", True), (" avx512_bf16x", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    info = tmp_path / f"cpuinfo{len(extra)}{native}"
    info.write_text(CPUINFO.format(extra=extra))
    assert precision.cpu_has_native_bf16(str(info)) is native


def test_cpuinfo_field_reads_the_first_cpus_whole_value(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) @ 2.30GHz: rev 2\n"
                    "flags\t\t: fpu sse2\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpuinfo_field("model name", str(info)) == "Intel(R) Xeon(R) @ 2.30GHz: rev 2"
    assert cpuinfo_field("flags", str(info)) == "fpu sse2"
    assert cpuinfo_field("flag", str(info)) is None  # whole keys only
    assert cpuinfo_field("flags", str(tmp_path / "absent")) is None


def test_unreadable_cpuinfo_means_no_native_bf16(tmp_path):
    assert precision.cpu_has_native_bf16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert precision.resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert precision.resolve_dtype("AUTO", cpu) == precision.auto_dtype(cpu)
    assert precision.resolve_dtype("auto", torch.device("cuda")) == torch.float32


def test_names_and_errors():
    cpu = torch.device("cpu")
    assert precision.resolve_dtype(None, cpu) == torch.float32  # the library's default
    assert precision.resolve_dtype("torch.bfloat16", cpu) == torch.bfloat16
    assert precision.resolve_dtype(" fp16 ", cpu) == torch.float16
    assert precision.resolve_dtype(torch.float64, cpu) == torch.float64
    with pytest.raises(ConfigError, match="'auto'"):
        precision.resolve_dtype("int8", cpu)
    with pytest.raises(ConfigError, match="floating point"):
        precision.resolve_dtype(torch.int32, cpu)
