#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, build _C with CUDA (every architecture of
# CMakeLists.txt), run every test marked `gpu` plus the binding checks, then the GPU
# benchmarks, and print one summary. Meant to finish in < 8 min on a fresh machine without
# network: run benchmarks/gpu_prep.sh beforehand where PyPI is reachable and carry .whl/.
#   bash benchmarks/gpu_check.sh            # uses python3 (the machine's torch)
# Writes its logs and results to ${OUT:-benchmarks/results/gpu}; parts that need a package
# that is not there (e.g. faiss-gpu) are skipped with a message.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results/gpu}
BUDGET=${BUDGET:-450}  # seconds: benchmarks are skipped once this is spent (build, tests:
                       # at most 180 + 60 + 180 s, so the whole check ends within 7.5 min)
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
summary() { echo "== $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "$(date -u) $($PY -c 'import torch;print(torch.__version__, torch.cuda.get_device_name(0))')"

# Carried wheels (benchmarks/gpu_prep.sh) go to a private folder, never into the system.
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${TMPDIR:-/tmp}/hudd_site
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl >"$OUT/wheels.log" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    summary "wheels: installed $(ls .whl/*.whl | wc -l) from .whl/"
  else
    summary "wheels: install FAILED (see wheels.log)"
  fi
else
  summary "wheels: none carried (.whl/ empty; run benchmarks/gpu_prep.sh first)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for mod in fastcluster kneed zennit captum faiss; do
  $PY -c "import $mod" 2>/dev/null || summary "skipped: what needs '$mod' (not installed here)"
done

t0=$(date +%s)
if HUDD_CUDA=on HUDD_BUILD_DIR=build/gpu timeout 180 $PY setup.py build_ext --inplace \
    >"$OUT/build.log" 2>&1; then
  summary "build: ok in $(( $(date +%s) - t0 )) s (all architectures, $(nproc) cores)"
else
  summary "build: FAILED (tail of build.log follows)"; tail -30 "$OUT/build.log"; exit 1
fi
$PY - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import torch
from hudd_core._ext import _C, cuda_usable
dev = torch.cuda.current_device()
major, minor = torch.cuda.get_device_capability(dev)
print("== archs:", " ".join(_C.cuda_archs()), f"| device sm_{major}{minor}",
      "| image:", _C.kernel_image_error(dev) or "ok", "| cuda usable:", cuda_usable())
PY
if command -v cuobjdump >/dev/null; then
  summary "cuobjdump --list-elf: $(cuobjdump --list-elf hudd_core/_C*.so | grep -o 'sm_[0-9]*' | sort -V | uniq -c | tr -s ' \n' ' ')"
fi

timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_bindings.py tests/test_search.py \
  >"$OUT/pytest_bindings.log" 2>&1
summary "binding + search tests (rc=$?): $(tail -1 "$OUT/pytest_bindings.log")"
timeout 180 $PY -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests \
  >"$OUT/pytest_gpu.log" 2>&1
summary "gpu tests (rc=$?): $(tail -1 "$OUT/pytest_gpu.log")"
grep -E "^(FAILED|ERROR|SKIPPED)" "$OUT/pytest_gpu.log" | head -20 | tee -a "$OUT/summary.txt"

export HUDD_BENCH_RESULTS="$OUT"
for bench in benchmarks/gpu_benchmarks.d/*.sh; do
  [ -e "$bench" ] || continue
  name=$(basename "$bench" .sh)
  left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 30 ]; then
    summary "$name: skipped (the ${BUDGET} s budget is spent)"; continue
  fi
  limit=$(( left < 100 ? left : 100 ))
  timeout "$limit" bash "$bench" >"$OUT/$name.log" 2>&1
  summary "$name (rc=$?, limit ${limit} s): $(tail -3 "$OUT/$name.log" | tr '\n' ' ')"
done
summary "total: $(elapsed) s"
echo; echo "==== GPU check summary ($OUT/summary.txt)"; cat "$OUT/summary.txt"
