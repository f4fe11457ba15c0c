"""Shared by the ComfyUI tests: where ComfyUI is, workflow conversion, a real ComfyUI server.

The ComfyUI tests need the environment that ``.ci/comfyui_env.sh`` prepares (ComfyUI 0.3.75 and
a separate venv with torch 2.14.1 + torchvision); they read ``M2AE_COMFYUI_DIR`` (the ComfyUI
folder) and ``M2AE_COMFYUI_PYTHON`` (that venv's python) and skip when these are not set.
Nothing here imports ComfyUI: the server runs in its own process, spoken to over HTTP.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
PACK_NAME = "comfyui-m2ae"
BUNDLED = "m2ae_default (bundled)"  # the loader's combo entry for the bundled default
NODE_IDS = ("M2AELoadModel", "M2AEPredictBlurMask", "M2AEEstimateTrajectory", "M2AEPrunedDeblur")

SKIP_REASON = ("ComfyUI tests need a real ComfyUI: run  eval \"$(bash .ci/comfyui_env.sh)\"  "
               "(sets M2AE_COMFYUI_DIR and M2AE_COMFYUI_PYTHON)")


def comfy_env() -> tuple[Path, Path] | None:
    """(ComfyUI folder, its venv's python) from the environment, or None when not configured."""
    folder, python = os.environ.get("M2AE_COMFYUI_DIR"), os.environ.get("M2AE_COMFYUI_PYTHON")
    if not folder or not python:
        return None
    folder_p, python_p = Path(folder), Path(python)
    if not (folder_p / "main.py").is_file():
        raise RuntimeError(f"M2AE_COMFYUI_DIR={folder} has no main.py; rerun .ci/comfyui_env.sh")
    if not python_p.is_file():
        raise RuntimeError(f"M2AE_COMFYUI_PYTHON={python} does not exist; rerun .ci/comfyui_env.sh")
    return folder_p, python_p


def in_comfy_venv() -> bool:
    """True when this interpreter is the ComfyUI venv's (so ``comfy`` can be imported)."""
    env = comfy_env()
    if env is None:
        return False
    venv = env[1].parent.parent
    return Path(sys.prefix).resolve() == venv.resolve()


# --------------------------------------------------------------------------- workflows

def workflow_names() -> list[str]:
    """Names of the workflows/<name>.json (UI) + workflows/<name>.api.json (API) pairs."""
    ui = {p.name[:-len(".json")] for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".api.json")}
    api = {p.name[:-len(".api.json")] for p in WORKFLOWS.glob("*.api.json")}
    return sorted(ui | api)


def load_pair(name: str) -> tuple[dict, dict]:
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / f"{name}.api.json").read_text())
    return ui, api


def _link_inputs(api_node: dict) -> dict:
    return {k: v for k, v in api_node["inputs"].items() if isinstance(v, list)}


def _widget_inputs(api_node: dict) -> dict:
    return {k: v for k, v in api_node["inputs"].items() if not isinstance(v, list)}


UPLOAD_NODES = {"LoadImage", "LoadImageMask"}  # their upload button adds a value to widgets_values


def structural_differences(ui: dict, api: dict) -> list[str]:
    """Differences between a UI-format and an API-format workflow, without node definitions:
    node ids and types, every link (source node/slot -> target node/input name), widget values
    in order (the image upload button's extra UI value aside)."""
    problems = []
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    if set(nodes) != set(api):
        problems.append(f"node ids differ: UI {sorted(nodes)} vs API {sorted(api)}")
    links = {link[0]: link for link in ui["links"]}
    for nid in sorted(set(nodes) & set(api)):
        node, api_node = nodes[nid], api[nid]
        if node["type"] != api_node["class_type"]:
            problems.append(f"node {nid}: UI type {node['type']} vs API {api_node['class_type']}")
        ui_links = {}
        for slot, inp in enumerate(node.get("inputs", [])):
            if inp.get("link") is None:
                continue
            lid, src, src_slot, dst, dst_slot, _ = links[inp["link"]]
            if (str(dst), dst_slot) != (nid, slot):
                problems.append(f"node {nid}: link {lid} ends at {dst}:{dst_slot}, not {nid}:{slot}")
            src_out = nodes[str(src)]["outputs"][src_slot]
            if lid not in (src_out.get("links") or []):
                problems.append(f"node {src}: output {src_slot} does not list link {lid}")
            ui_links[inp["name"]] = [str(src), src_slot]
        if ui_links != _link_inputs(api_node):
            problems.append(f"node {nid}: UI links {ui_links} vs API {_link_inputs(api_node)}")
        values = list(node.get("widgets_values") or [])
        if node["type"] in UPLOAD_NODES and len(values) >= 2 and values[1] == "image":
            values.pop(1)
        if values != list(_widget_inputs(api_node).values()):
            problems.append(f"node {nid}: UI widget values {values} vs API "
                            f"{list(_widget_inputs(api_node).values())}")
    used = {inp["link"] for n in ui["nodes"] for inp in n.get("inputs", []) if inp.get("link")}
    if used != set(links):
        problems.append(f"links listed but not used by an input: {sorted(set(links) - used)}")
    return problems


