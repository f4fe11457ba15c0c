"""Evaluation loop, report and CLI entry on tiny fabricated datasets."""
import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import randomize_
from m2ae_core import build_model, deblur, metrics, save_weights
from m2ae_core.data.synthetic import SynthParams, SyntheticBlurSource, read_sample, write_dataset
from m2ae_core.evaluate import (PSNR_CAP, EvalError, add_eval_arguments, aggregate, evaluate,
                                find_samples, run_eval, write_report)


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.random((h // 5 + 1, w // 5 + 1, 3)).repeat(5, 0).repeat(5, 1)[:h, :w]
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.random(3)
    return ((0.7 * blocks + 0.3 * ramp) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 samples at 64x64: indices 0 and 1 local, 2 global (global_every=3)."""
    root = tmp_path_factory.mktemp("eval")
    photos = root / "photos"
    photos.mkdir()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        Image.fromarray(_texture(10 + i, 90, 100)).save(photos / name)
    params = SynthParams(size=(64, 64), subframes=15, global_every=3, motion_length=(6, 14),
                         global_motion_length=(4, 8))
    source = SyntheticBlurSource(sorted(photos.iterdir()), params, seed=7)
    write_dataset(source, 3, root / "data", extra={"preset": "tiny-test"})
    return root / "data"


@pytest.fixture(scope="module")
def model():
    return randomize_(build_model("small", width=8), seed=2).eval()


@pytest.fixture(scope="module")
def results(model, dataset):
    calls = []
    out = evaluate(model, dataset, progress=lambda done, total: calls.append((done, total)))
    out["progress_calls"] = calls
    return out


def test_find_samples_synthetic_layout(dataset):
    layout, samples, info = find_samples(dataset)
    assert layout == "synthetic" and info["preset"] == "tiny-test"
    assert [s.name for s in samples] == ["0000", "0001", "0002"]
    assert [s.kind for s in samples] == ["local", "local", "global"]
    assert all(s.mask is not None and s.trajectory is not None for s in samples)


def test_masked_samples_reads_image_and_mask_and_skips_maskless_pairs(dataset, tmp_path):
    from m2ae_core.evaluate import masked_samples

    read = list(masked_samples(dataset))
    assert [s.name for s, _, _ in read] == ["0000", "0001", "0002"]
    for sample, blur, truth in read:
        assert tuple(blur.shape) == (1, 3, 64, 64) and truth.shape == (64, 64)
        stored = np.asarray(Image.open(dataset / "mask" / f"{sample.name}.png").convert("L")) > 127
        assert (truth == stored).all()
    assert read[2][2].all() and not read[0][2].all()  # the global sample's mask is all ones
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    Image.fromarray(_texture(0, 40, 48)).save(pairs / "Car_blur.png")
    Image.fromarray(_texture(1, 40, 48)).save(pairs / "Car_sharp.png")
    assert list(masked_samples(pairs)) == []  # a pair has no mask


def test_evaluate_records_and_aggregates(results):
    assert results["progress_calls"] == [(1, 3), (2, 3), (3, 3)]
    samples = results["samples"]
    assert [s["kind"] for s in samples] == ["local", "local", "global"]
    agg = results["aggregates"]
    assert (agg["local"]["n"], agg["global"]["n"], agg["all"]["n"]) == (2, 1, 3)
    for s in samples:
        for key in ("psnr", "ssim", "input_psnr", "input_ssim", "weighted_psnr",
                    "input_weighted_psnr", "mask_iou", "mask_f1", "epe", "epe_sym"):
            assert s[key] is not None, key
        assert 0 <= s["mask_iou"] <= 1 and s["epe_sym"] <= s["epe"] + 1e-12
        assert 0 < s["macs"] <= s["dense_macs"] and s["seconds"] > 0
    # A global sample has an all-blurred mask: no sharp pixel to measure.
    assert samples[2]["sharp_psnr"] is None and samples[2]["input_sharp_psnr"] is None
    assert agg["global"]["sharp_psnr"] is None and agg["global"]["counts"]["sharp_psnr"] == 0
    # Means by hand (PSNR capped).
    local = [s["input_psnr"] for s in samples[:2]]
    assert agg["local"]["input_psnr"] == pytest.approx(np.mean([min(v, PSNR_CAP) for v in local]))
    assert agg["all"]["macs"] == pytest.approx(np.mean([s["macs"] for s in samples]))
    assert results["dataset"]["local"] == 2 and results["dataset"]["global"] == 1
    assert results["model"]["name"] == "custom"  # build_model with an override
    assert results["model"]["source"] == "(in memory)" and results["settings"]["pruned"] is True


def test_input_and_restored_metrics_match_metrics_module(results, dataset, model):
    record = results["samples"][0]
    s = read_sample(dataset, "0000")
    assert record["input_psnr"] == metrics.psnr(s.blur, s.sharp)
    assert record["input_ssim"] == metrics.ssim(s.blur, s.sharp)
    assert record["input_weighted_psnr"] == metrics.weighted_psnr(s.blur, s.sharp, s.mask)
    assert record["input_weighted_ssim"] == metrics.weighted_ssim(s.blur, s.sharp, s.mask)
    assert record["input_sharp_psnr"] == metrics.sharp_psnr(s.blur, s.sharp, s.mask)
    restored = deblur(model, s.blur[None])
    assert record["psnr"] == pytest.approx(metrics.psnr(restored.image, s.sharp), abs=1e-9)
    assert record["mask_iou"] == metrics.mask_iou(restored.mask, s.mask)
    assert record["epe"] == pytest.approx(
        metrics.endpoint_error(restored.trajectory, s.trajectory, s.mask), rel=1e-6)


def test_preserve_sharp_is_measured_on_the_composited_output(dataset, model, results):
    kept = evaluate(model, dataset, preserve_sharp=True, limit=1)
    assert kept["settings"]["preserve_sharp"] is True and results["settings"]["preserve_sharp"] is False
    record = kept["samples"][0]
    s = read_sample(dataset, "0000")
    composite = deblur(model, s.blur[None], preserve_sharp=True)
    assert record["psnr"] == pytest.approx(metrics.psnr(composite.image, s.sharp), abs=1e-9)
    assert record["psnr"] != results["samples"][0]["psnr"]


def test_ensemble_is_measured_on_the_ensemble_output(dataset, model, results, tmp_path, capsys):
    averaged = evaluate(model, dataset, ensemble=4, limit=1)
    assert averaged["settings"]["ensemble"] == 4 and results["settings"]["ensemble"] == 1
    s = read_sample(dataset, "0000")
    restored = deblur(model, s.blur[None], ensemble=4)
    record = averaged["samples"][0]
    assert record["psnr"] == pytest.approx(metrics.psnr(restored.image, s.sharp), abs=1e-9)
    assert record["mask_iou"] == metrics.mask_iou(restored.mask, s.mask)
    assert record["psnr"] != results["samples"][0]["psnr"]
    weights = save_weights(model, tmp_path / "w.safetensors")
    assert run_eval(_parse(["--weights", str(weights), "--data", str(dataset), "--limit", "1",
                            "--ensemble", "4", "-o", str(tmp_path / "out")])) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "--ensemble 4" in data["command"] and data["settings"]["ensemble"] == 4
    assert "self-ensemble of 4 views" in (tmp_path / "out" / "results.md").read_text()
    capsys.readouterr()
    with pytest.raises(ValueError, match="ensemble must be one of"):
        evaluate(model, dataset, ensemble=3)


def test_write_report(results, tmp_path):
    json_path, md_path = write_report(results, tmp_path / "report", command="m2ae eval --x")
    data = json.loads(json_path.read_text())
    assert set(data["aggregates"]) == {"local", "global", "all"}
    assert data["command"] == "m2ae eval --x" and len(data["samples"]) == 3
    text = md_path.read_text()
    for row in ("| local | 2 |", "| global | 1 |", "| all | 3 |"):
        assert row in text
    assert "PSNR in | PSNR out" in text and "m2ae eval --x" in text
    assert "`custom`" in text and "tiny-test" in text


def test_infinite_and_undefined_values_in_json(tmp_path):
    samples = [{"name": "a", "kind": "local", "psnr": math.inf, "sharp_psnr": None},
               {"name": "b", "kind": "local", "psnr": 30.0, "sharp_psnr": None}]
    agg = aggregate(samples)
    assert agg["local"]["psnr"] == pytest.approx((PSNR_CAP + 30) / 2)
    assert agg["global"]["n"] == 0 and agg["global"]["psnr"] is None
    results = {"model": {"name": "m", "source": "s", "parameters": 1, "device": "cpu",
                         "dtype": "float32"},
               "dataset": {"path": "/d", "layout": "pairs", "samples": 2, "local": 2,
                           "global": 0},
               "settings": {"threshold": 0.5, "pruned": True, "limit": None},
               "samples": samples, "aggregates": agg}
    json_path, md_path = write_report(results, tmp_path, command="c")
    data = json.loads(json_path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert data["samples"][0]["psnr"] == "inf" and data["samples"][0]["sharp_psnr"] is None
    assert "| a | local | – | inf |" in md_path.read_text()


def test_gopro_pairs_layout(tmp_path, model):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for stem, suffix, seed in (("Flower", "1", 0), ("Car", "", 1)):
        sharp = _texture(seed, 40, 48)
        blur = np.clip(sharp.astype(int) + 7, 0, 255).astype(np.uint8)
        Image.fromarray(blur).save(folder / f"{stem}_blur{suffix}.png")
        Image.fromarray(sharp).save(folder / f"{stem}_sharp{suffix}.png")
    (folder / "notes.txt").write_text("ignored")
    Image.fromarray(_texture(5, 40, 48)).save(folder / "unrelated.png")  # no _blur: ignored
    Image.fromarray(_texture(6, 40, 48)).save(folder / "street_blurry.jpg")  # not a pair name
    layout, samples, _ = find_samples(folder)
    assert layout == "pairs" and [s.name for s in samples] == ["Car", "Flower1"]
    out = evaluate(model, folder, limit=1)
    assert len(out["samples"]) == 1
    record = out["samples"][0]
    assert record["kind"] is None and record["weighted_psnr"] is None
    assert record["mask_iou"] is None and record["epe"] is None
    sharp = np.asarray(Image.open(folder / "Car_sharp.png"))
    blur = np.asarray(Image.open(folder / "Car_blur.png"))
    assert record["input_psnr"] == pytest.approx(metrics.psnr(blur, sharp))
    assert record["psnr"] is not None and record["ssim"] is not None
    agg = out["aggregates"]
    assert agg["all"]["n"] == 1 and agg["local"]["n"] == 0 and agg["global"]["n"] == 0
    _, md_path = write_report(out, tmp_path / "rep")
    assert "| local | 0 |" in md_path.read_text()
    # A blurred file without its sharp partner is an error that names it.
    Image.fromarray(blur).save(folder / "Dog_blur2.png")
    with pytest.raises(EvalError, match="Dog_blur2.png has no partner Dog_sharp2"):
        find_samples(folder)


def _parse(argv):
    parser = add_eval_arguments(argparse.ArgumentParser())
    return parser.parse_args(argv)


def test_cli_missing_folder_and_bad_options(tmp_path, capsys):
    assert run_eval(_parse(["--data", str(tmp_path / "missing")])) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dataset folder not found" in err and "missing" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_eval(_parse(["--data", str(empty)])) != 0
    assert "no samples in" in capsys.readouterr().err
    assert run_eval(_parse(["--data", str(empty), "--limit", "0"])) != 0
    assert "--limit must be positive" in capsys.readouterr().err
    assert run_eval(_parse(["--data", str(empty), "--weights", str(tmp_path / "nope.pth")])) != 0


def test_cli_end_to_end(tmp_path, dataset, model, capsys):
    weights = save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "out"
    rc = run_eval(_parse(["--weights", str(weights), "--data", str(dataset), "-o", str(out),
                          "--limit", "2", "--dense"]))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| local | 2 |" in captured.out and "results.md" in captured.out
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["pruned"] is False and data["settings"]["limit"] == 2
    assert data["command"].startswith("m2ae eval --weights") and "--dense" in data["command"]
    assert data["model"]["source"].endswith("w.safetensors")
    lines = (out / "results.md").read_text().splitlines()
    assert sum(line.startswith("| local |") for line in lines) == 2  # quality + cost tables
