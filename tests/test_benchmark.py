"""``m2ae bench`` (issue 6): masks, model specs, the both-halves prototype, the summary's
PASS/MISS logic, and a tiny grid end to end (one fresh process per cell)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import randomize_
from m2ae_core import build_model
from m2ae_core.benchmark import report
from m2ae_core.benchmark.child import run_in_child
from m2ae_core.benchmark.design import design_rows, estimate_both_halves
from m2ae_core.benchmark.halves import mask_both_halves_
from m2ae_core.benchmark.models import parse_model_spec
from m2ae_core.benchmark.options import add_bench_arguments, canonical_command, validate
from m2ae_core.benchmark.profiling import breakdown, profile_cell
from m2ae_core.benchmark.rounds import merge_rounds
from m2ae_core.benchmark.summary import summarize
from m2ae_core.benchmark.tiled import compare_tiled
from m2ae_core.benchmark.workload import blob_mask, parse_size
from m2ae_core.cli import main
from m2ae_core.errors import ConfigError


def components(mask: np.ndarray) -> int:
    """Number of 4-connected components of a 2-D bool array (flood fill)."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        count += 1
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


# --------------------------------------------------------------------------- workload

@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5])
def test_blob_mask_has_the_fraction_and_is_a_few_blobs(fraction):
    mask = blob_mask(384, 512, fraction, seed=3)
    assert mask.shape == (1, 1, 384, 512) and mask.dtype == torch.bool
    assert abs(float(mask.float().mean()) - fraction) < 0.002
    arr = mask[0, 0].numpy()
    assert 1 <= components(arr) <= 12  # blobs, not scattered pixels
    assert components(~arr) <= 12  # and no speckle holes


def test_blob_masks_edge_cases_nested_and_big():
    assert not blob_mask(48, 64, 0.0).any() and blob_mask(48, 64, 1.0).all()
    small, large = blob_mask(96, 128, 0.1, seed=1), blob_mask(96, 128, 0.5, seed=1)
    assert bool((large | ~small).all())  # same seed: the 10 % blobs lie inside the 50 % ones
    big = blob_mask(1436, 2152, 0.1)  # above torch.quantile's input limit per 2 frames
    assert abs(float(big.float().mean()) - 0.1) < 1e-4
    with pytest.raises(ValueError):
        blob_mask(8, 8, 1.5)


def test_parse_size_is_width_by_height():
    assert parse_size("1280x720") == (720, 1280)
    assert parse_size("512") == (512, 512)
    with pytest.raises(ValueError):
        parse_size("big")


# --------------------------------------------------------------------------- model specs

def test_model_specs():
    pruned, dense = parse_model_spec("paper-pruned"), parse_model_spec("paper-dense")
    assert (pruned.mode, dense.mode) == ("pruned", "dense")
    assert pruned.pair_key == dense.pair_key
    assert parse_model_spec("nafnet-w32").mode == "plain"
    assert parse_model_spec("default").mode == "pruned"
    spec = parse_model_spec("paper-pruned/m2as=1,2,3")
    assert spec.m2as_stages == (1, 2, 3) and spec.pair_key != pruned.pair_key
    assert parse_model_spec("paper-pruned/both-halves").both_halves
    assert parse_model_spec("nafnet-small/m2as=3").mode == "pruned"
    for bad in ("nope", "nafnet-w32-pruned", "paper-dense/both-halves", "paper/colour",
                "default/m2as=2", "paper/m2as=x"):
        with pytest.raises(ConfigError):
            parse_model_spec(bad)


def test_both_halves_prototype_equals_its_dense_formula():
    torch.manual_seed(0)
    model = mask_both_halves_(randomize_(build_model("small", width=8), seed=2)).eval()
    image = torch.rand(1, 3, 64, 80)
    for fraction in (0.0, 0.2, 1.0):
        mask = blob_mask(64, 80, fraction, seed=4)
        with torch.inference_mode():
            pruned = model(image, mask=mask, pruned=True).image
            dense = model(image, mask=mask, pruned=False).image
        assert float((pruned - dense).abs().max()) <= 1e-4, fraction


# --------------------------------------------------------------------------- summary

def _cell(model, fraction, wall, macs, rss, mode="pruned", size="2152x1436"):
    return {"model": model, "mode": mode, "size_label": size, "fraction": fraction,
            "status": "ok", "wall_s": wall, "macs": macs, "peak_rss_bytes": rss,
            "check": {"max_abs_diff": 1e-6, "ok": True, "against": "x"} if mode == "pruned" else None}


