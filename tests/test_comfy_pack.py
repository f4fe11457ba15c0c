"""The ComfyUI node pack's files, checked without ComfyUI: the entry point outside ComfyUI, the
packaging metadata, and workflows/ (each workflow in ComfyUI's UI format and in API format,
describing the same graph; the server test repeats that check with ComfyUI's own node
definitions and runs every API workflow)."""
import json
import re
import subprocess
import sys
import tomllib

import pytest

from comfy_helpers import BUNDLED, NODE_IDS, REPO, WORKFLOWS, load_pair, structural_differences, \
    workflow_names


def test_repo_root_imports_cleanly_outside_comfyui_and_exposes_nothing():
    code = (
        "import importlib.util, sys\n"
        "path = list(sys.path)\n"
        f"spec = importlib.util.spec_from_file_location('m2ae_pack', {str(REPO / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO)!r}])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "public = [n for n in vars(module) if not n.startswith('_')]\n"
        "assert module.__all__ == [] and public == [], public\n"
        "assert not any(m.startswith(('m2ae_pack.', 'm2ae_nodes', 'comfy')) for m in sys.modules)\n"
        "assert sys.path == path\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _requirement_names(lines) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return names


def test_requirements_for_comfyui_manager_never_list_torch():
    names = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    assert names, "requirements.txt is empty"
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = set(_requirement_names(project["dependencies"])) - {"torch"}
    assert core <= set(names), f"requirements.txt lacks {core - set(names)}"


def test_comfy_registry_metadata():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["Icon"].startswith("https://") and comfy["Icon"].endswith("m2ae_nodes/icon.png")
    assert (REPO / "m2ae_nodes" / "icon.png").is_file()
    repository = data["project"]["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository), repository
    assert comfy["Icon"].startswith(repository.replace("https://github.com/",
                                                       "https://raw.githubusercontent.com/"))


def test_at_least_three_workflows_in_both_formats():
    names = workflow_names()
    assert len(names) >= 3, names
    for name in names:
        assert (WORKFLOWS / f"{name}.json").is_file(), f"{name}: UI format missing"
        assert (WORKFLOWS / f"{name}.api.json").is_file(), f"{name}: API format missing"


@pytest.mark.parametrize("name", workflow_names())
def test_ui_and_api_describe_the_same_graph(name):
    ui, api = load_pair(name)
    assert ui.get("version") == 0.4 and isinstance(ui.get("nodes"), list)
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])
    assert structural_differences(ui, api) == []


@pytest.mark.parametrize("name", workflow_names())
def test_workflows_use_the_bundled_model_and_our_nodes(name):
    _, api = load_pair(name)
    types = {node["class_type"] for node in api.values()}
    assert types & set(NODE_IDS) - {"M2AELoadModel"}, f"{name} uses none of the M2AE nodes"
    loaders = [n for n in api.values() if n["class_type"] == "M2AELoadModel"]
    assert loaders and all(n["inputs"]["model_name"] == BUNDLED for n in loaders)
    assert any(n["class_type"] in ("SaveImage", "PreviewImage") for n in api.values())


def test_the_differences_are_found():
    ui, api = load_pair(workflow_names()[0])
    broken = json.loads(json.dumps(api))
    node = next(n for n in broken.values() if n["class_type"] == "M2AELoadModel")
    node["inputs"]["device"] = "cpu"
    assert any("widget values" in p for p in structural_differences(ui, broken))
    broken = json.loads(json.dumps(api))
    linked = next(n for n in broken.values() if any(isinstance(v, list) for v in n["inputs"].values()))
    key = next(k for k, v in linked["inputs"].items() if isinstance(v, list))
    linked["inputs"][key] = [linked["inputs"][key][0], linked["inputs"][key][1] + 1]
    assert any("links" in p for p in structural_differences(ui, broken))
