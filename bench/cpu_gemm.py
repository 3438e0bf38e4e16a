"""Single-precision GEMM throughput of this CPU at the shapes a 1.3M student trains with (torch's BLAS).

Tells whether the BLAS runs near the core's fp32 peak or on a slow path (MKL on a non-Intel CPU was the
suspect on machine B; docs/benchmarks.md "GEMM on machine B"). Prints one JSON line per shape, GFLOP/s.

    OMP_NUM_THREADS=1 python bench/cpu_gemm.py --threads 1
"""
import argparse
import json
import time

import torch

# (tokens, in, out) of the 1.3M student's layers at --max-tokens 4096: attention projections (d 128, 4 heads of
# 32 are one 128 x 128 GEMM here as in fairseq's packed projection), the FFN (128 <-> 256), the output layer (4,000)
SHAPES = [(4096, 128, 128), (4096, 128, 256), (4096, 256, 128), (4096, 128, 4000), (4096, 4000, 128)]


def gflops(m: int, k: int, n: int, repeats: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):  # warm-up
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for m, k, n in SHAPES:
        print(json.dumps({"m": m, "k": k, "n": n, "threads": args.threads,
                          "gflops": round(gflops(m, k, n, args.repeats), 1)}))


if __name__ == "__main__":
    main()