_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to API format the way ComfyUI's frontend does, using the
    node definitions of a running server (widget order = input order; a combo with an image
    upload or control_after_generate adds a value after its own)."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        linked = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, src_slot, _, _, link_type = links[inp["link"]]
                source_type = object_info[nodes[src]["type"]]["output"][src_slot]
                if inp["name"] not in spec:
                    raise AssertionError(f"{node['type']} has no input {inp['name']!r}")
                want = spec[inp["name"]][0]
                if source_type != want or link_type != want:
                    raise AssertionError(f"link into {node['type']}.{inp['name']} carries "
                                         f"{source_type}/{link_type}, the input takes {want}")
                linked[inp["name"]] = [str(src), src_slot]
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for name in order:
            kind = spec[name][0]
            options = spec[name][1] if len(spec[name]) > 1 else {}
            is_widget = isinstance(kind, list) or kind in _WIDGET_TYPES
            if name in linked:
                inputs[name] = linked[name]
                if is_widget and not options.get("forceInput"):
                    values.pop(0)  # a widget turned into a socket keeps its value in the UI
                continue
            if not is_widget or options.get("forceInput"):
                continue
            if not values:
                raise AssertionError(f"{node['type']}: no widget value left for {name!r}")
            inputs[name] = values.pop(0)
            if options.get("image_upload") or options.get("control_after_generate"):
                values.pop(0)
        if values:
            raise AssertionError(f"{node['type']}: unused widget values {values}")
        api[str(node["id"])] = {"inputs": inputs, "class_type": node["type"]}
    return api


def strip_meta(api: dict) -> dict:
    return {nid: {"inputs": n["inputs"], "class_type": n["class_type"]} for nid, n in api.items()}


# --------------------------------------------------------------------------- the pack

_PACK_FILES = ("__init__.py", "pyproject.toml", "requirements.txt", "README.md")
_PACK_DIRS = ("m2ae_nodes", "m2ae_core", "workflows")


def copy_pack(dest: Path) -> Path:
    """Copy what a user's clone of the repo provides to ComfyUI (the package folders, the
    entry point, the metadata) into ``dest``, *without* the bundled weights: the tests decide
    whether the bundled default exists."""
    dest.mkdir(parents=True)
    for name in _PACK_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.safetensors")
    for name in _PACK_DIRS:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


# --------------------------------------------------------------------------- a ComfyUI server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI server in its own process (stopped by its PID), spoken to over HTTP."""

    def __init__(self, comfy_dir: Path, python: Path, base: Path, extra_paths: Path | None = None):
        self.comfy_dir, self.python, self.base = comfy_dir, python, base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        front_end = base / "empty-front-end"
        front_end.mkdir(parents=True, exist_ok=True)
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.command = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1",
                        "--port", str(self.port), "--disable-auto-launch",
                        "--front-end-root", str(front_end), "--base-directory", str(base),
                        "--database-url", "sqlite:///:memory:"]
        if extra_paths is not None:
            self.command += ["--extra-model-paths-config", str(extra_paths)]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, cwd=self.comfy_dir, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:\n"
                                   + self.log_tail())
            try:
                self.get_json("/system_stats", timeout=5)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n" + self.log_tail())

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after 30 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, 9)
                self.process.wait(timeout=30)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log()[-chars:] if self.log_path.exists() else "(no log)"

    # ---- HTTP
    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 60):
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload) -> tuple[int, dict]:
        status, body = self.request(path, json.dumps(payload).encode(),
                                    {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else {}
        except json.JSONDecodeError:
            return status, {"raw": body.decode(errors="replace")}

    def upload_image(self, name: str, data: bytes) -> dict:
        """POST /upload/image (multipart), overwriting a file of that name in input/."""
        boundary = uuid.uuid4().hex
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
            .encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        status, body = self.request("/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise AssertionError(f"upload of {name} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def queue_prompt(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        payload = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        return self.post_json("/prompt", payload)

    def wait_history(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and \
                    entry["status"].get("status_str") in ("success", "error"):
                return entry
            if self.process.poll() is not None:
                raise AssertionError("ComfyUI died:\n" + self.log_tail())
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s:\n"
                             + self.log_tail())

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": image["filename"],
                                        "subfolder": image.get("subfolder", ""),
                                        "type": image.get("type", "output")})
        status, body = self.request(f"/view?{query}")
        if status != 200:
            raise AssertionError(f"/view {query} -> {status}")
        return body

    def websocket(self, client_id: str) -> "WebSocket":
        return WebSocket("127.0.0.1", self.port, f"/ws?clientId={client_id}")


class WebSocket:
    """The client side of ComfyUI's status websocket, just enough to read its JSON messages."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self._buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def receive(self) -> dict | None:
        """The next JSON (text) message; None for binary ones (previews)."""
        message, text = b"", None
        while True:
            b0, b1 = self._read(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode == 8:
                raise ConnectionError("websocket closed by the server")
            if opcode in (9, 10):  # ping / pong: control frames between fragments
                continue
            if opcode in (1, 2):
                text = opcode == 1
            message += payload
            if fin:
                return json.loads(message) if text else None

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))
        except OSError:
            pass
        self.sock.close()
