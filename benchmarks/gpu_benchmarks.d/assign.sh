# GPU assignment benchmark (run by benchmarks/gpu_check.sh): the torch backend (our GEMM
# distance kernels on CUDA + per-cluster minimum) and torch.cdist on CUDA against the NumPy
# brute force on the CPU. The device machine has no faiss module, so FAISS is left out.
python3 benchmarks/bench_assign.py --device cuda --runs 3 --contenders numpy torch_cdist ours_torch --name assign_gpu
