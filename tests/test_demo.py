"""The Gradio demo (demo/app.py) end to end: a real server in a subprocess, driven by
gradio_client, plus the Space packaging and the ``m2ae demo`` command.

Needs the demo extra (``pip install -e '.[demo]'``, see .ci/demo_env.sh); skipped without it.
The server runs a tiny random model, so these tests check plumbing, not restoration quality.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client (comes with gradio)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from m2ae_core import build_model, save_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo"
APP = DEMO / "app.py"
TEST_MAX_PIXELS = 200_000  # above the 384x384 examples, below a 500x500 upload
START_TIMEOUT = 120


# --------------------------------------------------------------------------- #
# a real server (also used by test_demo_browser.py)
# --------------------------------------------------------------------------- #
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env(folder: Path, model: Path | str, **extra: str) -> dict:
    env = os.environ.copy()
    env.update(M2AE_MODEL=str(model), M2AE_DEVICE="cpu", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(folder / "gradio_cache"),
               M2AE_DEMO_MAX_PIXELS=str(TEST_MAX_PIXELS), M2AE_DEMO_CONCURRENCY="2",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GRADIO_SERVER_PORT", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def demo_server(folder: Path, model: Path | str, **extra_env: str):
    """Launch ``python demo/app.py`` on a free port; yield its URL; stop it afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port)],
            env=demo_env(folder, model, **extra_env), cwd=folder, stdout=log,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"demo did not answer within {START_TIMEOUT}s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tiny_model(path: Path) -> Path:
    save_weights(build_model("small", width=8), path)
    return path


