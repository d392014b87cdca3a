#!/usr/bin/env python3
"""Main-memory bandwidth of this machine, STREAM-style, for the "decode near the memory bound"
figure (docs/performance.md).

    python tools/membw.py --threads 2 [--mib 1024] [--trials 5] [--json]

Kernels over float64 arrays far larger than the caches (default 1 GiB each):

- copy   c = a          (numpy, one thread): 2 arrays moved per element
- triad  a = b + s*c    (numpy, one thread; a temporary is avoided with out=): 3 arrays
- triad  with torch at --threads threads (torch's elementwise kernels are multi-threaded),
  when torch is installed: the figure for a multi-threaded reader such as candle's gemm

Bytes are counted as STREAM counts them (bytes read + bytes written by the kernel, no
write-allocate traffic), and each kernel's best of --trials is reported: on a shared machine,
other processes only ever take bandwidth away. Decode at batch 1 reads every weight of the
language model once per token, so tokens/s ≤ bandwidth ÷ weight bytes per token.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best(fn, trials: int) -> float:
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(mib: int = 1024, trials: int = 5, threads: int = 1) -> dict:
    """GB/s (1e9 bytes per second) of each kernel, best of `trials`."""
    n = mib * 2**20 // 8
    a = np.ones(n)
    b = np.full(n, 2.0)
    c = np.empty(n)
    np.copyto(c, a)  # touch every page before timing
    s = 3.0
    out = {"array_bytes": n * 8, "trials": trials}
    out["numpy_copy_1_thread_gbs"] = 2 * n * 8 / _best(lambda: np.copyto(c, a), trials) / 1e9

    def triad():
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)

    # Two passes: a = c*s reads c and writes a (2 arrays), a += b reads a and b and writes a
    # (3): 5 arrays moved, where STREAM's one-pass triad moves 3.
    out["numpy_triad_1_thread_gbs"] = 5 * n * 8 / _best(triad, trials) / 1e9
    del a, b, c
    try:
        import torch
    except ImportError:
        out["torch_unavailable"] = "torch is not installed"
        return out
    torch.set_num_threads(threads)
    ta = torch.ones(n, dtype=torch.float64)
    tb = torch.full((n,), 2.0, dtype=torch.float64)
    tc = torch.ones(n, dtype=torch.float64)
    # torch.add(b, c, alpha=s) is one fused pass: a = b + s*c, STREAM's triad.
    out[f"torch_triad_{threads}_threads_gbs"] = (
        3 * n * 8 / _best(lambda: torch.add(tb, tc, alpha=s, out=ta), trials) / 1e9
    )
    out[f"torch_copy_{threads}_threads_gbs"] = 2 * n * 8 / _best(lambda: ta.copy_(tb), trials) / 1e9
    out["threads"] = threads
    return out


def best_gbs(m: dict) -> float:
    """The highest bandwidth measured: the bound a reader could reach on this machine."""
    return max(v for k, v in m.items() if k.endswith("_gbs"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="size of each array in MiB")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    m = measure(args.mib, args.trials, args.threads)
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        for k, v in m.items():
            print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
        print(f"best: {best_gbs(m):.2f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
