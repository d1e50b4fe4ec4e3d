# GPU distance benchmark (run by benchmarks/gpu_check.sh): SciPy is skipped (CPU-bound).
# N = 20k, D = 16k: the README goal (>= 70% of the bare GEMM X @ X.T throughput).
python3 benchmarks/bench_distance.py --device cuda --sizes 20000x16384 20000x64 --runs 5 \
  --scipy-runs 0 --name distance_gpu
