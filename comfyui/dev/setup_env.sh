#!/usr/bin/env bash
# Build a virtual environment that runs ComfyUI (CPU) and the leditspp ComfyUI pack's tests.
#
# Usage: comfyui/dev/setup_env.sh VENV COMFYUI_DIR
#   VENV         where to create the environment (e.g. /work/venv-comfy)
#   COMFYUI_DIR  a ComfyUI checkout at tag v0.3.64 (its requirements.txt is read)
#
# ComfyUI's torchaudio is left out (no build is served for torch >= 2.12; only its audio
# nodes need it); `requests` is added (its app/ imports it without listing it).
set -euo pipefail
venv=${1:?usage: setup_env.sh VENV COMFYUI_DIR}
comfy=${2:?usage: setup_env.sh VENV COMFYUI_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
grep -vE '^(torch|torchaudio|torchvision)\s*$' "$comfy/requirements.txt" >"$venv/comfyui-requirements.txt"
"$venv/bin/pip" install --quiet -r "$venv/comfyui-requirements.txt" requests
# leditspp itself and pytest: the pack's tests need nothing else of the project's [test] extra
"$venv/bin/pip" install --quiet -e "$repo" pytest
