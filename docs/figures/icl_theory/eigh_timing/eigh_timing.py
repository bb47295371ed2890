"""The "Limits" timing of results_icl_theory.md: one N x N np.linalg.eigh (what KRR's exact
leave-one-out needs per kernel and prompt, mamba_from_scratch/icl/krr.py) on ONE BLAS thread,
for N = 512, 1024, 2048, on an RBF kernel matrix of Gaussian x (d = 32), CPU and wall time,
best and median of 3, with the load average before and after.
Run:  python docs/figures/icl_theory/eigh_timing/eigh_timing.py > docs/figures/icl_theory/eigh_timing/eigh_timing.txt
"""
import os

for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"

import subprocess
import time

import numpy as np


def load():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


print(f"numpy {np.__version__}; start: {load()}")
rng = np.random.default_rng(0)
for N in (512, 1024, 2048):
    x = rng.standard_normal((N, 32))
    sq = np.sum(x ** 2, 1)
    K = np.exp(-(sq[:, None] + sq[None, :] - 2 * x @ x.T) / (2 * 32))     # RBF, width = dim
    wall, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        np.linalg.eigh(K)
        wall.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    print(f"N = {N}: eigh wall min {min(wall):.2f} s, median {np.median(wall):.2f} s; "
          f"CPU min {min(cpu):.2f} s, median {np.median(cpu):.2f} s")
print(f"end: {load()}")
