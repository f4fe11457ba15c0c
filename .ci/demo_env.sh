#!/usr/bin/env bash
# Dependencies of the demo tests (tests/test_demo.py, tests/test_demo_browser.py): Gradio via
# the package's `demo` extra, Playwright's Python package, and Debian's Chromium.  Run it in
# the CI virtual environment after the package is installed, before pytest:
#     . .venv-ci/bin/activate && .ci/demo_env.sh
# Playwright's own browser download is not used (its CDN is unreachable): the browser tests
# launch the system Chromium through executable_path.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[demo]" playwright
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium >/dev/null
fi
echo "chromium: $(command -v chromium)"
python -c "import gradio, gradio_client, playwright.sync_api; print('gradio', gradio.__version__)"
