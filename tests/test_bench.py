"""bench/run.py's CPU preset end to end, so the benchmark code never rots (the GPU preset shares every line)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    proc = run_bench("--preset", "cpu", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| judge"), "the table must be printed last"
    return json.loads(out.read_text())


def test_every_metric_is_measured_with_sane_values(report):
    res = report["results"]
    svd = res["adapter_init"]
    assert svd["modules"] == 2 * 7  # 2 layers x 7 projections
    assert svd["truncated_s"] > 0 and svd["full_s"] > 0 and svd["speedup"] > 1
    assert svd["sv_rel_err"] < 1e-3 and svd["recon_rel_err"] < 1e-3
    for quant, dtype in (("nf4", "nf4"), ("bf16", "float32")):  # no bf16 matmuls on CPU: fp32 stands in
        q = res[quant]
        assert q["dtype"] == dtype and q["apply_tiny_lora_s"] > 0
        assert q["forward"]["base_s"] > 0 and 0.2 < q["forward"]["ratio"] < 5 and 0.2 < q["forward"]["cpu_ratio"] < 5
        assert q["rollout"]["base_tok_s"] > 0 and q["rollout"]["adapted_tok_s"] > 0 and 0.2 < q["rollout"]["ratio"] < 5
        step = q["grpo_step"]
        assert step["seconds"] > 0 and step["peak_kind"] == "process_peak_rss"
        assert step["peak_bytes"] >= step["before_bytes"] > 0
        assert step["completion_tokens"] == 24
    judge = res["judge"]
    assert judge["judge_programs_s"] > 0 and judge["seed_style_programs_s"] > 0 and judge["workers"] >= 1
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch_threads"] == 1


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Our error lines (bitsandbytes may print its own notice on import, before anything of ours runs)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_bad_arguments_exit_2_with_one_line():
    proc = run_bench("--only", "forward,warp_drive", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(error_lines(proc)) == 1 and "warp_drive" in error_lines(proc)[0]
