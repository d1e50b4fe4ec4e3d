# GPU distance benchmark (run by benchmarks/gpu_check.sh): SciPy is skipped (CPU-bound).
python3 benchmarks/bench_distance.py --device cuda --sizes 20000x50000 20000x64 --runs 5 \
  --scipy-runs 0 --name distance_gpu
