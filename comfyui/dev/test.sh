#!/usr/bin/env bash
# Run the ComfyUI pack's tests (tests/comfyui) against a ComfyUI v0.3.64 checkout, in an
# environment with the torch ComfyUI needs (setup_env.sh). The environment is built once and kept
# in the user's cache, keyed by what it installs; leditspp is re-installed into it from this
# checkout at every run.
#
# ComfyUI is looked for in $LEDITSPP_COMFYUI, then ../shared/comfyui beside the repository; where
# there is none the pack's tests are not run (said in one line). LEDITSPP_COMFY_VENV names another
# environment folder; LEDITSPP_BROWSER_PYTHON a Python with playwright for the front-end test
# (default: the Makefile's .venv).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
comfy=${LEDITSPP_COMFYUI:-$repo/../shared/comfyui}
if [ ! -f "$comfy/comfy/model_base.py" ]; then
  echo "comfyui/dev/test.sh: no ComfyUI at $comfy (set LEDITSPP_COMFYUI to a v0.3.64 checkout); the pack's tests were not run"
  exit 0
fi
key=$(cat "$comfy/requirements.txt" "$repo/comfyui/dev/setup_env.sh" | sha256sum | cut -c1-12)
venv=${LEDITSPP_COMFY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/leditspp/venv-comfy-$key}
if [ ! -f "$venv/.complete" ]; then
  echo "comfyui/dev/test.sh: building the ComfyUI test environment in $venv (once; several minutes)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$repo/comfyui/dev/setup_env.sh" "$venv" "$comfy"
  touch "$venv/.complete"
fi
"$venv/bin/pip" install --quiet --no-deps -e "$repo"
cd "$repo"
# the front-end test drives Chromium through playwright, which the project's test environment has
browser_python=${LEDITSPP_BROWSER_PYTHON:-$repo/.venv/bin/python}
LEDITSPP_COMFYUI="$comfy" LEDITSPP_REQUIRE_COMFYUI=1 LEDITSPP_BROWSER_PYTHON="$browser_python" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs tests/comfyui
