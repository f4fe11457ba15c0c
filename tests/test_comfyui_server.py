"""The node pack inside a real ComfyUI 0.3.75 server (started on CPU, stopped by its PID).

The server gets a base directory of its own: ``custom_nodes/comfyui-m2ae`` (a copy of what a
clone of this repo gives ComfyUI, without the bundled weights, so the tests choose whether
the bundled default exists), ``models/m2ae`` with a tiny random model, and a second ``m2ae``
folder registered through ``--extra-model-paths-config``. Needs ``.ci/comfyui_env.sh``.
"""
from __future__ import annotations

import io
import json
import shutil
import time
import uuid

import pytest
from PIL import Image

from comfy_helpers import (BUNDLED, NODE_IDS, PACK_NAME, REPO, SKIP_REASON, ComfyServer,
                           comfy_env, copy_pack, load_pair, strip_meta, ui_to_api, workflow_names)

ENV = comfy_env()
pytestmark = pytest.mark.skipif(ENV is None, reason=SKIP_REASON)
EXAMPLES = REPO / "m2ae_core" / "examples"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import randomize_
    from m2ae_core import build_model, save_weights

    base = tmp_path_factory.mktemp("comfyui")
    pack = copy_pack(base / "custom_nodes" / PACK_NAME)
    models = base / "models" / "m2ae"
    models.mkdir(parents=True)
    save_weights(randomize_(build_model("small", width=8), seed=5), models / "tiny.safetensors")
    (models / "ignored.pth").write_bytes(b"pickles are never offered")
    extra = base / "shared_models" / "m2ae_extra"
    extra.mkdir(parents=True)
    save_weights(randomize_(build_model("small", width=8), seed=6), extra / "extra.safetensors")
    config = base / "extra_model_paths.yaml"
    config.write_text(f"m2ae_test:\n    base_path: {base / 'shared_models'}\n    m2ae: m2ae_extra\n")

    srv = ComfyServer(ENV[0], ENV[1], base, extra_paths=config)
    srv.pack, srv.models = pack, models
    started = time.monotonic()
    srv.start()
    srv.startup_seconds = time.monotonic() - started
    try:
        yield srv
    finally:
        srv.stop()
        print(f"\nComfyUI log tail:\n{srv.log_tail(3000)}")
        assert srv.process.poll() is not None


@pytest.fixture(scope="module")
def uploaded(server):
    """The images the shipped workflows name, uploaded through /upload/image."""
    sizes = {}
    for name in ("coffee_9.png", "coffee_9_mask.png"):
        data = (EXAMPLES / name).read_bytes()
        answer = server.upload_image(name, data)
        assert answer["name"] == name and answer["type"] == "input"
        assert (server.base / "input" / name).read_bytes() == data
        sizes[name] = Image.open(io.BytesIO(data)).size
    return sizes


def set_bundled(server, present: bool) -> None:
    target = server.pack / "m2ae_core" / "weights" / "m2ae_default.safetensors"
    if present:
        shutil.copy2(server.models / "tiny.safetensors", target)
    else:
        target.unlink(missing_ok=True)


def run(server, prompt: dict) -> dict:
    status, answer = server.queue_prompt(prompt)
    assert status == 200, answer
    assert answer.get("node_errors") == {}, answer
    return server.wait_history(answer["prompt_id"])


def messages(entry: dict, kind: str) -> list[dict]:
    return [data for name, data in entry["status"].get("messages", []) if name == kind]


# --------------------------------------------------------------------------- the pack loads

def test_pack_imports_and_every_node_is_listed(server):
    log = server.log()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_NAME in line]
    assert not failed, server.log_tail()
    assert f"custom_nodes/{PACK_NAME}" in log  # listed among the imported custom nodes
    assert "Unable to parse pyproject.toml" not in log  # ComfyUI reads our [tool.comfy]
    # m2ae is not installed in ComfyUI's venv: the pack uses its own copy of m2ae_core
    assert f"M2AE nodes: m2ae_core from {server.pack / 'm2ae_core'}" in log
    info = server.get_json("/object_info")
    for node_id in NODE_IDS:
        assert node_id in info, f"{node_id} missing from /object_info"
        node = info[node_id]
        assert node["python_module"] == f"custom_nodes.{PACK_NAME}"
        assert node["category"] == "M2AE" and node["description"]
        for group in node["input"].values():
            for name, spec in group.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert info["M2AEPrunedDeblur"]["output"] == ["IMAGE", "MASK"]
    assert info["M2AEEstimateTrajectory"]["output"] == ["IMAGE", "M2AE_TRAJECTORY"]
    print(f"ComfyUI started in {server.startup_seconds:.1f} s")


def test_model_combo_lists_both_m2ae_folders_and_only_safetensors(server):
    info = server.get_json("/object_info/M2AELoadModel")["M2AELoadModel"]
    kind, spec = info["input"]["required"]["model_name"]
    assert spec["options"] == [BUNDLED, "extra.safetensors", "tiny.safetensors"]
    assert spec["default"] == BUNDLED


# --------------------------------------------------------------------------- workflows

@pytest.mark.parametrize("name", workflow_names())
def test_ui_workflow_converts_to_its_api_workflow(server, name):
    info = server.get_json("/object_info")
    ui, api = load_pair(name)
    assert ui_to_api(ui, info) == strip_meta(api)