def _data(times, macs, rss, base_wall=60.0, base_rss=5e9, tiled_rss=3e9, psnr=45.0,
          size="2152x1436"):
    cells = [_cell("paper-pruned", f, t, macs, rss, size=size) for f, t in times.items()]
    cells.append(_cell("nafnet-w32", None, base_wall, 764e9, base_rss, mode="plain", size=size))
    cells.append({"model": "paper-dense", "mode": "dense", "size_label": size, "fraction": 10,
                  "status": "error", "error": "killed"})
    return {"settings": {"device": "cpu"}, "cells": cells,
            "tiled": {"model": "paper-pruned", "size_label": "4096x3072", "tile": 1024,
                      "compare_size_label": "1536x1152",
                      "run": {"status": "ok", "peak_rss_bytes": tiled_rss},
                      "compare": {"status": "ok", "psnr_8bit_db": psnr}}}


def _statuses(lines):
    return {line["target"].split(" (")[0]: line["status"] for line in lines}


def test_summary_pass():
    data = _data({0: 40.0, 10: 42.0, 50: 50.0, 100: 60.0}, macs=0.8 * 764e9, rss=4.9e9)
    status = _statuses(summarize(data))
    assert status["pruned output == dense output"] == "PASS"
    assert status["pruned MACs / NAFNet MACs"] == "PASS"
    assert status["pruned wall / NAFNet wall"] == "PASS"
    assert status["pruned peak memory vs NAFNet's"] == "PASS"
    assert status["wall time grows no faster than linearly"] == "PASS"
    assert status["0 % blur wall / 100 % blur wall"] == "PASS"
    assert status["tiled 4096x3072 peak RSS"] == "PASS"
    assert status["tiled vs untiled PSNR"] == "PASS"


def test_summary_miss():
    data = _data({0: 55.0, 10: 58.0, 50: 70.0, 100: 60.0}, macs=0.83 * 764e9, rss=5.1e9,
                 tiled_rss=4.2e9, psnr=39.0)
    data["cells"][0]["check"] = {"max_abs_diff": 2e-4, "ok": False, "against": "x"}
    lines = summarize(data)
    assert {line["status"] for line in lines} == {"MISS"}
    assert "2152x1436, 10 % blur" in lines[1]["where"] and "issue" not in lines[1]["where"]


def test_summary_falls_back_to_the_nearest_cell_and_says_so():
    data = _data({0: 1.0, 50: 1.2, 100: 1.4}, macs=0.5 * 764e9, rss=1e8, base_wall=2.0,
                 base_rss=2e8, size="64x48")
    del data["tiled"]
    lines = summarize(data)
    status = _statuses(lines)
    assert status["pruned wall / NAFNet wall"] == "PASS"
    assert "64x48, 0 % blur (issue: 2152x1436, 10 %)" in lines[1]["where"]
    assert status["tiled vs untiled PSNR"] == "N/A"
    assert "inf" not in json.dumps(lines)


def test_design_rows_and_estimate():
    base = {"status": "ok", "wall_s": 10.0, "macs": 100}
    paper = {"model": "paper-pruned", "status": "ok", "wall_s": 9.0, "macs": 80,
             "stage_fraction": {"3": 0.2}}
    rows = design_rows([paper, {"model": "paper-pruned/m2as=2,3", "status": "error",
                                "error": "boom"}], base)
    assert rows[0]["wall_ratio"] == pytest.approx(0.9) and rows[0]["macs_ratio"] == 0.8
    assert rows[1]["error"] == "boom"
    profile = {"status": "ok", "parts": [{"part": "m2as block: conv4", "share": 0.1},
                                         {"part": "m2as block: conv5", "share": 0.05}]}
    est = estimate_both_halves(paper, profile, base)
    assert est["wall_s"] == pytest.approx(9.0 * (1 - 0.8 * 0.15))
    # the pruned path profiles conv4 folded with the deformable conv's static pass
    from m2ae_core.benchmark.profiling import FOLDED_LABEL

    folded = {"status": "ok", "parts": [{"part": FOLDED_LABEL, "share": 0.2},
                                        {"part": "m2as block: conv5", "share": 0.05},
                                        {"part": "m2as block: conv3", "share": 0.3}]}
    est = estimate_both_halves(paper, folded, base)
    assert est["conv4_conv5_share"] == pytest.approx(0.25)
    assert est["wall_s"] == pytest.approx(9.0 * (1 - 0.8 * 0.25))


# --------------------------------------------------------------------------- options