HUB_ID = "m2ae-test/tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, its model given as a Hub repo id that only the local HF cache
    holds, with HF_HUB_OFFLINE=1.  The cached file is deleted once the server is up, so every
    request also proves the model was loaded once at start-up, not per request."""
    folder = tmp_path_factory.mktemp("demo_server")
    hub_cache = folder / "hf_home" / "hub"
    repo = hub_cache / f"models--{HUB_ID.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    cached = tiny_model(repo / "snapshots" / commit / "model.safetensors")
    with demo_server(folder, HUB_ID, HF_HOME=str(folder / "hf_home"),
                     HF_HUB_CACHE=str(hub_cache)) as url:
        cached.unlink()
        yield url


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server, verbose=False,
                  download_files=str(tmp_path_factory.mktemp("client_downloads")))


def _photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth picture with a horizontally smeared bright square (a 'moving' subject)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0 * x], -1) * 200 + rng.normal(0, 4, (height, width, 3))
    square = np.zeros((height, width))
    square[height // 3:2 * height // 3, width // 3:width // 2] = 1
    kernel = np.ones(9) / 9
    square = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, square)
    image = base * (1 - square[..., None]) + 250 * square[..., None]
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def _restore(client, image, mask=None, threshold=0.5, preserve_sharp=False, detect_shake=True,
             best_quality=False):
    return client.predict(handle_file(str(image)), mask, threshold, preserve_sharp, detect_shake,
                          best_quality, api_name="/restore")


def _files_by_suffix(files) -> dict:
    return {re.sub(r"^.*_(restored|mask|trajectory)\.png$", r"\1", Path(f).name): Path(f)
            for f in files}


# --------------------------------------------------------------------------- #
# end to end through gradio_client
# --------------------------------------------------------------------------- #
def test_restore_returns_png_of_input_size_binary_mask_and_stats(client, tmp_path):
    photo = _photo(tmp_path / "street.png", 72, 52)
    (before, after), overlay, motion, summary, stats, files = _restore(client, photo)

    for path in (before, after, overlay, motion):
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.size == (72, 52)
    outputs = _files_by_suffix(files)
    assert set(outputs) == {"restored", "mask", "trajectory"}
    assert all(p.name.startswith("street_") for p in outputs.values())
    with Image.open(outputs["restored"]) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (72, 52), "RGB")
    with Image.open(outputs["mask"]) as im:
        mask = np.asarray(im)
    assert mask.shape == (52, 72)
    assert set(np.unique(mask)) <= {0, 255}

    for key in ("macs", "dense_macs", "fraction_processed", "seconds", "mask_fraction"):
        assert key in stats, key
    assert 0.0 <= stats["fraction_processed"] <= 1.0
    assert 0 < stats["macs"] <= stats["dense_macs"]
    assert stats["seconds"] > 0 and stats["user_mask"] is False and stats["shake_test"] is True
    assert abs(stats["mask_fraction"] - (mask > 0).mean()) < 1e-6
    assert "GMAC" in summary and "%" in summary and " s** on cpu" in summary


def test_best_quality_averages_eight_views(client, tmp_path):
    photo = _photo(tmp_path / "best.png", 64, 48)
    *_, plain_stats, plain_files = _restore(client, photo)
    *_, summary, stats, files = _restore(client, photo, best_quality=True)
    assert stats["ensemble"] == 8 and plain_stats["ensemble"] == 1
    assert "average of 8 mirrored / rotated restorations" in summary
    assert 7 * plain_stats["dense_macs"] < stats["dense_macs"] < 9 * plain_stats["dense_macs"]
    best = np.asarray(Image.open(_files_by_suffix(files)["restored"]))
    plain = np.asarray(Image.open(_files_by_suffix(plain_files)["restored"]))
    assert best.shape == plain.shape and not np.array_equal(best, plain)


def test_exif_orientation_is_honoured(client, tmp_path):
    upright = np.asarray(Image.open(_photo(tmp_path / "upright.png", 64, 40)))
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 40 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    (before, after), *_ = _restore(client, tmp_path / "phone.jpg")
    for path in (before, after):
        with Image.open(path) as im:
            assert im.size == (64, 40)
    shown = np.asarray(Image.open(before).convert("RGB"), dtype=np.float64)
    assert np.abs(shown - upright).mean() < 6  # upright, not merely the right size (JPEG loss)


def test_colour_profile_reaches_the_comparison_and_the_download(client, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(_photo(tmp_path / "p.png", 48, 40)).save(tmp_path / "p3.jpg", icc_profile=profile)
    (before, after), overlay, *_, files = _restore(client, tmp_path / "p3.jpg")
    for path in (before, after, overlay, _files_by_suffix(files)["restored"]):
        with Image.open(path) as im:
            assert im.info.get("icc_profile") == profile, path
    with Image.open(_files_by_suffix(files)["mask"]) as im:
        assert "icc_profile" not in im.info  # a map, not a picture in the photo's colours


def test_heic_upload_is_restored(client, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")  # in the test extra; CI has it
    pillow_heif.register_heif_opener()
    Image.open(_photo(tmp_path / "p.png", 48, 40)).save(tmp_path / "IMG_0002.heic", quality=95)
    (before, after), *_, files = _restore(client, tmp_path / "IMG_0002.heic")
    for path in (before, after, _files_by_suffix(files)["restored"]):
        with Image.open(path) as im:
            assert (im.format, im.size) == ("PNG", (48, 40))


def test_user_mask_overrides_the_prediction(client, tmp_path):
    photo = _photo(tmp_path / "p.png", 64, 48)
    layer = np.zeros((48, 64, 4), np.uint8)  # a red stroke on a transparent layer
    layer[10:30, 20:44] = (255, 48, 48, 255)
    Image.fromarray(layer).save(tmp_path / "stroke.png")
    editor = {"background": None, "layers": [handle_file(str(tmp_path / "stroke.png"))],
              "composite": None}
    *_, summary, stats, files = _restore(client, photo, mask=editor)
    mask = np.asarray(Image.open(_files_by_suffix(files)["mask"])) > 0
    assert np.array_equal(mask, layer[..., 3] > 0)
    assert stats["user_mask"] is True and "your mask" in summary

    # a transparent (unpainted) layer means "no mask": the prediction is used
    Image.fromarray(np.zeros((48, 64, 4), np.uint8)).save(tmp_path / "empty.png")
    empty = {"background": None, "layers": [handle_file(str(tmp_path / "empty.png"))],
             "composite": None}
    *_, stats, _ = _restore(client, photo, mask=empty)
    assert stats["user_mask"] is False


def test_16bit_png_downloads_as_16bit(client, tmp_path):
    rng = np.random.default_rng(1)
    from m2ae_core.imageio import read_image, save_image

    save_image(rng.integers(0, 65535, (40, 56, 3), dtype=np.uint16), tmp_path / "deep.png")
    (before, after), *_, files = _restore(client, tmp_path / "deep.png")
    restored = read_image(_files_by_suffix(files)["restored"])
    assert isinstance(restored, np.ndarray) and restored.dtype == np.uint16
    assert restored.shape == (40, 56, 3)
    with Image.open(after) as im:  # the slider shows an 8-bit preview of the same size
        assert im.size == (56, 40)


def test_non_image_upload_gives_a_clear_error(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a picture\n")
    with pytest.raises(AppError) as caught:
        _restore(client, notes)
    message = str(caught.value)
    assert "notes.txt" in message and "not an image" in message
    assert "gradio_cache" not in message  # the server's temp path is not leaked


def test_oversize_image_gives_a_clear_error(client, tmp_path):
    big = _photo(tmp_path / "huge.png", 500, 500)
    with pytest.raises(AppError) as caught:
        _restore(client, big)
    message = str(caught.value)
    assert "huge.png" in message and "500x500" in message
    assert f"at most {TEST_MAX_PIXELS:,} pixels" in message


def test_missing_image_gives_a_clear_error(client):
    with pytest.raises(AppError, match="Upload a photo first"):
        client.predict(None, None, 0.5, False, True, False, api_name="/restore")


def test_two_concurrent_requests_both_succeed(server, tmp_path):
    # Two users, two clients. One client's jobs share one event stream in gradio_client, and
    # once under load in CI the client itself cancelled the second job there
    # (CancelledError in stream_sse_v1plus); the server's concurrency is what is tested.
    sizes = [(80, 56), (48, 64)]
    clients = [Client(server, verbose=False, download_files=str(tmp_path / f"dl{i}"))
               for i in range(len(sizes))]
    jobs = [c.submit(handle_file(str(_photo(tmp_path / f"c{i}.png", w, h, seed=i))), None,
                     0.5, True, False, api_name="/restore")
            for i, (c, (w, h)) in enumerate(zip(clients, sizes))]
    for job, size in zip(jobs, sizes):
        (before, after), *_, stats, files = job.result(timeout=120)
        with Image.open(_files_by_suffix(files)["restored"]) as im:
            assert im.size == size
        assert stats["preserve_sharp"] is True and stats["shake_test"] is False


# --------------------------------------------------------------------------- #
# start-up
# --------------------------------------------------------------------------- #
def test_startup_without_a_model_fails_with_a_clear_message(tmp_path):
    missing = tmp_path / "no_such_model.safetensors"
    proc = subprocess.run([sys.executable, str(APP), "--port", str(_free_port())],
                          env=demo_env(tmp_path, missing), cwd=tmp_path, capture_output=True,
                          text=True, timeout=START_TIMEOUT)
    assert proc.returncode != 0
    assert "cannot start" in proc.stderr and "no_such_model.safetensors" in proc.stderr
    assert "M2AE_MODEL" in proc.stderr
    assert "Running on" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- #
# in-process pieces: the ZeroGPU decorator, the mask reader, the CLI, the Space files
# --------------------------------------------------------------------------- #
def _load_app(name: str):
    spec = importlib.util.spec_from_file_location(name, APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_source_falls_back_to_the_bundled_default(monkeypatch, tmp_path):
    import m2ae_core.weights as W

    app = _load_app("m2ae_demo_app_default")
    monkeypatch.delenv("M2AE_MODEL", raising=False)
    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", tmp_path / "not_bundled_yet.safetensors")
    with pytest.raises(SystemExit) as stopped:
        app.load_demo_model(None, "cpu")
    assert "bundled default" in str(stopped.value) and "M2AE_MODEL" in str(stopped.value)
    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", tiny_model(tmp_path / "bundled.safetensors"))
    model = app.load_demo_model(None, "cpu")
    assert app._MODEL is model and not model.training


def test_model_precision_from_option_environment_or_auto(monkeypatch, tmp_path):
    import torch

    from m2ae_core.precision import auto_dtype

    app = _load_app("m2ae_demo_app_dtype")
    weights = str(tiny_model(tmp_path / "tiny.safetensors"))
    monkeypatch.delenv("M2AE_DTYPE", raising=False)
    dtype_of = lambda model: next(model.parameters()).dtype  # noqa: E731
    assert dtype_of(app.load_demo_model(weights, "cpu")) == auto_dtype(torch.device("cpu"))
    monkeypatch.setenv("M2AE_DTYPE", "fp32")
    assert dtype_of(app.load_demo_model(weights, "cpu")) == torch.float32
    assert dtype_of(app.load_demo_model(weights, "cpu", "bf16")) == torch.bfloat16  # option wins
    monkeypatch.setenv("M2AE_DTYPE", "int8")
    with pytest.raises(SystemExit, match="unknown dtype 'int8'; use 'auto'.*M2AE_DTYPE"):
        app.load_demo_model(weights, "cpu")


def test_spaces_gpu_wraps_only_the_model_call(monkeypatch):
    wrapped = []

    def gpu(task=None, *, duration=None, size=None):
        def decorate(function):
            wrapped.append((function.__name__, duration))
            return function
        return decorate if task is None else decorate(task)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    app = _load_app("m2ae_demo_app_zerogpu")
    assert [name for name, _ in wrapped] == ["run_model"]
    duration = wrapped[0][1]
    assert duration(Image.new("RGB", (100, 100)), None, 0.5, False) == 20
    assert duration(np.broadcast_to(np.uint8(0), (4000, 4000, 3)), None, 0.5, False) == 52
    assert duration(types.SimpleNamespace(size=(10000, 10000)), None, 0.5, False) == 120
    assert duration(np.broadcast_to(np.uint8(0), (1000, 2000, 3)), None, 0.5, False, True, 8) == 52
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert app.on_zero_gpu()


def test_without_spaces_the_model_call_is_plain(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # "import spaces" raises ImportError
    app = _load_app("m2ae_demo_app_plain")
    assert app.spaces is None and not app.on_zero_gpu()
    assert app._gpu(len) is len


def test_the_checkboxes_reach_the_library(monkeypatch):
    app = _load_app("m2ae_demo_app_shake")
    seen = []
    monkeypatch.setattr(app, "_MODEL", object())
    monkeypatch.setattr(app, "deblur", lambda model, image, **kw: seen.append(
        (kw["shake_test"], kw["ensemble"])))
    app.run_model(Image.new("RGB", (8, 8)), None, 0.5, False, False)
    app.run_model(Image.new("RGB", (8, 8)), None, 0.5, False)
    app.run_model(Image.new("RGB", (8, 8)), None, 0.5, False, True, 8)
    assert seen == [(False, 1), (True, 1), (True, 8)]


def test_stats_say_when_camera_shake_was_found():
    app = _load_app("m2ae_demo_app_stats")
    stats = {"fraction_processed": 1.0, "macs": 2e9, "dense_macs": 2e9, "seconds": 1.0,
             "device": "cpu", "tiles": 1}
    mask = np.ones((4, 4), bool)
    assert "camera shake" not in app._stats_markdown(stats, mask, False)
    assert "camera shake" not in app._stats_markdown({**stats, "camera_shake": False}, mask, False)
    shaken = app._stats_markdown({**stats, "camera_shake": True}, mask, False)
    assert "camera shake found: the whole frame was restored" in shaken


def test_mask_from_editor(tmp_path):
    app = _load_app("m2ae_demo_app_mask")
    assert app.mask_from_editor(None) is None
    assert app.mask_from_editor({"background": None, "layers": [], "composite": None}) is None
    a = np.zeros((20, 30, 4), np.uint8)
    a[2:6, 3:9, 3] = 255
    b = np.zeros((20, 30), np.uint8)  # a plain mask image: white = blurred
    b[10:12, 20:25] = 255
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    payload = {"layers": [{"path": str(tmp_path / "a.png")}, {"path": str(tmp_path / "b.png")}]}
    mask = np.asarray(app.mask_from_editor(payload)) > 0
    assert mask.sum() == 4 * 6 + 2 * 5 and mask[3, 4] and mask[11, 22]


def test_m2ae_demo_command_help(capsys):
    from m2ae_core.cli import main

    with pytest.raises(SystemExit) as done:
        main(["demo", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--port", "--host", "--max-pixels", "--share"):
        assert option in out


def test_space_front_matter_and_requirements():
    yaml = pytest.importorskip("yaml")
    text = (DEMO / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---")[1])
    assert front["sdk"] == "gradio" and str(front["sdk_version"]).startswith("6.")
    assert (DEMO / front["app_file"]).is_file()
    assert front["license"] == "mit" and front["models"] and front["python_version"]
    assert len(front["short_description"]) <= 60
    lines = [line.strip() for line in (DEMO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    # a Space installs requirements.txt before the repository is copied in: no local paths
    assert not any(line in (".", "..") or line.startswith(("-e", "./", "../")) for line in lines)
    assert any(line.startswith("m2ae") and "git+https://" in line for line in lines)
    # phone uploads (HEIC) need the plugin in the Space too
    assert any(line.startswith("m2ae[") and "heif" in line.split("]")[0] for line in lines)
