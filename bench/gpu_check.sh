#!/usr/bin/env bash
# One device call does both: bench/gpu.py (writes bench/results/gpu.md), then the device-parametrised tests on
# the GPU (only their "cuda" cases: the CPU cases run everywhere else).
#
#   bash bench/gpu_check.sh [bench/gpu.py flags]       # e.g. --budget 330
#
# Time caps (seconds): BENCH_S for the script (default 370; its own budget is 360), TESTS_S for pytest (default 100). With $OUT set (the
# lent machine's output folder) the report and the pytest log are copied there. pytest runs with
# `-o addopts=` so that plugins the machine may lack (pytest-timeout) are not needed.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
PY="${PYTHON:-python3}"
BENCH_S="${BENCH_S:-370}"
TESTS_S="${TESTS_S:-100}"
TESTS="${QKV_DEVICE_TESTS:-tests/attention/test_devices.py tests/attention/test_flex.py tests/nn/test_devices.py tests/models/test_devices.py tests/hf/test_devices.py}"

start=$(date +%s)
timeout -k 10 "$BENCH_S" "$PY" bench/gpu.py "$@"
echo "bench/gpu.py: exit $? after $(( $(date +%s) - start )) s"
if [ -n "${OUT:-}" ]; then cp bench/results/gpu.md "$OUT/" 2>/dev/null; fi

start=$(date +%s)
# shellcheck disable=SC2086
timeout -k 10 "$TESTS_S" "$PY" -m pytest -o addopts= --import-mode=importlib -p no:cacheprovider -q -ra \
    -m "not slow and not browser" -k cuda $TESTS 2>&1 | tee /tmp/qkv_gpu_pytest.txt | tail -40
echo "pytest: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
if [ -n "${OUT:-}" ]; then cp /tmp/qkv_gpu_pytest.txt "$OUT/pytest.txt" 2>/dev/null; fi
exit 0