def test_canonical_command_round_trips():
    import argparse

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(["--sizes", "64x48", "--fractions", "0", "12.5", "--device", "cpu",
                              "--tiled", "--width", "8", "--dtype", "bf16", "--rounds", "3"])
    validate(args)
    again = parser.parse_args(canonical_command(args).split()[2:])
    validate(again)
    assert vars(again).keys() == vars(args).keys()
    assert {k: v for k, v in vars(again).items() if k != "specs"} == \
        {k: v for k, v in vars(args).items() if k != "specs"}
    with pytest.raises(ConfigError):
        validate(parser.parse_args(["--fractions", "120", "--device", "cpu"]))
    with pytest.raises(ConfigError, match="dtype"):
        validate(parser.parse_args(["--dtype", "int8", "--device", "cpu"]))
    with pytest.raises(ConfigError, match="rounds"):
        validate(parser.parse_args(["--rounds", "0", "--device", "cpu"]))


def test_bf16_cells_run_in_bf16_and_check_with_a_half_precision_tolerance(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--models", "small-pruned", "small-dense", "--sizes", "64x48",
                 "--fractions", "0", "50", "--repeats", "1", "--threads", "1", "--dtype", "bf16",
                 "--width", "8", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["dtype"] == "bf16" and "--dtype bf16" in data["command"]
    pruned = [c for c in data["cells"] if c["model"] == "small-pruned"]
    assert pruned and all(c["status"] == "ok" for c in pruned)
    for cell in pruned:
        assert cell["check"]["tolerance"] == 2e-2 and cell["check"]["ok"]
        assert cell["check"]["max_abs_diff"] > 0  # bf16 paths round differently: not fp32


# --------------------------------------------------------------------------- measuring

def test_child_reports_its_own_peak_not_the_parents():
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux-only")
    ballast = np.ones(384 * 2 ** 20, dtype=np.uint8)  # the parent holds 384 MiB
    code = ("import m2ae_core.benchmark.machine as m; print(m.peak_rss_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 300 * 2 ** 20
    assert ballast.sum() > 0


def test_child_failure_comes_back_as_an_error():
    result = run_in_child({"kind": "cell", "model": "no-such-model", "size": [16, 16]})
    assert result["status"] == "error" and "no-such-model" in result["error"]


def test_profile_and_tiled_comparison_in_process():
    task = {"model": "small-pruned", "width": 8, "size": [48, 64], "fraction": 25,
            "threads": 1}
    profile = profile_cell(task)
    parts = {p["part"] for p in profile["parts"]}
    assert {"m2as block: conv4 + deform (folded)", "m2as block: mixing (conv1+conv2)",
            "encoder stage 4 (M2AS)"} <= parts
    assert profile["ops"] and all(o["seconds"] >= 0 for o in profile["ops"])
    compare = compare_tiled({**task, "size": [80, 96], "tile": 64})
    assert compare["status"] == "ok" and compare["tiles"] == 4
    assert compare["psnr_8bit_db"] == "inf" or compare["psnr_8bit_db"] > 10
    assert {"psnr_8bit_db_tile_context", "tiled_s", "tiled_s_tile_context", "untiled_s"} <= set(compare)


def test_tiny_grid_end_to_end(tmp_path, monkeypatch, capsys):
    from m2ae_core import weights

    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")

    def no_matplotlib():
        raise ImportError("no matplotlib")

    monkeypatch.setattr(report, "_import_pyplot", no_matplotlib)
    out = tmp_path / "bench"
    code = main(["bench", "--models", "small-pruned", "small-dense", "nafnet-small",
                 "small-pruned/m2as=3", "default", "--sizes", "64x48", "--fractions", "0", "50",
                 "--repeats", "1", "--threads", "1", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    cells = {(c["model"], c["fraction"]): c for c in data["cells"]}
    # Dense and plain paths cost the same at every fraction: timed once per size.
    assert set(cells) == {("small-pruned", 0), ("small-pruned", 50), ("small-dense", 0),
                          ("nafnet-small", None),
                          ("small-pruned/m2as=3", 0), ("small-pruned/m2as=3", 50),
                          ("default", 0), ("default", 50)}
    for key in (("default", 0), ("default", 50)):
        assert cells[key]["status"] == "skipped"
    measured = [c for c in data["cells"] if c["model"] != "default"]
    assert all(c["status"] == "ok" and c["wall_s"] > 0 and c["peak_rss_bytes"] > 0
               and c["times_s"] for c in measured)
    assert cells[("small-pruned", 0)]["check"]["against"] == "small-dense"
    assert cells[("small-pruned", 50)]["check"]["against"] == "in-cell"
    assert cells[("small-pruned/m2as=3", 50)]["check"]["against"] == "in-cell"
    for model in ("small-pruned", "small-pruned/m2as=3"):
        for fraction in (0, 50):
            assert cells[(model, fraction)]["check"]["ok"]
    assert cells[("small-pruned", 0)]["macs"] < cells[("small-dense", 0)]["macs"]
    assert cells[("small-pruned", 50)]["mask_fraction"] == pytest.approx(0.5, abs=0.01)
    assert cells[("small-dense", 0)]["macs"] == cells[("small-dense", 0)]["dense_macs"]
    assert data["machine"]["cpu"] and data["machine"]["torch"] == torch.__version__
    assert data["command"].startswith("m2ae bench --models small-pruned")
    assert not (out / "bench.png").exists()
    md = (out / "bench.md").read_text()
    assert data["machine"]["cpu"] in md and data["command"] in md
    assert "| 64x48 | small-pruned | 50 |" in md and "matplotlib is not installed" in md
    printed = capsys.readouterr().out
    assert "[PASS] pruned output == dense output" in printed
    assert "pruned wall / NAFNet wall" in printed and "bench.json" in printed


def _round_cell(wall, peak, diff=None, status="ok"):
    cell = {"model": "m", "size": [8, 8], "fraction": 10.0, "status": status, "wall_s": wall,
            "times_s": [wall, wall + 1], "peak_rss_bytes": peak}
    if diff is not None:
        cell["check"] = {"max_abs_diff": diff, "ok": diff < 1e-4, "against": "in-cell"}
    return cell


def test_rounds_merge_to_the_median_and_keep_every_round():
    rounds = [[_round_cell(5.0, 100, 1e-6)], [_round_cell(9.0, 130, 5e-6)],
              [_round_cell(6.0, 110, 2e-6)]]
    (cell,) = merge_rounds(rounds)
    assert cell["wall_s"] == 6.0 and cell["round_wall_s"] == [5.0, 9.0, 6.0]
    assert cell["peak_rss_bytes"] == 110 and cell["round_peak_rss_bytes"] == [100, 130, 110]
    assert cell["times_s"] == [5.0, 6.0, 9.0, 10.0, 6.0, 7.0]
    assert cell["check"]["max_abs_diff"] == 5e-6  # the worst round
    bad = merge_rounds([[_round_cell(5.0, 100, 1e-6)], [_round_cell(5.0, 100, 1.0)]])[0]
    assert not bad["check"]["ok"]
    failed = merge_rounds([[_round_cell(5.0, 100)], [_round_cell(0, 0, status="error")]])[0]
    assert failed["status"] == "error"
    single = [_round_cell(5.0, 100)]
    assert merge_rounds([single]) is single


def test_grid_in_rounds_end_to_end(tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--models", "small-pruned", "nafnet-small", "--sizes", "64x48",
                 "--fractions", "10", "--repeats", "1", "--rounds", "2", "--threads", "1",
                 "--out", str(out)])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["rounds"] == 2 and "--rounds 2" in data["command"]
    assert len(data["cells"]) == 2
    for cell in data["cells"]:
        assert len(cell["round_wall_s"]) == 2 and len(cell["times_s"]) == 2
        assert cell["wall_s"] == pytest.approx(sum(cell["round_wall_s"]) / 2)
    md = (out / "bench.md").read_text()
    assert "2 rounds" in md and "–" in md


def test_plot_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    data = _data({0: 40.0, 10: 42.0, 100: 60.0}, macs=0.8 * 764e9, rss=4.9e9)
    data["machine"] = {"cpu": "test cpu", "threads": 2, "device": "cpu"}
    assert report.write_plot(data, tmp_path / "bench.png") is None
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_cuda_breakdown_gives_each_part_one_row_with_kernel_and_host_time():
    """On CUDA torch.profiler lists a label twice (the CPU range and its GPU annotation): one
    row with the kernels' time and the host's; ops count their kernels' self time."""
    from types import SimpleNamespace as Event

    def event(key, count, cpu_us, device_us, self_device_us=0.0):
        return Event(key=key, count=count, cpu_time_total=cpu_us, self_cpu_time_total=cpu_us,
                     device_time_total=device_us, self_device_time_total=self_device_us)

    averages = [event("stage", 1, 300_000, 70_000), event("stage", 1, 5_000, 69_000),
                event("aten::mm", 4, 1_000, 0, 20_000)]
    table = breakdown(averages, {"stage"}, 0.5, cuda=True)
    assert table["parts"] == [{"part": "stage", "calls": 1, "seconds": 0.07,
                               "host_seconds": 0.3, "share": 0.07 / 0.5}]
    assert table["ops"][0]["op"] == "aten::mm" and table["ops"][0]["seconds"] == 0.02
    on_cpu = breakdown([event("stage", 2, 300_000, 0)], {"stage"}, 0.5, cuda=False)
    assert on_cpu["parts"] == [{"part": "stage", "calls": 2, "seconds": 0.3, "share": 0.6}]
    lines = report.profile_lines({"status": "ok", "model": "m", "size_label": "1x1",
                                  "fraction": 10, "forward_s": 0.5, **table})
    assert "| stage | 1 | 0.070 | 0.300 | 14.0% |" in lines