def test_missing_weights_workflow_is_an_execution_error_with_our_message(server, uploaded):
    set_bundled(server, False)
    _, api = load_pair("predict_mask_then_deblur")
    entry = run(server, api)
    assert entry["status"]["status_str"] == "error"
    errors = messages(entry, "execution_error")
    assert len(errors) == 1, entry["status"]
    error = errors[0]
    assert error["node_type"] == "M2AELoadModel"
    assert "bundled default model is not installed" in error["exception_message"]
    assert str(server.models) in error["exception_message"]
    assert "press R" in error["exception_message"]


@pytest.mark.parametrize("name", workflow_names())
def test_api_workflow_runs(server, uploaded, name):
    set_bundled(server, True)
    _, api = load_pair(name)
    entry = run(server, api)
    assert entry["status"]["status_str"] == "success", entry["status"]
    output_nodes = {nid for nid, n in api.items() if n["class_type"] in ("SaveImage", "PreviewImage")}
    assert set(entry["outputs"]) == output_nodes
    width, height = uploaded["coffee_9.png"]
    for nid in output_nodes:
        images = entry["outputs"][nid]["images"]
        assert images
        for image in images:
            picture = Image.open(io.BytesIO(server.view(image)))
            assert picture.size == (width, height), (nid, image)


def test_models_from_the_models_folder_and_an_extra_path(server, uploaded):
    prompt = {
        "1": {"class_type": "M2AELoadModel",
              "inputs": {"model_name": "tiny.safetensors", "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "M2AELoadModel",
              "inputs": {"model_name": "extra.safetensors", "device": "auto", "dtype": "auto"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "coffee_9.png"}},
        "4": {"class_type": "M2AEPrunedDeblur",
              "inputs": {"m2ae_model": ["1", 0], "image": ["3", 0], "threshold": 0.5,
                         "preserve_sharp": False, "tile_size": 128, "self_ensemble": "x2"}},
        "5": {"class_type": "M2AEPredictBlurMask",
              "inputs": {"m2ae_model": ["2", 0], "image": ["4", 0], "threshold": 0.5,
                         "self_ensemble": "x4"}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 1]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    image = entry["outputs"]["7"]["images"][0]
    assert Image.open(io.BytesIO(server.view(image))).size == uploaded["coffee_9.png"]


def test_bad_tile_size_is_refused_when_queued(server, uploaded):
    _, api = load_pair("predict_mask_then_deblur")
    api = json.loads(json.dumps(api))
    deblur_id = next(nid for nid, n in api.items() if n["class_type"] == "M2AEPrunedDeblur")
    api[deblur_id]["inputs"]["tile_size"] = 10
    status, answer = server.queue_prompt(api)
    # ComfyUI answers 200 when other outputs of the graph are valid: it queues those and
    # reports the invalid node in node_errors (400 only when no output is left)
    details = json.dumps(answer["node_errors"][deblur_id])
    assert "tile_size must be 0" in details and "custom_validation_failed" in details
    if status == 200:
        entry = server.wait_history(answer["prompt_id"])
        assert "M2AEPrunedDeblur" not in json.dumps(entry["status"])
        assert deblur_id not in entry["outputs"]


# --------------------------------------------------------------------------- cancel

def test_interrupt_stops_a_long_tiled_run(server, uploaded):
    prompt = {
        "1": {"class_type": "M2AELoadModel",
              "inputs": {"model_name": "tiny.safetensors", "device": "auto", "dtype": "auto"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "coffee_9.png"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 48}},
        "4": {"class_type": "M2AEPrunedDeblur",
              "inputs": {"m2ae_model": ["1", 0], "image": ["3", 0], "threshold": 0.5,
                         "preserve_sharp": False, "tile_size": 64}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    client_id = uuid.uuid4().hex
    ws = server.websocket(client_id)
    try:
        status, answer = server.queue_prompt(prompt, client_id)
        assert status == 200 and answer["node_errors"] == {}, answer
        prompt_id = answer["prompt_id"]
        progress, interrupted_at, outcome = [], None, None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            message = ws.receive()
            if not message:
                continue
            kind, data = message["type"], message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "progress" and data.get("node") == "4":
                progress.append((data["value"], data["max"]))
                if interrupted_at is None and data["value"] >= 2:
                    status, _ = server.post_json("/interrupt", {"prompt_id": prompt_id})
                    assert status == 200
                    interrupted_at = time.monotonic()
            elif kind in ("execution_interrupted", "execution_error", "execution_success"):
                outcome = (kind, data, time.monotonic())
                break
    finally:
        ws.close()
    assert interrupted_at is not None, f"no progress from the node: {progress[-5:]}"
    assert outcome is not None, "the run neither finished nor stopped"
    kind, data, ended = outcome
    assert kind == "execution_interrupted", (kind, data)
    assert data["node_type"] == "M2AEPrunedDeblur"
    total = progress[-1][1]
    assert progress[-1][0] < total / 4, f"ran to {progress[-1][0]} of {total} tiles"
    assert ended - interrupted_at < 30
    print(f"interrupted at tile {progress[-1][0]} of {total}, stopped "
          f"{ended - interrupted_at:.2f} s after /interrupt")
    entry = server.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert messages(entry, "execution_interrupted")
    assert server.get_json("/queue")["queue_running"] == []
