"""The M2AE nodes called in-process against a real ComfyUI import (not a server).

These tests import ``comfy``, which needs the ComfyUI venv (torch 2.14.1 + torchvision). Under
any other interpreter this file holds one test that reruns the file with
``$M2AE_COMFYUI_PYTHON -m pytest`` and fails when that run fails, so a plain
``python -m pytest`` runs them too. Without the environment of ``.ci/comfyui_env.sh`` they skip.
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from comfy_helpers import BUNDLED, NODE_IDS, REPO, SKIP_REASON, comfy_env, in_comfy_venv

ENV = comfy_env()

if ENV is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

if not in_comfy_venv():
    def test_nodes_in_the_comfyui_venv():
        """Run this file's in-process tests with the ComfyUI venv's python."""
        started = time.monotonic()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [str(ENV[1]), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             str(REPO / "tests" / "test_nodes.py")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        output = proc.stdout + proc.stderr
        print(output[-4000:])
        assert proc.returncode == 0, f"in-process node tests failed in the ComfyUI venv:\n{output[-12000:]}"
        summary = output.strip().splitlines()[-1]
        passed = int(summary.split(" passed")[0].split()[-1]) if " passed" in summary else 0
        assert passed >= 15 and "failed" not in summary and "error" not in summary, summary
        print(f"(ComfyUI venv run: {time.monotonic() - started:.1f} s)")

else:
    # ------------------------------------------------------------------ ComfyUI, in-process
    sys.path.insert(0, str(ENV[0]))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
    import comfy.model_management as model_management  # noqa: E402
    import comfy.utils  # noqa: E402
    import folder_paths  # noqa: E402

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import m2ae_core.weights as core_weights  # noqa: E402
    import m2ae_nodes  # noqa: E402
    from comfy_api.latest import io  # noqa: E402
    from conftest import randomize_  # noqa: E402
    from m2ae_core import (ImageInputError, M2AEError, WeightsError, build_model,  # noqa: E402
                           analyze, deblur, save_weights)
    from m2ae_core.visualize import trajectory_to_rgb  # noqa: E402
    from m2ae_nodes import models  # noqa: E402
    from m2ae_nodes.nodes import (M2AEEstimateTrajectory, M2AELoadModel,  # noqa: E402
                                  M2AEPredictBlurMask, M2AEPrunedDeblur, M2AETrajectory)

    @pytest.fixture(scope="module")
    def model_dir(tmp_path_factory):
        folder = tmp_path_factory.mktemp("m2ae_models")
        save_weights(randomize_(build_model("small", width=8), seed=3), folder / "tiny.safetensors")
        (folder / "pickled.pth").write_bytes(b"not offered")
        (folder / "notes.txt").write_text("not offered")
        folder_paths.add_model_folder_path("m2ae", str(folder))
        models.clear_cache()
        yield folder
        paths = folder_paths.folder_names_and_paths["m2ae"][0]
        if str(folder) in paths:
            paths.remove(str(folder))

    @pytest.fixture
    def tiny(model_dir):  # fp32: these tests are about the nodes, not about precision
        return M2AELoadModel.execute("tiny.safetensors", "auto", "fp32").args[0]

    @pytest.fixture
    def no_bundled(monkeypatch, tmp_path):
        monkeypatch.setattr(core_weights, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")

    def photo(batch=1, height=48, width=64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(batch, height, width, 3, generator=gen)

    def core(model, image, **kwargs):
        """m2ae_core.deblur on one BHWC item, the reference for the nodes."""
        return deblur(model.network, image, **kwargs)

    def test_gpu_room_is_planned_as_automatic_tiling_will_decide(tiny, monkeypatch):
        from m2ae_core.tiling import untiled_bytes_per_pixel
        from m2ae_nodes import nodes

        per_pixel = untiled_bytes_per_pixel(tiny.network.config.width, tiny.dtype)
        weights = model_management.module_size(tiny.network)
        image = photo(1, 3000, 4000)
        # 24 GB device: 12 MP fits whole in half of it, so ask for twice the whole estimate
        monkeypatch.setattr(model_management, "get_total_memory", lambda device: 24 * 10**9)
        assert nodes.room_to_make(tiny, image, None) == weights + int(2 * 12e6 * per_pixel)
        # 2 GB device: tiles of the largest side that fits in 1 GB
        monkeypatch.setattr(model_management, "get_total_memory", lambda device: 2 * 10**9)
        side = int((10**9 / per_pixel) ** 0.5) // 256 * 256
        assert nodes.room_to_make(tiny, image, None) == weights + int(2 * side**2 * per_pixel)
        # an explicit tile size is what runs
        assert nodes.room_to_make(tiny, image, 512) == weights + int(2 * 512**2 * per_pixel)
        # deblur then finds that much free and makes the same choice
        from m2ae_core.tiling import resolve_tile_size

        assert resolve_tile_size(None, 3000, 4000, bytes_per_pixel=per_pixel,
                                 available=int(2 * side**2 * per_pixel)) == side

    # ------------------------------------------------------------------ schema and entry point

    def test_schemas_are_v3_with_descriptions_and_tooltips():
        for node in m2ae_nodes.NODES:
            assert issubclass(node, io.ComfyNode)
            schema = node.GET_SCHEMA()
            assert schema.node_id in NODE_IDS and schema.node_id.startswith("M2AE")
            assert schema.description and schema.display_name
            for inp in schema.inputs:
                assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"
            for out in schema.outputs:
                assert out.tooltip, f"{schema.node_id} output {out.id} has no tooltip"
        assert [n.GET_SCHEMA().node_id for n in m2ae_nodes.NODES] == list(NODE_IDS)
        # ComfyUI caches a schema per class: node classes must not inherit from one another
        for a in m2ae_nodes.NODES:
            for b in m2ae_nodes.NODES:
                assert a is b or not issubclass(a, b)
        assert M2AELoadModel.RETURN_TYPES == ["M2AE_MODEL"]
        assert M2AEPredictBlurMask.RETURN_TYPES == ["MASK", "MASK"]
        assert M2AEEstimateTrajectory.RETURN_TYPES == ["IMAGE", "M2AE_TRAJECTORY"]
        assert M2AEPrunedDeblur.RETURN_TYPES == ["IMAGE", "MASK"]
        info = M2AEPrunedDeblur.GET_NODE_INFO_V1()
        assert list(info["input"]["optional"]) == ["mask", "tile_context", "detect_camera_shake",
                                                   "self_ensemble"]
        assert list(M2AEPredictBlurMask.GET_NODE_INFO_V1()["input"]["optional"]) == [
            "detect_camera_shake", "self_ensemble"]
        assert list(M2AEEstimateTrajectory.GET_NODE_INFO_V1()["input"]["optional"]) == [
            "detect_camera_shake"]

    def test_repo_root_is_the_pack_entry_point():
        spec = importlib.util.spec_from_file_location(
            "m2ae_pack_under_test", REPO / "__init__.py",
            submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
            assert module.__all__ == ["comfy_entrypoint"]
            assert inspect.iscoroutinefunction(module.comfy_entrypoint)
            extension = asyncio.run(module.comfy_entrypoint())
            nodes = asyncio.run(extension.get_node_list())
            assert [n.GET_SCHEMA().node_id for n in nodes] == list(NODE_IDS)
        finally:
            for name in [m for m in sys.modules if m.startswith(spec.name)]:
                del sys.modules[name]

    def test_model_folder_registration_and_combo(model_dir):
        paths, extensions = folder_paths.folder_names_and_paths["m2ae"]
        assert extensions == {".safetensors"}
        assert paths[0] == os.path.join(folder_paths.models_dir, "m2ae")
        assert str(model_dir) in paths
        kind, spec = M2AELoadModel.GET_NODE_INFO_V1()["input"]["required"]["model_name"]
        assert kind == "COMBO" and spec["default"] == BUNDLED
        assert spec["options"][0] == BUNDLED and "tiny.safetensors" in spec["options"]
        assert not any(o.endswith((".pth", ".txt")) for o in spec["options"])
        # registering again (e.g. after an extra_model_paths.yaml) keeps every folder
        models.register_model_folder()
        assert folder_paths.folder_names_and_paths["m2ae"][0] == paths

    def test_missing_dependencies_say_how_to_install_them():
        from m2ae_nodes import _bootstrap

        message = str(_bootstrap._explain(ModuleNotFoundError("no kornia", name="kornia")))
        assert "'kornia'" in message and "requirements.txt" in message and "ComfyUI's Python" in message

    # ------------------------------------------------------------------ loading

    def test_load_devices_dtypes_and_cache(model_dir):
        from m2ae_core.precision import auto_dtype

        first = M2AELoadModel.execute("tiny.safetensors", "auto", "fp32").args[0]
        assert first.device == model_management.get_torch_device() == torch.device("cpu")
        assert first.dtype == torch.float32 and not first.network.training
        assert next(first.network.parameters()).dtype == torch.float32
        again = M2AELoadModel.execute("tiny.safetensors", "cpu", "fp32").args[0]
        assert again.network is first.network  # cached
        half = M2AELoadModel.execute("tiny.safetensors", "cpu", "bf16").args[0]
        assert half.dtype == torch.bfloat16 and next(half.network.parameters()).dtype == torch.bfloat16
        # auto: m2ae_core's rule for the device (bf16 on a CPU with native bf16, else fp32)
        chosen = M2AELoadModel.execute("tiny.safetensors", "cpu", "auto").args[0]
        assert chosen.dtype == auto_dtype(torch.device("cpu"))
        assert next(chosen.network.parameters()).dtype == chosen.dtype
        # a file replaced under the same name is read again, and ComfyUI sees a new fingerprint
        stamp = M2AELoadModel.fingerprint_inputs("tiny.safetensors", "auto", "auto")
        path = model_dir / "tiny.safetensors"
        save_weights(randomize_(build_model("small", width=8), seed=3), path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert M2AELoadModel.fingerprint_inputs("tiny.safetensors", "auto", "auto") != stamp
        fresh = M2AELoadModel.execute("tiny.safetensors", "auto", "auto").args[0]
        assert fresh.network is not first.network
        assert models.cached_models() <= models.CACHE_SIZE

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_cuda_without_gpu_says_what_to_do(model_dir):
        with pytest.raises(RuntimeError, match="choose device 'auto' or 'cpu'"):
            M2AELoadModel.execute("tiny.safetensors", "cuda", "auto")

    def test_missing_bundled_default_says_where_weights_go(model_dir, no_bundled):
        with pytest.raises(WeightsError) as err:
            M2AELoadModel.execute(BUNDLED, "auto", "auto")
        message = str(err.value)
        assert "bundled default model is not installed" in message
        assert os.path.join(folder_paths.models_dir, "m2ae") in message and str(model_dir) in message
        assert "press R" in message

    def test_bundled_default_is_loaded_when_present(model_dir, monkeypatch):
        monkeypatch.setattr(core_weights, "DEFAULT_WEIGHTS", model_dir / "tiny.safetensors")
        model = M2AELoadModel.execute(BUNDLED, "auto", "auto").args[0]
        assert model.source == str(model_dir / "tiny.safetensors")

    def test_missing_or_wrong_file_names(model_dir):
        with pytest.raises(WeightsError, match="'gone.safetensors' was not found in"):
            M2AELoadModel.execute("gone.safetensors", "auto", "auto")
        with pytest.raises(WeightsError, match="only .safetensors weights are loaded"):
            M2AELoadModel.execute("pickled.pth", "auto", "auto")

    # ------------------------------------------------------------------ the three model nodes

    def test_predict_blur_mask_matches_the_core(tiny):
        image = photo(batch=2)
        # a threshold at the median probability gives a mask with both values
        threshold = float(np.median(core(tiny, image[:1]).probability))
        mask, probability = M2AEPredictBlurMask.execute(tiny, image, threshold).args
        assert mask.shape == probability.shape == (2, 48, 64)
        assert mask.dtype == probability.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert 0 <= float(probability.min()) and float(probability.max()) <= 1
        for i in range(2):
            ref = core(tiny, image[i:i + 1], threshold=threshold)
            assert torch.equal(mask[i], torch.from_numpy(ref.mask.astype(np.float32)))
            assert torch.allclose(probability[i], torch.from_numpy(ref.probability))
        assert 0 < float(mask[0].mean()) < 1

    def test_estimate_trajectory_image_and_payload(tiny):
        image = photo(batch=2, seed=1)
        picture, trajectory = M2AEEstimateTrajectory.execute(tiny, image, 0.5).args
        assert picture.shape == (2, 48, 64, 3) and picture.dtype == torch.float32
        assert 0 <= float(picture.min()) and float(picture.max()) <= 1
        assert isinstance(trajectory, M2AETrajectory)
        assert trajectory.start.shape == trajectory.end.shape == (2, 2, 48, 64)
        assert trajectory.mask.shape == (2, 48, 64) and trajectory.mask.dtype == torch.bool
        refs = [core(tiny, image[i:i + 1], threshold=0.5) for i in range(2)]
        for i, ref in enumerate(refs):
            assert torch.allclose(trajectory.start[i], torch.from_numpy(ref.trajectory[0]))
            assert torch.allclose(trajectory.end[i], torch.from_numpy(ref.trajectory[1]))
        # one colour scale for the whole batch
        scale = max(1.0, max(float(np.hypot(*(r.trajectory[1] - r.trajectory[0])).max()) for r in refs))
        for i, ref in enumerate(refs):
            expected = trajectory_to_rgb(ref.trajectory, max_magnitude=scale)
            assert np.abs(picture[i].numpy() * 255 - expected).max() < 0.51
        assert float(trajectory.displacement.abs().max()) > 0, "no motion: test model too weak"

    def test_estimate_trajectory_refuses_a_plain_backbone(model_dir):
        save_weights(build_model("nafnet-small", width=8), model_dir / "plain.safetensors")
        plain = M2AELoadModel.execute("plain.safetensors", "auto", "auto").args[0]
        with pytest.raises(M2AEError, match="plain NAFNet backbone"):
            M2AEEstimateTrajectory.execute(plain, photo(), 0.5)

    def test_pruned_deblur_matches_the_core(tiny):
        image = photo(batch=2, seed=2)
        restored, used = M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0).args
        assert restored.shape == image.shape and restored.dtype == torch.float32
        assert used.shape == (2, 48, 64)
        for i in range(2):
            ref = core(tiny, image[i:i + 1], threshold=0.5)
            assert torch.allclose(restored[i:i + 1], ref.image, atol=1e-6)
            assert torch.equal(used[i], torch.from_numpy(ref.mask.astype(np.float32)))

    def test_pruned_deblur_user_mask_overrides_the_prediction(tiny):
        image = photo(batch=2, height=40, width=56, seed=4)
        small = torch.zeros(1, 10, 14)  # any resolution: a quarter-size painted mask
        small[:, 2:6, 3:9] = 1.0
        restored, used = M2AEPrunedDeblur.execute(tiny, image, 0.5, True, 0, mask=small).args
        expected = torch.zeros(40, 56)
        expected[8:24, 12:36] = 1.0
        assert torch.equal(used[0], expected) and torch.equal(used[1], expected)
        # preserve_sharp: far from the mask the input is untouched
        assert torch.equal(restored[:, 32:, :], image[:, 32:, :])
        ref = core(tiny, image[1:2], mask=expected, preserve_sharp=True)
        assert torch.allclose(restored[1:2], ref.image, atol=1e-6)
        # one mask per image
        per_item = torch.stack([expected, torch.zeros(40, 56)])
        _, used = M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0, mask=per_item).args
        assert torch.equal(used, per_item)
        with pytest.raises(M2AEError, match="one mask per image"):
            M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0, mask=torch.zeros(3, 40, 56))

    def test_pruned_deblur_tiles(tiny):
        image = photo(height=100, width=130, seed=5)
        restored, used = M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 64).args
        ref = core(tiny, image, threshold=0.5, tile=64)
        assert ref.stats["tiles"] > 1
        assert torch.allclose(restored, ref.image, atol=1e-6)
        assert torch.equal(used[0], torch.from_numpy(ref.mask.astype(np.float32)))

    def test_tile_size_validation():
        assert M2AEPrunedDeblur.validate_inputs(tile_size=0) is True
        assert M2AEPrunedDeblur.validate_inputs(tile_size=64) is True
        assert M2AEPrunedDeblur.validate_inputs() is True  # linked: checked at run time
        message = M2AEPrunedDeblur.validate_inputs(tile_size=10)
        assert isinstance(message, str) and "tile_size must be 0" in message and "64" in message

    def test_bad_inputs_say_what_is_wrong(tiny):
        with pytest.raises(M2AEError, match="tile_size must be 0"):
            M2AEPrunedDeblur.execute(tiny, photo(), 0.5, False, 10)
        with pytest.raises(M2AEError, match="expected a ComfyUI IMAGE"):
            M2AEPrunedDeblur.execute(tiny, torch.rand(48, 64, 3), 0.5, False, 0)
        nan = photo()
        nan[0, 0, 0, 0] = float("nan")
        with pytest.raises(ImageInputError, match="NaN"):
            M2AEPredictBlurMask.execute(tiny, nan, 0.5)
        with pytest.raises(M2AEError, match="Load M2AE Model"):
            M2AEPredictBlurMask.execute("not a model", photo(), 0.5)

    def test_inference_mode_and_half_precision(tiny, model_dir, monkeypatch):
        import m2ae_nodes.nodes as nodes_module
        seen = []

        def spy(*args, **kwargs):
            seen.append(torch.is_inference_mode_enabled())
            return deblur(*args, **kwargs)

        monkeypatch.setattr(nodes_module, "deblur", spy)
        M2AEPrunedDeblur.execute(tiny, photo(batch=2), 0.5, False, 0)
        assert seen == [True, True]  # one call per batch item, each in inference mode
        half = M2AELoadModel.execute("tiny.safetensors", "cpu", "bf16").args[0]
        restored, _ = M2AEPrunedDeblur.execute(half, photo(), 0.5, False, 0).args
        assert restored.dtype == torch.float32 and bool(torch.isfinite(restored).all())

    # ------------------------------------------------------------------ progress and cancel

    def test_progress_bar_counts_tiles_of_every_item(tiny, monkeypatch):
        calls = []
        monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                            lambda value, total, preview, node_id=None: calls.append((value, total)))
        image = photo(batch=2, height=100, width=130, seed=6)
        M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 64)
        tiles = core(tiny, image[:1], tile=64).stats["tiles"]
        steps = 2 * tiles  # image-wide pooling context: two passes over the tiles of an item
        assert tiles > 1 and calls[-1] == (2 * steps, 2 * steps)
        values = [v for v, _ in calls]
        assert values == sorted(values) and len(values) == 2 * steps

    def test_tile_context_option_reaches_deblur(tiny, monkeypatch):
        import m2ae_nodes.nodes as nodes_module
        seen = []

        def spy(*args, **kwargs):
            seen.append(kwargs["tile_context"])
            return deblur(*args, **kwargs)

        monkeypatch.setattr(nodes_module, "deblur", spy)
        image = photo(height=100, width=130, seed=6)
        M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 64)  # graphs without the input
        M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 64, tile_context="tile")
        assert seen == ["image", "tile"]
        schema = M2AEPrunedDeblur.define_schema()
        option = next(i for i in schema.inputs if i.id == "tile_context")
        assert option.optional and option.default == "image"

    def test_camera_shake_option_reaches_the_library(tiny, monkeypatch):
        import m2ae_nodes.nodes as nodes_module
        seen = []

        def spy(real):
            def call(*args, **kwargs):
                seen.append(kwargs["shake_test"])
                return real(*args, **kwargs)
            return call

        monkeypatch.setattr(nodes_module, "deblur", spy(deblur))
        monkeypatch.setattr(nodes_module, "analyze", spy(nodes_module.analyze))
        image = photo(height=64, width=64, seed=7)
        M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0)  # graphs without the input
        M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0, detect_camera_shake=False)
        M2AEPredictBlurMask.execute(tiny, image, 0.5)
        M2AEPredictBlurMask.execute(tiny, image, 0.5, detect_camera_shake=False)
        M2AEEstimateTrajectory.execute(tiny, image, 0.5, detect_camera_shake=False)
        assert seen == [True, False, True, False, False]
        option = next(i for i in M2AEPrunedDeblur.define_schema().inputs
                      if i.id == "detect_camera_shake")
        assert option.optional and option.default is True

    def test_self_ensemble_option_matches_the_core(tiny):
        image = photo(height=48, width=64, seed=8)
        restored, used = M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0,
                                                  self_ensemble="x8").args
        ref = core(tiny, image, ensemble=8)
        assert torch.allclose(restored, ref.image, atol=1e-6)
        assert torch.equal(used[0], torch.from_numpy(ref.mask.astype(np.float32)))
        plain, _ = M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0).args  # older graphs
        assert torch.allclose(plain, core(tiny, image).image, atol=1e-6)
        assert not torch.allclose(plain, restored, atol=1e-4)
        option = next(i for i in M2AEPrunedDeblur.define_schema().inputs
                      if i.id == "self_ensemble")
        assert option.optional and option.default == "off"
        with pytest.raises(M2AEError, match="self_ensemble must be one of off, x2, x4, x8"):
            M2AEPrunedDeblur.execute(tiny, image, 0.5, False, 0, self_ensemble="x3")
        # the mask node: the views' majority and mean probability, as analyze gives them
        mask, probability = M2AEPredictBlurMask.execute(tiny, image, 0.5,
                                                        self_ensemble="x4").args
        ref = analyze(tiny.network, image, ensemble=4)
        assert torch.equal(mask[0], torch.from_numpy(ref.mask.astype(np.float32)))
        assert torch.allclose(probability[0], torch.from_numpy(ref.probability), atol=1e-6)
        single = analyze(tiny.network, image)
        assert not np.allclose(single.probability, ref.probability, atol=1e-5)
        with pytest.raises(M2AEError, match="self_ensemble must be one of"):
            M2AEPredictBlurMask.execute(tiny, image, 0.5, self_ensemble=8)

    def test_interrupt_stops_at_the_next_tile(tiny, monkeypatch):
        calls = []

        def hook(value, total, preview, node_id=None):
            calls.append(value)
            if value == 2:  # the user presses cancel during the third tile
                model_management.interrupt_current_processing(True)

        monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
        try:
            with pytest.raises(model_management.InterruptProcessingException):
                M2AEPrunedDeblur.execute(tiny, photo(batch=3, height=100, width=130), 0.5, False, 64)
        finally:
            model_management.interrupt_current_processing(False)
        assert calls == [1, 2]
        assert not tiny.network.training
