#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, build _C with CUDA, run the tests marked
# `gpu`, then the GPU benchmarks, and print a compact summary. Meant to finish in < 8 min.
#   bash benchmarks/gpu_check.sh            # uses python3 (the machine's torch)
# Writes its logs and results to ${OUT:-benchmarks/results/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
summary() { echo "== $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "$(date -u) $($PY -c 'import torch;print(torch.__version__, torch.cuda.get_device_name(0))')"

t0=$(date +%s)
if HUDD_CUDA=on HUDD_BUILD_DIR=build/gpu $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  summary "build: ok in $(( $(date +%s) - t0 )) s"
else
  summary "build: FAILED (tail of build.log follows)"; tail -30 "$OUT/build.log"; exit 1
fi
$PY -c "from hudd_core._ext import cuda_usable; print('cuda usable:', cuda_usable())" | tee -a "$OUT/summary.txt"

timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests >"$OUT/pytest_gpu.log" 2>&1
summary "gpu tests (rc=$?): $(tail -1 "$OUT/pytest_gpu.log")"

export HUDD_BENCH_RESULTS="$OUT"
for bench in benchmarks/gpu_benchmarks.d/*.sh; do
  [ -e "$bench" ] || continue
  timeout 150 bash "$bench" >"$OUT/$(basename "$bench" .sh).log" 2>&1
  summary "$(basename "$bench") (rc=$?): $(tail -3 "$OUT/$(basename "$bench" .sh).log" | tr '\n' ' ')"
done
cat "$OUT/summary.txt"
