# GPU all-layer LRP benchmark (run by benchmarks/gpu_check.sh): ours vs Zennit vs Captum vs
# the forward+backward limit, on the CUDA kernels; a larger batch keeps the GPU busy.
python3 benchmarks/bench_lrp.py --device cuda --batch 256 --runs 5 --name lrp_gpu
