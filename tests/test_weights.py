"""Weights I/O (m2ae_core.weights): formats, resolution order, Hub cache, clear errors."""
import json
import logging
import socket
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import randomize_
from m2ae_core import weights as W
from m2ae_core.config import PRESETS
from m2ae_core.errors import ConfigError, WeightsError
from m2ae_core.network import build_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _small(seed=0):
    return randomize_(build_model("small"), seed=seed)


def _assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    model = _small()
    path = tmp_path_factory.mktemp("small") / "small.safetensors"
    W.save_weights(model, path)
    return path, model


@pytest.fixture(scope="module")
def nafnet_pth(tmp_path_factory):
    """A NAFNet/BasicSR style checkpoint: {'params': sd} with DataParallel's 'module.'."""
    model = randomize_(build_model("nafnet-small"), seed=3)
    path = tmp_path_factory.mktemp("nafnet") / "NAFNet-small.pth"
    torch.save({"params": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path, model


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to resolve a host name or open a connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """An empty HF home in tmp_path, set after huggingface_hub was imported."""
    # huggingface_hub reads its env vars at import: import it first so that the variables
    # below are only visible at call time, as in a real session that changes them late.
    import huggingface_hub  # noqa: F401

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return home / "hub"


def _cache_repo(cache: Path, repo: str, files: dict, commit: str = COMMIT, ref: str = "main"):
    """Lay out a repo the way huggingface_hub caches it: snapshots/<commit>/<file> + refs/<ref>."""
    owner, name = repo.split("/")
    root = cache / f"models--{owner}--{name}"
    snapshot = root / "snapshots" / commit
    for filename, data in files.items():
        target = snapshot / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snapshot


# --------------------------------------------------------------------------- formats

def test_safetensors_round_trip_with_config_in_metadata(small_file):
    path, model = small_file
    with safe_open(str(path), framework="pt") as reader:
        meta = reader.metadata()
        assert all(reader.get_tensor(k).dtype == torch.float32 for k in reader.keys())
    assert meta["format"] == "m2ae" and meta["m2ae_version"] == "1"
    assert json.loads(meta["m2ae_config"]) == json.loads(json.dumps(PRESETS["small"].to_dict()))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left

    loaded = W.load_model(path)
    assert not loaded.training
    assert loaded.config == PRESETS["small"] and loaded.config.name == "small"
    _assert_same_state(loaded.state_dict(), model.state_dict())
    assert loaded.m2ae_missing_keys == []

    config, state = W.load_state(str(path))
    assert config == PRESETS["small"]
    _assert_same_state(state, model.state_dict())


def test_failed_save_keeps_the_existing_file(tmp_path, monkeypatch, small_file):
    path = tmp_path / "keep.safetensors"
    path.write_bytes(small_file[0].read_bytes())
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        W.save_weights(build_model("nafnet-small"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_directory_round_trip(tmp_path):
    model = _small(seed=1)
    folder = W.save_pretrained(model, tmp_path / "m2ae-small")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "m2aenet" and config["width"] == 16

    loaded = W.load_model(folder)
    assert loaded.config == model.config and loaded.config.name == "small"
    _assert_same_state(loaded.state_dict(), model.state_dict())
    # config.json wins over the metadata, and its fields are validated
    config["enc_blocks"] = "four"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="enc_blocks"):
        W.load_model(str(folder))


def test_nafnet_checkpoint_fills_the_plain_parts(nafnet_pth, caplog):
    path, nafnet = nafnet_pth
    with caplog.at_level(logging.WARNING, logger="m2ae_core.weights"):
        model = W.load_model(path, preset="small")
    assert model.config == PRESETS["small"]
    plain = nafnet.state_dict()
    own = model.state_dict()
    for key, value in plain.items():
        assert torch.equal(own[key], value), key
    m2as_only = sorted(set(own) - set(plain))
    assert m2as_only and all(("dconv" in k or "mask_predictor" in k or "motion_analyzer" in k)
                             for k in m2as_only)
    assert sorted(model.m2ae_missing_keys) == m2as_only
    assert "stay at initialisation" in caplog.text


def test_nafnet_checkpoint_without_preset_infers_the_plain_config(nafnet_pth):
    path, nafnet = nafnet_pth
    model = W.load_model(str(path))
    assert model.config == PRESETS["nafnet-small"]
    _assert_same_state(model.state_dict(), nafnet.state_dict())


@pytest.mark.parametrize("wrap", ["params_ema", "state_dict", "model", None])
def test_other_checkpoint_layouts(tmp_path, wrap):
    model = randomize_(build_model("nafnet-small"), seed=4)
    state = model.state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({wrap: state, "step": 10} if wrap else state, path)
    _assert_same_state(W.load_model(path).state_dict(), state)


def test_infer_config_reads_m2as_stages(tmp_path):
    model = _small(seed=2)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no metadata
    config, state = W.load_state(path)
    assert config == PRESETS["small"] and config.name == "inferred"
    assert W.infer_config(build_model("paper").state_dict()) == PRESETS["paper"]
    context = build_model("small", width=8, mask_context=3)
    assert W.infer_config(context.state_dict()) == context.config
    heads = build_model("small", width=8, mask_context=1, mask_global_max=True, mask_evidence=12)
    assert W.infer_config(heads.state_dict()) == heads.config
    _assert_same_state(W.load_model(path).state_dict(), model.state_dict())


def test_device_and_dtype(small_file):
    path, _ = small_file
    assert W.load_model(path, device="cpu", dtype="bf16").intro.weight.dtype == torch.bfloat16
    half = W.load_model(path, device=torch.device("cpu"), dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    with pytest.raises(ConfigError, match="dtype"):
        W.load_model(path, dtype="int8")


def test_default_weights(tmp_path, monkeypatch, small_file):
    missing = tmp_path / "weights" / "m2ae_default.safetensors"
    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", missing)
    with pytest.raises(WeightsError) as info:
        W.load_model()
    text = str(info.value)
    assert str(missing) in text and "not installed yet" in text and "owner/name" in text
    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", small_file[0])
    assert W.load_model().config == PRESETS["small"]


# --------------------------------------------------------------------------- Hugging Face Hub

def test_parse_hub_id():
    assert W.parse_hub_id("owner/name") == W.HubId("owner/name", None, "model.safetensors")
    assert W.parse_hub_id("o-1/n.a_m@v1.0:sub/w.safetensors") == W.HubId(
        "o-1/n.a_m", "v1.0", "sub/w.safetensors")
    for text in ("name", "a/b/c", "./a/b", "/abs/path", "dir/model.safetensors", "C:\\x\\y",
                 "a--b/c", "owner/name:"):
        assert W.parse_hub_id(text) is None, text


def test_hub_repo_from_cache_without_network(hf_env, no_network, small_file, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("hf_hub_download called although the file is cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    path, model = small_file
    data = path.read_bytes()
    _cache_repo(hf_env, "owner/name", {"model.safetensors": data})
    loaded = W.load_model("owner/name")
    _assert_same_state(loaded.state_dict(), model.state_dict())
    assert loaded.config == PRESETS["small"]
    # a pinned commit and a named file are found in the cache as well
    _cache_repo(hf_env, "owner/other", {"sub/w.safetensors": data}, ref="v1")
    assert W.load_model(f"owner/other@{COMMIT}:sub/w.safetensors").config == PRESETS["small"]
    assert W.load_model("owner/other@v1:sub/w.safetensors").config == PRESETS["small"]
    assert no_network == []


def test_hub_repo_config_json_from_cache(hf_env, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = randomize_(build_model("nafnet-small"), seed=5)
    raw = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = hf_env.parent / "plain"
    folder.mkdir(parents=True)
    save_file(raw, str(folder / "model.safetensors"))  # no config in the metadata
    config = {"model_type": "m2aenet", **PRESETS["nafnet-small"].to_dict()}
    _cache_repo(hf_env, "owner/plain",
                {"model.safetensors": (folder / "model.safetensors").read_bytes(),
                 "config.json": json.dumps(config).encode()})
    loaded = W.load_model("owner/plain")
    assert loaded.config == PRESETS["nafnet-small"] and loaded.config.name == "nafnet-small"
    assert no_network == []


def test_hub_offline_and_not_cached(hf_env, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: must still be honoured
    with pytest.raises(WeightsError) as info:
        W.load_model("owner/absent")
    text = str(info.value)
    assert "offline" in text and "HF_HUB_OFFLINE" in text
    assert "owner/absent" in text and str(hf_env) in text
    assert str(Path("owner/absent").absolute()) in text  # the local interpretation too
    assert "\n" not in text
    assert no_network == []


def test_hub_download_only_after_a_cache_miss(hf_env, monkeypatch, small_file):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def fake_download(repo_id, filename, *, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision, cache_dir))
        if repo_id == "owner/unreachable":
            raise LocalEntryNotFoundError("connection error and not in the cache")
        return str(small_file[0])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    _cache_repo(hf_env, "owner/cached", {"model.safetensors": small_file[0].read_bytes()})
    assert W.load_model("owner/cached").config == PRESETS["small"]
    assert calls == []  # cached: no download call at all
    assert W.load_model("owner/remote@dev").config == PRESETS["small"]
    assert calls == [("owner/remote", "model.safetensors", "dev", str(hf_env))]
    with pytest.raises(WeightsError) as info:
        W.load_model("owner/unreachable")
    text = str(info.value)
    assert "could not be reached" in text and "owner/unreachable" in text and str(hf_env) in text


# --------------------------------------------------------------------------- errors

def test_missing_file_names_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError) as info:
        W.load_model("nothing/here.safetensors")
    text = str(info.value)
    assert str(tmp_path / "nothing" / "here.safetensors") in text
    assert "not tried as a Hub repo id" in text
    with pytest.raises(WeightsError, match=str(tmp_path / "gone.pth")):
        W.load_model(tmp_path / "gone.pth")


def test_not_a_checkpoint(tmp_path):
    png = tmp_path / "photo.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(WeightsError, match="not a checkpoint.*PNG image"):
        W.load_model(png)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match="not a checkpoint.*text file"):
        W.load_model(text)


class _Pickled:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"params": _Pickled()}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        W.load_model(path)


def test_truncated_files(tmp_path, small_file, nafnet_pth):
    for source in (small_file[0], nafnet_pth[0]):
        cut = tmp_path / ("cut" + source.suffix)
        data = source.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(WeightsError, match="truncated") as info:
            W.load_model(cut)
        assert "\n" not in str(info.value)


def test_another_architecture_lists_the_keys(tmp_path):
    path = W.save_weights(build_model("nafnet-small"), tmp_path / "nafnet-small.safetensors")
    with pytest.raises(WeightsError) as info:
        W.load_model(path, preset="paper")
    text = str(info.value)
    assert "missing keys" in text and "unexpected keys" in text and "shape mismatches" in text
    assert "encoders.3.4.conv1.weight" in text or "encoders.3.4.beta" in text
    assert "intro.weight: checkpoint (16,3,3,3) vs model (32,3,3,3)" in text
    # an M2AS checkpoint into the plain preset: the M2AS keys are unexpected
    small = W.save_weights(_small(), tmp_path / "s.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected keys \(encoders\.2\.0\.dconv"):
        W.load_model(small, preset="nafnet-small")
    plain = W.load_model(small, preset="nafnet-small", strict=False)
    assert len(plain.m2ae_unexpected_keys) == 40 and plain.m2ae_missing_keys == []
    with pytest.raises(WeightsError, match="shape mismatches"):  # never ignored
        W.load_model(path, preset="paper", strict=False)


def test_invalid_config_metadata(tmp_path):
    state = {k: v.contiguous() for k, v in build_model("nafnet-small").state_dict().items()}
    for bad, field in (({"width": "wide"}, "width"), ({"colour": 1}, "colour"),
                       ({"width": 18}, "width")):
        config = {**PRESETS["nafnet-small"].to_dict(), **bad}
        path = tmp_path / f"{field}.safetensors"
        save_file(state, str(path), metadata={"format": "m2ae", "m2ae_config": json.dumps(config)})
        with pytest.raises(WeightsError, match=field):
            W.load_model(path)
