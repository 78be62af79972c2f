#!/usr/bin/env bash
# The GPU presets of benchmarks/speed.py in one call on a lent device machine, whose image has
# PyTorch and transformers but not diffusers (the CLIP vocabulary ships in leditspp.testing).
#
#   here, once:        benchmarks/gpu.sh prepare      # wheels into .whl/ (git-ignored via .git/info/exclude)
#   on the device:     benchmarks/gpu.sh run          # carry .whl; results land in $OUT (or benchmarks/)
#
# PRESETS (default "gpu-sd15 gpu-sdxl"), FLOW_PRESETS (benchmarks/flow_speed.py; default
# "gpu-klein gpu-zimage gpu-sd3 gpu-flux gpu-qwen", "" skips them), REPEATS (3; gpu-qwen, 20 B at
# 50 + 50 steps, takes QWEN_REPEATS, 1), EXTRA (speed.py, e.g. "--compile": CUDA graphs),
# OFFLOADS (the memory plans each flow preset runs under, default "none"; "none model group" gives
# the per-plan peaks) and FLOW_EXTRA (flow_speed.py, e.g. "--compile") adjust the run; PYTHON
# (python3) picks the interpreter. leditspp itself comes from src/ (no install needed).
# Short runs, one command each, e.g.
#   PRESETS= FLOW_PRESETS="gpu-klein gpu-zimage" benchmarks/gpu.sh run
#   PRESETS=gpu-sd15 EXTRA=--compile FLOW_PRESETS= benchmarks/gpu.sh run          # CUDA graphs
#   PRESETS= FLOW_PRESETS="gpu-flux gpu-klein" OFFLOADS="model group" REPEATS=1 benchmarks/gpu.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS="diffusers==0.42.1 importlib_metadata==10.2.0"

case "${1:-}" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
    ls .whl
    ;;
  run)
    if [ -d .whl ]; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
    fi
    export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    out=${OUT:-benchmarks}
    # a preset that fails (out of memory, a missing model) is named in failed.txt and its .md
    # renamed, so the later presets still run and no partial report reads as a result
    status=0
    failed() {
      echo "FAILED: $1" | tee -a "$out/failed.txt" >&2
      mv "$out/$1.md" "$out/$1.failed.md"
      status=1
    }
    "$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    for preset in ${PRESETS-gpu-sd15 gpu-sdxl}; do  # PRESETS= (empty) runs none
      # shellcheck disable=SC2086
      "$PYTHON" benchmarks/speed.py --preset "$preset" --repeats "${REPEATS:-3}" ${EXTRA:-} | tee "$out/$preset.md" ||
        failed "$preset"
    done
    for preset in ${FLOW_PRESETS-gpu-klein gpu-zimage gpu-sd3 gpu-flux gpu-qwen}; do
      repeats=${REPEATS:-3}
      [ "$preset" = gpu-qwen ] && repeats=${QWEN_REPEATS:-1}
      for plan in ${OFFLOADS:-none}; do
        # shellcheck disable=SC2086
        "$PYTHON" benchmarks/flow_speed.py --preset "$preset" --repeats "$repeats" --offload "$plan" ${FLOW_EXTRA:-} |
          tee "$out/$preset-$plan.md" || failed "$preset-$plan"
      done
    done
    exit "$status"
    ;;
  *)
    echo "usage: benchmarks/gpu.sh prepare|run" >&2
    exit 2
    ;;
esac
