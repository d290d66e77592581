#!/usr/bin/env bash
# The GPU checks of issue 7 in one call on a CUDA machine (an H100 or H200), about 8 minutes:
#   1. the tests that need CUDA (`pytest -m gpu` where that marker exists, and every test file that asks for CUDA);
#   2. benchmarks/decode_speed.py on the Qwen2-7B-shaped model (bf16) at the issue's target configurations,
#      32k tokens x batch 1 and x batch 8, 3 interleaved rounds, 32 decoded tokens;
#   3. the tables again from the results file (also after a timeout).
#
# Run from anywhere:  bash benchmarks/gpu_check.sh
# Results go to $OUT when it is set (the device tool's folder), else benchmarks/results/:
#   decode_speed_gpu.jsonl (one JSON record per measurement), decode_speed_gpu.md (tables), gpu_check.log.
# Nothing is downloaded. Wheels in $WHEELS (default .whl/, e.g. the transformers 5.24 wheel the CPU runs use) are
# installed offline into a private folder; otherwise the machine's own torch and transformers are used. omnipress is
# imported from this checkout's src/ (PYTHONPATH), never installed.
#
# Knobs (environment): TEST_SECONDS (default 120), BENCH_SECONDS (hard limit of step 2, default 390),
# BENCH_MINUTES (start no new measurement after this, default 5), CONFIGS (default 32kx1,32kx8), ROUNDS (3),
# NEW_TOKENS (32), EXTRA_ARGS (appended to step 2). A CPU dry run of the script itself:
#   DEVICE=cpu DTYPE=float32 EXTRA_ARGS=--quick CONFIGS=256x1 ROUNDS=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
RESULTS="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

WHEELS="${WHEELS:-$REPO/.whl}"
SITE="${TMPDIR:-/tmp}/omnipress-gpu-check-site"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== installing carried wheels offline: $(cd "$WHEELS" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "FAILED: offline wheel install"; exit 2; }
    export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'EOF' || { echo "FAILED: torch/transformers/omnipress import"; exit 2; }
import torch, transformers, omnipress
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
print(f"omnipress from {omnipress.__file__}")
print(f"cuda available: {torch.cuda.is_available()}", torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

status=0
echo "== 1. tests that need CUDA"
files=$(grep -rlE "cuda\.is_available|mark\.gpu|requires_cuda|device=\"cuda\"" tests --include='*.py' | sort | tr '\n' ' ')
if "$PY" -m pytest --markers 2>/dev/null | grep -q "^@pytest.mark.gpu"; then
    timeout "${TEST_SECONDS:-120}" "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests
    rc=$?
    [ "$rc" -eq 5 ] && echo "(no test carries the gpu marker)" && rc=0
    [ "$rc" -ne 0 ] && { echo "FAILED: pytest -m gpu (exit $rc)"; status=1; }
fi
if [ -n "$files" ]; then
    echo "test files that ask for CUDA: $files"
    # shellcheck disable=SC2086
    timeout "${TEST_SECONDS:-120}" "$PY" -m pytest -q -rs -p no:cacheprovider $files
    rc=$?
    [ "$rc" -ne 0 ] && { echo "FAILED: GPU test files (exit $rc; 124 = timeout)"; status=1; }
else
    echo "(no test file mentions CUDA)"
fi

echo "== 2. decode-speed benchmark (Qwen2-7B shape, bf16)"
JSON="$RESULTS/decode_speed_gpu.jsonl"
# shellcheck disable=SC2086
timeout "${BENCH_SECONDS:-390}" "$PY" benchmarks/decode_speed.py --device "${DEVICE:-cuda}" --dtype "${DTYPE:-bfloat16}" \
    --configs "${CONFIGS:-32kx1,32kx8}" --rounds "${ROUNDS:-3}" --new-tokens "${NEW_TOKENS:-32}" \
    --deadline-min "${BENCH_MINUTES:-5}" --out "$JSON" ${EXTRA_ARGS:-} >/dev/null
rc=$?
[ "$rc" -ne 0 ] && { echo "FAILED: decode_speed.py (exit $rc; 124 = timeout, 1 = a measurement raised)"; status=1; }

echo "== 3. tables"
"$PY" benchmarks/decode_speed.py --report-only --out "$JSON" | tee "$RESULTS/decode_speed_gpu.md"
echo "== gpu_check done (status $status)"
exit "$status"
