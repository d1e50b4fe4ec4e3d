#!/usr/bin/env bash
# Prep step of the GPU check, run once on a machine with network access (PyPI): downloads
# the wheels the GPU machine lacks (Python 3.12, manylinux x86_64) into .whl/ (ignored by
# git, about 0.7 MB), for benchmarks/gpu_check.sh to install there without network:
#   bash benchmarks/gpu_prep.sh
#   (device run, carrying .whl)  bash benchmarks/gpu_check.sh
# fastcluster and kneed: hudd_core's clustering; zennit and captum: the LRP oracle and the
# LRP benchmark's contenders. faiss-gpu is left out: its wheels exceed what can be carried
# (64 MiB) and target another CUDA, so the checks that need it report themselves skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=${DEST:-.whl}
WHEELS=(fastcluster==1.3.0 kneed==0.9.0 zennit==0.5.1 captum==0.9.0)
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${WHEELS[@]}"
du -sh "$DEST"
