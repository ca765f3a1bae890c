"""The judge benchmark's workload: distinct trusted programs, their tests, the seed project's grading loop, and
`measure`, which grades the same programs both ways in one run. bench_judge.py prints it; bench/run.py records it.

The seed-style baseline: for each program, sequentially, `subprocess.run` g++ -O2 -std=c++17 (no cache, no
precompiled header), then `subprocess.run` the binary on each test. It has no sandbox, so it only ever runs the
trusted programs this file writes.
"""
from __future__ import annotations

import os
import random
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

import utils

# Four kinds of trusted programs, like a model's mix: half include <bits/stdc++.h>, half specific headers;
# one in four is wrong, one in four does not compile. Each prints the sum and the sorted numbers.
BITS = "#include <bits/stdc++.h>\nusing namespace std;\n"
SPECIFIC = "#include <iostream>\n#include <vector>\n#include <algorithm>\nusing namespace std;\n"
BODY = ("int main(){{ios::sync_with_stdio(false); cin.tie(nullptr); int n; cin>>n; vector<long long> a(n);"
        " long long s={start}; for(auto& x:a){{cin>>x; s+=x;}} sort(a.begin(),a.end()); cout<<s<<'\\n';"
        " for(int i=0;i<n;i++) cout<<a[i]<<(i+1<n?' ':'\\n'); {extra}}}\n// variant {tag}\n")
KINDS = [(BITS, 0, ""), (SPECIFIC, 0, ""), (BITS, 1, ""), (SPECIFIC, 0, "return undefined_name;")]
HEADERS = {"mixed": None, "bits": BITS, "specific": SPECIFIC}


def make_programs(count: int, nonce: int, headers: str = "mixed") -> list[str]:
    """count distinct programs cycling through KINDS; `headers` can force one include style for all."""
    return [(HEADERS[headers] or header) + BODY.format(start=start, extra=extra, tag=f"{nonce}-{i}")
            for i, (header, start, extra) in ((i, KINDS[i % len(KINDS)]) for i in range(count))]


def make_tests(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    tests = []
    for t in range(count):
        a = [rng.randint(-10**9, 10**9) for _ in range(200 * (t + 1))]
        tests.append({"input": f"{len(a)}\n{' '.join(map(str, a))}\n",
                      "output": f"{sum(a)}\n{' '.join(map(str, sorted(a)))}\n"})
    return tests


def seed_style(code: str, tests: list[dict]) -> int:
    """The seed project's compile_and_run, minus its reward: tests passed, or -1 when it did not compile."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "solution.cpp"), os.path.join(tmp, "solution.out")
        Path(src).write_text(code)
        if subprocess.run(["g++", "-O2", "-std=c++17", src, "-o", exe], capture_output=True, timeout=10).returncode:
            return -1
        passed = 0
        for test in tests:
            try:
                run = subprocess.run([exe], input=test["input"], capture_output=True, text=True, timeout=2)
                passed += run.stdout.strip() == test["output"].strip()
            except subprocess.TimeoutExpired:
                pass
        return passed


def children_cpu() -> float:
    """CPU seconds used by finished child processes: less sensitive than wall time to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(programs: int, tests: int, headers: str = "mixed", workers: int | None = None,
            progress: bool = False, baseline: bool = True) -> dict:
    """Grade the same distinct programs with the judge and with the seed-style loop: wall and CPU seconds of each,
    plus a regrade by the judge (compile cache hits: what the sandbox costs per run). baseline=False skips the
    seed-style loop (for A/B runs of two judge versions under load, where its fixed 10 s g++ timeout can fire).

    Raises RuntimeError when the two disagree on any program's pass count."""
    codes, cases = make_programs(programs, time.time_ns(), headers), make_tests(tests)
    config = utils.JudgeConfig(max_tests=tests, workers=workers)
    start = time.monotonic()
    utils.precompiled_headers(config)  # built once per machine; reported, not counted
    pch_s = time.monotonic() - start
    start, cpu = time.monotonic(), children_cpu()
    results = utils.judge_batch([(code, cases) for code in codes], config, progress=progress)
    judge_s, judge_cpu = time.monotonic() - start, children_cpu() - cpu
    start, cpu = time.monotonic(), children_cpu()
    utils.judge_batch([(code, cases) for code in codes], config)
    regrade_s, regrade_cpu = time.monotonic() - start, children_cpu() - cpu
    m = {"programs": programs, "tests": tests, "workers": workers or os.cpu_count(), "pch_s": pch_s,
         "judge_s": judge_s, "judge_cpu_s": judge_cpu, "regrade_s": regrade_s, "regrade_cpu_s": regrade_cpu}
    if not baseline:
        return m
    start, cpu = time.monotonic(), children_cpu()
    seed = [seed_style(code, cases) for code in tqdm(codes, desc="seed-style", disable=not progress)]
    seed_s, seed_cpu = time.monotonic() - start, children_cpu() - cpu
    ours = [r.passed if r.compiled else -1 for r in results]
    if ours != seed:
        raise RuntimeError(f"judge and seed-style disagree: {ours} vs {seed}")
    return {**m, "seed_style_s": seed_s, "seed_style_cpu_s": seed_cpu}
