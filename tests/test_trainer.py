"""Trainer, training config and training data (DESIGN §4). Tiny models, 32 px crops."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from m2ae_core.errors import ConfigError, M2AEError
from m2ae_core.training.config import TrainConfig, config_from_dict, load_config
from m2ae_core.training.datasets import (GoProDataset, ReLoBlurDataset, SampleStream,
                                         StepBatchDataset, StreamSettings, augment,
                                         blur_aware_crop, training_photo_paths,
                                         transform_trajectory)
from m2ae_core.training.trainer import lr_factor, main, train

REPO = Path(__file__).resolve().parents[1]


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.integers(-20, 21, (h, w, 3))
    return np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        _save_png(root / f"photo{i}.png", _texture(rng, 96, 128))
    return root


def _tiny_config(photos: Path, out: Path, **top) -> dict:
    # One thread: on a shared 2-core machine OpenMP spinning makes 2 threads much slower.
    data = {"steps": 6, "batch_size": 2, "log_every": 1, "val_every": 3, "threads": 1,
            "checkpoint_every": 3, "out_dir": str(out), "progress": False,
            "model": {"preset": "small", "overrides": {"width": 8}},
            "data": {"photos": str(photos), "crop": 32, "val_samples": 1, "val_size": 32}}
    data.update(top)
    return data


def _write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def straight_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    train(load_config(_write_yaml(out / "cfg.yaml", _tiny_config(photos, out / "run"))))
    return out / "run"


# --------------------------------------------------------------------------- trainer

def test_short_run_writes_log_checkpoint_and_weights(straight_run):
    records = [json.loads(line) for line in
               (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[0]["world_size"] == 1
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    for r in train_records:
        for key in ("total", "l1", "ssim", "fft", "mask", "reblur", "tv", "lr", "s_per_step",
                    "grad_norm"):
            assert np.isfinite(r[key]), key
    lrs = [r["lr"] for r in train_records]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(1e-6)
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    assert all(np.isfinite(r["val_wpsnr_out"]) and "val_wpsnr_gain" in r for r in val)
    ckpt = torch.load(straight_run / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["sampler"]["next_step"] == 6
    assert {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)
    for name in ("final.safetensors", "best.safetensors", "config.json"):
        assert (straight_run / name).is_file()
    from m2ae_core.weights import load_model

    model = load_model(straight_run / "final.safetensors", device="cpu")
    assert model.config.width == 8 and model.config.m2as_stages == (2, 3)


def test_bf16_autocast_trains_on_cpu(straight_run, photos, tmp_path):
    """amp: bf16 runs the forward in bfloat16 on the CPU too (20 % faster per step on a CPU with
    native bf16): the first step's loss is the fp32 run's up to bf16 rounding, not equal to it,
    and the weights stay float32."""
    cfg = _tiny_config(photos, tmp_path / "run", steps=3, amp="bf16")
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))

    def first_loss(run):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return next(r["total"] for r in records if r["kind"] == "train")

    mixed, full = first_loss(tmp_path / "run"), first_loss(straight_run)
    assert mixed != full and abs(mixed - full) < 0.05 * abs(full)
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "run" / "final.safetensors").values()} \
        == {torch.float32}


def test_init_weights_starts_a_fresh_run_from_trained_weights(straight_run, photos, tmp_path):
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=1, val_every=0)
    cfg["model"]["init_weights"] = str(init)
    cfg["optim"] = {"lr": 1e-12, "min_lr": 1e-12}  # one step that cannot move the weights
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    assert start.keys() == after.keys()
    for key in start:
        torch.testing.assert_close(after[key], start[key], rtol=0, atol=1e-9)
    # A different architecture is refused with a message naming the setting.
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["overrides"] = {"width": 16}
    with pytest.raises(M2AEError, match="init_weights"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_trainable_parts_train_and_the_rest_stays_frozen(straight_run, photos, tmp_path):
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=2, val_every=0)
    cfg["model"].update(init_weights=str(init), trainable=["mask_predictor"])
    cfg["loss"] = {"l1_weight": 0.0, "ssim_weight": 0.0, "fft_weight": 0.0,
                   "offset_weight": 0.0, "mask_weight": 1.0}
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    changed = {key for key in start if not torch.equal(start[key], after[key])}
    assert changed and all("mask_predictor" in key for key in changed)
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["trainable"] = ["no_such_part"]
    with pytest.raises(M2AEError, match="matches no parameter"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_frozen_parts_keep_their_weights_while_the_rest_trains(straight_run, photos, tmp_path):
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=2, val_every=0)
    cfg["model"].update(init_weights=str(init), frozen=["mask_predictor"])
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    changed = {key for key in start if not torch.equal(start[key], after[key])}
    heads = {key for key in start if "mask_predictor" in key}
    assert heads and not changed & heads
    assert any(key.startswith("decoders.") for key in changed)
    assert any(".dconv." in key for key in changed)  # M2AS blocks train around the heads
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["frozen"] = ["no_such_part"]
    with pytest.raises(M2AEError, match="frozen: 'no_such_part' matches no parameter"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))
    cfg["model"].update(trainable=["mask_predictor"], frozen=["mask_predictor"])
    with pytest.raises(M2AEError, match="leaves no parameter"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_mask_context_heads_train_alone(straight_run, photos, tmp_path, monkeypatch):
    # Start from weights without context units: they are added fresh, everything else loads;
    # with only the mask loss the forward stops after the last M2AS stage.
    from m2ae_core.network import M2AENet

    given = []
    forward = M2AENet.forward

    def recording_forward(self, image, mask=None, **kwargs):
        if self.training:
            given.append(kwargs.get("stages_only"))
        return forward(self, image, mask=mask, **kwargs)

    monkeypatch.setattr(M2AENet, "forward", recording_forward)
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=2, val_every=0)
    cfg["model"].update(init_weights=str(init), trainable=["mask_predictor"])
    cfg["model"]["overrides"]["mask_context"] = 2
    cfg["loss"] = {"l1_weight": 0.0, "ssim_weight": 0.0, "fft_weight": 0.0,
                   "offset_weight": 0.0, "mask_weight": 1.0}
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    added = set(after) - set(start)
    assert added and all(".mask_predictor.context." in key for key in added)
    assert set(start) <= set(after)
    changed = {key for key in start if not torch.equal(start[key], after[key])}
    assert changed and all("mask_predictor" in key for key in changed)
    # no reconstruction term: the forward stops after the last M2AS stage
    assert given == [True, True]
    # Fewer context units than the weights hold cannot load.
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["init_weights"] = str(tmp_path / "run" / "final.safetensors")
    cfg["model"]["overrides"]["mask_context"] = 1
    with pytest.raises(M2AEError, match="mask_context"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_global_max_and_evidence_heads_start_fresh_and_train(straight_run, photos, tmp_path):
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=2, val_every=0)
    cfg["model"].update(init_weights=str(init), trainable=["mask_predictor", "mask_evidence"])
    cfg["model"]["overrides"].update(mask_global_max=True, mask_evidence=8)
    cfg["loss"] = {"l1_weight": 0.0, "ssim_weight": 0.0, "fft_weight": 0.0,
                   "offset_weight": 0.0, "mask_weight": 1.0}
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    added = set(after) - set(start)
    assert {k for k in added if "max_proj" in k} and {k for k in added if "evidence_proj" in k}
    assert {k for k in added if k.startswith("mask_evidence.")}
    assert all(".max_proj." in k or ".evidence_proj." in k or k.startswith("mask_evidence.")
               for k in added)
    # the zero-initialised projections moved: the new parts are trained, not just carried
    assert all(after[k].abs().sum() > 0 for k in added if k.endswith("_proj.weight"))
    assert all(torch.equal(start[k], after[k]) for k in start if "mask_predictor" not in k)
    # weights with a stem cannot start a model with a different stem
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["init_weights"] = str(tmp_path / "run" / "final.safetensors")
    cfg["model"]["overrides"]["mask_evidence"] = 4
    with pytest.raises(M2AEError, match="mask_evidence"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_shake_head_starts_fresh_and_trains(straight_run, photos, tmp_path):
    init = straight_run / "final.safetensors"
    cfg = _tiny_config(photos, tmp_path / "run", steps=2, val_every=0)
    cfg["model"].update(init_weights=str(init), trainable=["mask_predictor"])
    cfg["model"]["overrides"].update(mask_global_max=True, mask_shake_head=True)
    cfg["loss"] = {"l1_weight": 0.0, "ssim_weight": 0.0, "fft_weight": 0.0,
                   "offset_weight": 0.0, "mask_weight": 1.0}
    train(load_config(_write_yaml(tmp_path / "cfg.yaml", cfg)))
    from safetensors.torch import load_file

    start, after = load_file(init), load_file(tmp_path / "run" / "final.safetensors")
    added = set(after) - set(start)
    assert {k for k in added if ".shake_head." in k}
    assert all(".max_proj." in k or ".shake_head." in k for k in added)
    assert all(torch.equal(start[k], after[k]) for k in start if "mask_predictor" not in k)
    # weights with a shake head cannot start a model without one
    cfg["out_dir"] = str(tmp_path / "run2")
    cfg["model"]["init_weights"] = str(tmp_path / "run" / "final.safetensors")
    cfg["model"]["overrides"]["mask_shake_head"] = False
    with pytest.raises(M2AEError, match="mask_shake_head"):
        train(load_config(_write_yaml(tmp_path / "cfg2.yaml", cfg)))


def test_exact_resume_is_bitwise(straight_run, photos, tmp_path):
    cfg = _write_yaml(tmp_path / "cfg.yaml", _tiny_config(photos, tmp_path / "run"))
    assert main(["--config", str(cfg), "--stop-at", "3"]) == 0
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert first["step"] == 3 and (tmp_path / "run" / "latest.safetensors").is_file()
    assert main(["--config", str(cfg), "--resume"]) == 0
    resumed = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    straight = torch.load(straight_run / "last.pt", weights_only=True)["model"]
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    # The log of the resumed run continues the first one without duplicates.
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    # A fresh start must not overwrite a run's checkpoint.
    assert main(["--config", str(cfg)]) == 2
    # Longer schedule + time limit: one more step, then a checkpoint.
    assert main(["--config", str(cfg), "--resume", "--steps", "8", "--time-limit", "0",
                 "--set", "val_every=0"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 7


def test_weight_average_is_an_exponential_moving_average():
    from m2ae_core.training.ema import WeightAverage

    model = torch.nn.BatchNorm1d(2)  # a float weight and an integer counter
    average = WeightAverage(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.num_batches_tracked.fill_(5)
    average.update(model)
    assert torch.allclose(average.weights["weight"], 0.75 * start + 0.25 * 3.0)
    assert average.weights["num_batches_tracked"].item() == 5  # copied, not averaged
    average.update(model)
    assert torch.allclose(average.weights["weight"], 0.75 ** 2 * start + (1 - 0.75 ** 2) * 3.0)
    assert average.updates == 2
    copy = average.copy_to(torch.nn.BatchNorm1d(2))
    assert torch.equal(copy.weight.detach(), average.weights["weight"])
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema_decay"):
            WeightAverage(model, bad)
    with pytest.raises(ValueError, match="does not match"):
        average.load_state_dict({"updates": 1, "weights": {"weight": start}})


def test_weight_average_is_trained_validated_exported_and_resumed_exactly(photos, tmp_path):
    from safetensors.torch import load_file

    settings = _tiny_config(photos, tmp_path / "straight",
                            optim={"lr": 1e-3, "ema_decay": 0.5})
    summary = train(load_config(_write_yaml(tmp_path / "straight.yaml", settings)))
    straight = tmp_path / "straight"
    assert summary["ema_weights"] == str(straight / "final_ema.safetensors")
    trained, averaged = (load_file(straight / "final.safetensors"),
                         load_file(straight / "final_ema.safetensors"))
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    val = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "val"]
    assert all(np.isfinite(r["val_ema_wpsnr_out"]) and np.isfinite(r["val_wpsnr_out"])
               for r in val)
    assert torch.load(straight / "last.pt", weights_only=True)["ema"]["updates"] == 6
    # 3 steps, resume, 3 steps: the same average, bit for bit.
    cfg = _write_yaml(tmp_path / "split.yaml", dict(settings, out_dir=str(tmp_path / "split")))
    assert main(["--config", str(cfg), "--stop-at", "3"]) == 0
    assert (tmp_path / "split" / "latest_ema.safetensors").is_file()
    assert main(["--config", str(cfg), "--resume"]) == 0
    resumed = load_file(tmp_path / "split" / "final_ema.safetensors")
    for key in averaged:
        assert torch.equal(resumed[key], averaged[key]), key


def test_ema_decay_must_be_below_one(photos, tmp_path):
    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict(_tiny_config(photos, tmp_path, optim={"ema_decay": 1.0}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_end_identical(photos, tmp_path):
    out = tmp_path / "ddp"
    cfg = _write_yaml(tmp_path / "ddp.yaml",
                      _tiny_config(photos, out, steps=2, batch_size=1, threads=1,
                                   val_every=0, checkpoint_every=0,
                                   optim={"ema_decay": 0.5}))  # the average runs under DDP too
    env = dict(os.environ, M2AE_DEBUG_RANK_STATE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "m2ae_core.training.trainer", "--config", str(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(out / "rank0_final.pt", weights_only=True)
    b = torch.load(out / "rank1_final.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["global_batch"] == 2
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 2
    assert ckpt["ema"]["updates"] == 2 and (out / "final_ema.safetensors").is_file()
    # Training moved the weights away from the (seeded, shared) initialisation.
    from m2ae_core.network import build_model

    torch.manual_seed(0)
    init = build_model("small", width=8).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)


def _train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() \
        else []
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_a_busy_run_folder_is_refused_and_sigterm_stops_with_an_exact_checkpoint(
        photos, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _write_yaml(tmp_path / "cfg.yaml",
                      _tiny_config(photos, run, steps=100000, val_every=0, checkpoint_every=0))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "m2ae_core.training.trainer", "--config",
                             str(cfg)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _train_records(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _train_records(run), "the run never logged a step"
        # While it runs, a second run into its folder stops at once, naming the first.
        assert main(["--config", str(cfg), "--resume"]) == 2
        assert f"in use by another training run (pid {proc.pid}" in capsys.readouterr().err
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "SIGTERM: stopping after this step" in err and "--resume" in err
    stopped_at = torch.load(run / "last.pt", weights_only=True)["step"]
    assert stopped_at == _train_records(run)[-1]["step"] and 0 < stopped_at < 100000
    assert (run / "latest.safetensors").is_file() and not (run / "final.safetensors").exists()
    # The checkpoint is the state after exactly those steps: a run stopped there by
    # --stop-at has the same weights, bit for bit.
    twin = _write_yaml(tmp_path / "twin.yaml", _tiny_config(
        photos, tmp_path / "twin", steps=100000, val_every=0, checkpoint_every=0))
    assert main(["--config", str(twin), "--stop-at", str(stopped_at)]) == 0
    interrupted = torch.load(run / "last.pt", weights_only=True)["model"]
    reference = torch.load(tmp_path / "twin" / "last.pt", weights_only=True)["model"]
    for key in reference:
        assert torch.equal(interrupted[key], reference[key]), key
    # The lock went with the process: the run resumes and finishes.
    assert main(["--config", str(cfg), "--resume", "--steps", str(stopped_at + 2)]) == 0
    assert [r["step"] for r in _train_records(run)][-2:] == [stopped_at + 1, stopped_at + 2]
    assert (run / "final.safetensors").is_file()


def test_stop_request_first_signal_asks_second_interrupts_workers_ignore(monkeypatch):
    from m2ae_core.training.stop_request import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    me = os.getpid()
    with StopRequest(announce=False) as request:
        assert not request.requested
        monkeypatch.setattr(os, "getpid", lambda: me + 1)  # as seen from a forked loader worker
        os.kill(me, signal.SIGTERM)
        assert not request.requested
        monkeypatch.undo()
        os.kill(me, signal.SIGTERM)
        assert request.requested and request.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before


def test_run_folder_lock_outlives_no_process(tmp_path):
    from m2ae_core.training.run_lock import RunFolderLock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from m2ae_core.training.run_lock import RunFolderLock;"
        "lock = RunFolderLock(sys.argv[2]).acquire(); print('locked', flush=True); time.sleep(600)"),
        str(REPO), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(M2AEError, match=f"pid {holder.pid} on"):
            RunFolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs in the holder
        holder.wait()
    with RunFolderLock(tmp_path) as lock:
        assert f"pid {os.getpid()} on" in lock.path.read_text()
        with pytest.raises(M2AEError, match="--out"):  # one process, two holders: refused too
            RunFolderLock(tmp_path).acquire()
    RunFolderLock(tmp_path).acquire().release()  # released on exit from the block


def test_validation_reports_trajectory_error_of_an_untrained_motion_branch(photos):
    from m2ae_core.network import build_model
    from m2ae_core.training.datasets import make_validation_set
    from m2ae_core.training.trainer import validate

    val = make_validation_set(photos, 2, 64, seed=5)
    assert val["trajectory"].shape == (2, 4, 64, 64)
    model = build_model("small", width=8)
    result = validate(model, val, torch.device("cpu"))
    # zero-initialised analyzers: no motion, so the error is the true motion's mean size
    m = val["mask"][:, 0] > 0.5
    t = val["trajectory"]
    truth = 0.5 * (t[:, :2].norm(dim=1) + t[:, 2:].norm(dim=1))[m].mean()
    assert float(truth) > 1.0
    assert result["val_motion_px"] == 0.0
    assert result["val_epe"] == pytest.approx(float(truth), rel=1e-5)
    # a live analyzer moves both numbers (where its stage's predicted mask lets it through)
    stage = model.encoders[model.config.m2as_stages[0]]
    torch.nn.init.constant_(stage.motion_analyzer.bias, 2.0)
    torch.nn.init.constant_(stage.mask_predictor.mlp_out[-1].bias, 0.0)
    stage.mask_predictor.mlp_out[-1].bias.data[0] = 50.0  # everything blurred
    moved = validate(model, val, torch.device("cpu"))
    assert moved["val_motion_px"] > 1.0 and moved["val_epe"] != result["val_epe"]


def test_lr_schedule():
    assert lr_factor(0, 100, 0, 1e-3) == pytest.approx(1.0)
    assert lr_factor(50, 100, 0, 1e-3) == pytest.approx(0.5 * (1 + 1e-3))
    assert lr_factor(100, 100, 0, 1e-3) == pytest.approx(1e-3)
    assert lr_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 0.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------- config

def test_config_yaml_and_toml_agree(tmp_path):
    yaml_text = """
