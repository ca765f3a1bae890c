"""Benchmark the judge against the seed project's grading loop, on the same programs in the same run.

Seed-style baseline: for each program, sequentially, `subprocess.run` g++ -O2 -std=c++17 (no cache, no
precompiled header), then `subprocess.run` the binary on each test. The baseline has no sandbox, so it only
ever runs the trusted programs this file writes. Every program is distinct (a run nonce and an index in a
comment), so the judge's compile cache and in-batch dedupe never help: the speedup is the precompiled
header plus the worker pool.

    python -m bench.bench_judge            # 64 programs x 10 tests
    python -m bench.bench_judge --quick    # 4 programs x 3 tests (CI)
    python -m bench.bench_judge --judge_only --programs 16   # the judge alone (A/B of two versions)
"""
from __future__ import annotations

import argparse

import errors
import utils
from bench import judge_workload


def main() -> None:
    parser = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=64, help="distinct programs to grade (default 64)")
    parser.add_argument("--tests", type=int, default=10, help="tests per program (default 10)")
    parser.add_argument("--workers", type=int, default=None, help="judge threads (default: CPU count)")
    parser.add_argument("--headers", choices=sorted(judge_workload.HEADERS), default="mixed",
                        help="include style: mixed (default, half <bits/stdc++.h>), bits, or specific headers")
    parser.add_argument("--quick", action="store_true", help="4 programs x 3 tests, for CI")
    parser.add_argument("--judge_only", action="store_true",
                        help="skip the seed-style loop (A/B of two judge versions on a loaded machine)")
    args = parser.parse_args()
    if args.quick:
        args.programs, args.tests = 4, 3
    if args.programs < 1 or args.tests < 1 or (args.workers is not None and args.workers < 1):
        parser.error("--programs, --tests and --workers must be positive")
    try:
        m = judge_workload.measure(args.programs, args.tests, args.headers, args.workers, progress=True, baseline=not args.judge_only)
    except RuntimeError as err:
        errors.cli_error(str(err))
    n = m["programs"]
    print(f"{n} programs ({args.headers} headers) x {args.tests} tests, {m['workers']} workers, "
          f"sandbox {utils.sandbox_features()}")
    print(f"precompiled header (once per machine, not counted): {m['pch_s']:.1f} s")
    print(f"judge:      {m['judge_s']:7.1f} s wall {m['judge_cpu_s']:7.1f} s CPU  {n / m['judge_s']:6.2f} programs/s")
    print(f"regrade:    {m['regrade_s']:7.1f} s wall {m['regrade_cpu_s']:7.1f} s CPU  (compile cache hits: running only)")
    if args.judge_only:
        return
    print(f"seed-style: {m['seed_style_s']:7.1f} s wall {m['seed_style_cpu_s']:7.1f} s CPU  "
          f"{n / m['seed_style_s']:6.2f} programs/s")
    print(f"speedup: {m['seed_style_s'] / m['judge_s']:.1f}x wall, {m['seed_style_cpu_s'] / m['judge_cpu_s']:.1f}x less CPU")


if __name__ == "__main__":
    main()