seed: 3
steps: 50
out_dir: runs/x
model: {preset: nafnet-small, overrides: {width: 8}}
data: {crop: 64, photos: null}
optim: {lr: 1e-3, betas: [0.9, 0.99]}
loss: {tv_weight: 0.02}
"""
    toml_text = """
seed = 3
steps = 50
out_dir = "runs/x"
[model]
preset = "nafnet-small"
overrides = {width = 8}
[data]
crop = 64
[optim]
lr = 1e-3
betas = [0.9, 0.99]
[loss]
tv_weight = 0.02
"""
    (tmp_path / "a.yaml").write_text(yaml_text)
    (tmp_path / "a.toml").write_text(toml_text)
    a = load_config(tmp_path / "a.yaml")
    b = load_config(tmp_path / "a.toml", {"data.photos": None})
    assert a == b
    assert isinstance(a, TrainConfig) and a.optim.lr == 1e-3 and a.optim.betas == (0.9, 0.99)
    assert a.model.overrides == {"width": 8} and a.loss.tv_weight == 0.02
    assert a.data.crop == 64 and a.data.photos is None and a.optim.weight_decay == 1e-3
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(tmp_path / "a.yaml", {"optim.momentum": 0.9})
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_config(tmp_path / "a.yaml", {"data.crop": 30})


@pytest.mark.parametrize("name", ["small-cpu.yaml", "nafnet-small-cpu.yaml", "paper-gpu.yaml"])
def test_repo_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.batch_size * (4 if name == "paper-gpu.yaml" else 1) == 8
    assert config.optim.betas == (0.9, 0.9) and config.optim.lr == 1e-3


@pytest.mark.parametrize("name", ["small-cpu-finetune.yaml", "small-cpu-maskhead.yaml",
                                  "small-cpu-maskctx.yaml", "small-cpu-maskctx-joint.yaml"])
def test_fine_tuning_configs_load_and_build(name):
    from m2ae_core.network import build_model

    config = load_config(REPO / "configs" / name)
    assert config.model.init_weights
    model = build_model(config.model.preset, **dict(config.model.overrides))
    if "maskctx" in name:
        assert model.config.mask_context == 5


def test_cpu_configs_differ_only_in_preset_and_out_dir():
    a = load_config(REPO / "configs" / "small-cpu.yaml").to_dict()
    b = load_config(REPO / "configs" / "nafnet-small-cpu.yaml").to_dict()
    assert (a["model"]["preset"], b["model"]["preset"]) == ("small", "nafnet-small")
    for d in (a, b):
        d["model"].pop("preset")
        d.pop("out_dir")
    assert a == b


def test_trajectory_recipe_is_the_cpu_recipe_plus_the_term():
    # its log is compared step for step with small-cpu's: nothing else may differ
    a = load_config(REPO / "configs" / "small-cpu.yaml").to_dict()
    b = load_config(REPO / "configs" / "small-cpu-traj.yaml").to_dict()
    assert a["loss"].pop("trajectory_weight") == 0.0
    assert b["loss"].pop("trajectory_weight") > 0.0
    assert a.pop("out_dir") != b.pop("out_dir")
    assert a == b


def test_keep_degradation_recipe_is_the_session_7_control_plus_the_target():
    # A/B against runs/small-cpu-morephotos-control: only the training target may differ
    a = load_config(REPO / "configs" / "small-cpu-morephotos.yaml").to_dict()
    b = load_config(REPO / "configs" / "small-cpu-keep-degradation.yaml").to_dict()
    assert a["data"].pop("extra_photos") and not b["data"].pop("extra_photos")  # control: []
    assert not a["data"].pop("target_keeps_degradation")
    assert b["data"].pop("target_keeps_degradation") is True
    assert a.pop("out_dir") != b.pop("out_dir")
    assert a == b


# --------------------------------------------------------------------------- data

def test_relobur_reader(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "ReLoBlur"
    for i, mask_name in enumerate(["000_mask.png", "001_blur.png"]):
        ident = f"{i:03d}"
        seq = root / "train" / "s01" / "00"
        _save_png(seq / f"{ident}_sharp.png", _texture(rng, 40, 48))
        _save_png(seq / f"{ident}_blur.png", _texture(rng, 40, 48))
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20, 5:30] = 255 if i == 0 else 1
        _save_png(root / "masks" / "train" / "s01" / "00" / mask_name, mask)
    ds = ReLoBlurDataset(root, "train")
    assert len(ds) == 2
    item = ds[1]
    assert item["blur"].shape == (3, 40, 48) and item["mask"].shape == (1, 40, 48)
    assert item["mask"].sum() == 10 * 25 and not item["is_global"]
    assert item["sharp"].max() <= 1 and item["sharp"].dtype == torch.float32
    _save_png(root / "train" / "s02" / "00" / "000_blur.png", _texture(rng, 40, 48))
    _save_png(root / "train" / "s02" / "00" / "000_sharp.png", _texture(rng, 40, 48))
    with pytest.raises(FileNotFoundError, match="no mask"):
        ReLoBlurDataset(root, "train")


def test_gopro_reader_and_real_stream(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "GOPRO"
    for seq in ("GOPR0001_00", "GOPR0002_00"):
        for name in ("000001.png", "000002.png"):
            sharp = _texture(rng, 48, 64)
            _save_png(root / "train" / seq / "sharp" / name, sharp)
            _save_png(root / "train" / seq / "blur" / name, sharp // 2)
            _save_png(root / "train" / seq / "blur_gamma" / name, sharp // 3)
    ds = GoProDataset(root, "train")
    assert len(ds) == 4
    item = ds[0]
    assert item["is_global"] and bool((item["mask"] == 1).all())
    expected_blur = torch.from_numpy(np.asarray(Image.open(ds.pairs[0][1])) // 2)
    assert torch.allclose(item["blur"], expected_blur.permute(2, 0, 1).float() / 255)
    gamma = GoProDataset(root, "train", gamma=True)
    assert gamma.pairs[0][0].parent.name == "blur_gamma"
    stream = SampleStream(StreamSettings(seed=5, crop=32, photos=None, gopro=str(root)))
    a, b = stream(7), stream(7)
    assert a["blur"].shape == (3, 32, 32) and torch.equal(a["blur"], b["blur"])


def test_stream_is_deterministic_and_layout_independent(photos):
    stream = SampleStream(StreamSettings(seed=11, crop=32, photos=str(photos)))
    single = StepBatchDataset(stream, batch_size=4, world_size=1, rank=0)
    rank1 = StepBatchDataset(stream, batch_size=2, world_size=2, rank=1)
    # Step 3, slot 1 of rank 1 (2 ranks x 2) is slot 3 of step 3 with one process x 4.
    assert rank1.global_index(3 * 2 + 1) == single.global_index(3 * 4 + 3)
    x, y = stream(rank1.global_index(7)), single[15]
    for key in ("blur", "sharp", "mask", "trajectory"):
        assert torch.equal(x[key], y[key])
    assert x["blur"].shape == (3, 32, 32) and x["trajectory"].shape == (4, 32, 32)


def test_degradation_is_what_noise_and_jpeg_added_to_the_clean_render(photos):
    from m2ae_core.data.synthetic import SynthParams, SyntheticBlurSource

    paths = sorted(photos.iterdir())
    params = SynthParams(size=(48, 48), global_prob=0.0, noise_prob=1.0, jpeg_prob=1.0)
    noisy = SyntheticBlurSource(paths, params, seed=2).sample(0)
    clean = SyntheticBlurSource(paths, params.replace(noise_prob=0.0, jpeg_prob=0.0),
                                seed=2).sample(0)
    assert noisy.degradation.abs().max() > 0.01
    assert torch.allclose(noisy.blur - noisy.degradation, clean.blur, atol=1e-6)
    assert torch.equal(clean.degradation, torch.zeros_like(clean.blur))


def test_target_keeping_the_degradation_equals_the_input_where_nothing_moved(photos):
    settings = dict(seed=4, crop=32, photos=str(photos), global_prob=0.0, blur_crop_prob=1.0,
                    synthetic={"noise_prob": 1.0, "jpeg_prob": 1.0})
    kept = SampleStream(StreamSettings(target_keeps_degradation=True, **settings))(3)
    clean = SampleStream(StreamSettings(**settings))(3)
    still = clean["mask"][0] == 0
    assert still.any() and (~still).any()
    assert torch.equal(kept["blur"], clean["blur"]) and torch.equal(kept["mask"], clean["mask"])
    # below a quarter of an 8-bit step: the mask rule allows float-rounding-sized changes
    assert (kept["sharp"] - kept["blur"])[:, still].abs().max() < 1e-3  # leave it as it is
    assert (clean["sharp"] - clean["blur"])[:, still].abs().max() > 0.01  # vs denoise it


class _FixedRng:
    def __init__(self, flip: bool, k: int) -> None:
        self.flip, self.k = flip, k

    def random(self):
        return 0.0 if self.flip else 0.9

    def integers(self, n):
        return self.k


def _marker_item(size=16, p=(5, 3), o_e=(4, 0), o_s=(-1, 2)):
    """sharp has a marker at p (x, y); blur has one at p + o_e (end) and one at p + o_s
    (start, another channel). The trajectory at p holds o_s and o_e."""
    sharp = torch.zeros(3, size, size)
    blur = torch.zeros(3, size, size)
    sharp[0, p[1], p[0]] = 1
    blur[1, p[1] + o_e[1], p[0] + o_e[0]] = 1
    blur[2, p[1] + o_s[1], p[0] + o_s[0]] = 1
    traj = torch.zeros(4, size, size)
    traj[:, p[1], p[0]] = torch.tensor([o_s[0], o_s[1], o_e[0], o_e[1]], dtype=torch.float32)
    return {"blur": blur, "sharp": sharp, "mask": (sharp[:1] > 0).float(), "trajectory": traj}


def _where(channel: torch.Tensor) -> tuple[int, int]:
    y, x = (channel > 0.5).nonzero()[0].tolist()
    return x, y


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_augmentation_moves_vectors_with_pixels(flip, k):
    out = augment(_marker_item(), _FixedRng(flip, k))
    px, py = _where(out["sharp"][0])
    sdx, sdy, edx, edy = out["trajectory"][:, py, px].tolist()
    assert _where(out["blur"][1]) == (px + edx, py + edy)
    assert _where(out["blur"][2]) == (px + sdx, py + sdy)
    assert _where(out["mask"][0]) == (px, py)


def test_quarter_turn_makes_horizontal_motion_vertical():
    out = augment(_marker_item(o_e=(4, 0), o_s=(-4, 0)), _FixedRng(False, 1))
    px, py = _where(out["sharp"][0])
    sdx, sdy, edx, edy = out["trajectory"][:, py, px].tolist()
    assert (sdx, edx) == (0, 0) and abs(edy) == 4 and sdy == -edy
    flipped = transform_trajectory(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1), True, 0)
    assert flipped.flatten().tolist() == [-1.0, 2.0, -3.0, 4.0]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("k", range(4))
def test_augment_is_a_flip_then_quarter_turns_bit_for_bit(flip, k):
    g = torch.Generator().manual_seed(k)
    item = {"blur": torch.rand(3, 6, 9, generator=g), "sharp": torch.rand(3, 6, 9, generator=g),
            "mask": torch.rand(1, 6, 9, generator=g), "trajectory": torch.randn(4, 6, 9, generator=g)}
    out = augment(item, _FixedRng(flip, k))
    for key in ("blur", "sharp", "mask"):
        x = item[key].flip(-1) if flip else item[key]
        assert torch.equal(out[key], torch.rot90(x, k, (-2, -1)))
    t = item["trajectory"].flip(-1) if flip else item["trajectory"]
    dx, dy = torch.rot90(t, k, (-2, -1)).view(2, 2, 6 if k % 2 == 0 else 9, -1).unbind(1)
    dx = -dx if flip else dx
    for _ in range(k):  # a quarter turn of torch.rot90 takes (dx, dy) to (dy, -dx)
        dx, dy = dy, -dx
    assert torch.equal(out["trajectory"], torch.stack((dx, dy), 1).reshape(out["trajectory"].shape))


def test_blur_aware_crop_centres_on_blur():
    item = _marker_item(size=64, p=(50, 40), o_e=(2, 0), o_s=(-2, 0))
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(40):
        crop = blur_aware_crop(item, 16, rng, blur_prob=1.0)
        assert crop["blur"].shape == (3, 16, 16)
        hits += int(crop["mask"].sum() == 1)
    assert hits == 40
    small = blur_aware_crop(_marker_item(size=16), 32, rng)  # padded up
    assert small["sharp"].shape == (3, 32, 32)


def test_extra_photo_folders_join_the_training_pool(tmp_path):
    main, extra = tmp_path / "main", tmp_path / "extra"
    main.mkdir(), extra.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(main / "red.png")
    Image.new("RGB", (64, 64), (30, 30, 200)).save(extra / "blue.png")
    # A held-out benchmark photo copied into an extra folder must not leak into training.
    Image.new("RGB", (64, 64), (30, 200, 30)).save(extra / "coffee.png")
    settings = StreamSettings(seed=3, crop=32, photos=str(main), extra_photos=(str(extra),))
    names = [p.name for p in training_photo_paths(settings)]
    assert names == ["red.png", "blue.png"]
    stream = SampleStream(settings)
    dominant = {int(stream(g)["sharp"].mean((1, 2)).argmax()) for g in range(12)}
    assert dominant == {0, 2}  # red and blue photos both drawn, never the green one


def test_extra_photos_must_be_a_list_of_existing_folders(tmp_path):
    with pytest.raises(ConfigError, match="extra_photos must be a list"):
        config_from_dict({"data": {"extra_photos": "some/folder"}})
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    settings = StreamSettings(seed=3, crop=32, photos=str(tmp_path),
                              extra_photos=(str(tmp_path / "missing"),))
    with pytest.raises(FileNotFoundError, match="missing"):
        training_photo_paths(settings)
