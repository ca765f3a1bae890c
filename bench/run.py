"""Benchmarks, one entry point: each number next to its reference in the same run, a markdown table printed last.

    python -m bench.run --preset cpu                  # the CI-sized twin: every stage, CPU, < 1 min
    python -m bench.run --preset 3b --quant nf4       # Qwen2.5-Coder-3B shapes, random weights, one GPU
    python -m bench.run --preset 3b --new_tokens 64   # the same with shorter completions, for a short GPU lease
    python -m bench.run --preset smollm2              # one real GRPO step of SmolLM2 on CPU, split into its parts
    python -m bench.run --preset qwen05               # Qwen2.5-Coder-0.5B on CPU: held-out sampling against plain
                                                      # generate, then one real GRPO step split into its parts

Stages (--only): adapter_init (truncated vs full SVD of every projection), forward (adapted vs base), rollout
(generation tokens/s, adapted vs base), grpo_step (one step of train_rl.py's trainer: seconds, peak memory),
judge (bench/bench_judge.py's workload: the judge vs the seed-style loop, all cores). A failing stage is recorded
in the JSON and the table and the run goes on (a GPU lease is too short to lose the rest); the exit code is then 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench import bench_model

STAGES = ("adapter_init", "forward", "rollout", "grpo_step", "judge")
QUANTS = {"nf4": ["nf4"], "bf16": ["bf16"], "both": ["nf4", "bf16"]}
JUDGE_SIZE = {"cpu": (4, 3), "3b": (64, 10)}  # (programs, tests): bench_judge's --quick and its default
REAL_STEPS = {"smollm2": "configs/smollm2_cpu.yaml", "qwen05": "configs/qwen05_cpu.yaml"}  # real models, CPU
STEP_GOAL_S = {"smollm2": 90, "qwen05": 120}  # the issues' goals for one step on 2 cores


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import errors

    parser = errors.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted([*bench_model.PRESETS, *REAL_STEPS]), default="cpu",
                        help="cpu: small same-structure model (CI); 3b: Qwen2.5-Coder-3B-Instruct's config (GPU); "
                             "smollm2 / qwen05: one GRPO step of train_rl.py with configs/<model>_cpu.yaml, real model "
                             "and judge (qwen05 first times held-out sampling against plain generate)")
    parser.add_argument("--quant", choices=sorted(QUANTS), default="both",
                        help="base precision: nf4 (4-bit), bf16 (fp32 on CPU), or both (default)")
    parser.add_argument("--only", default=",".join(STAGES),
                        help=f"comma-separated stages (default: all of {','.join(STAGES)})")
    parser.add_argument("--new_tokens", type=int, default=None,
                        help="completion tokens per sequence for forward, rollout and grpo_step (default: the preset's, "
                             "3b: 1024; fewer fit a short GPU lease)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: modeling.configure_threads: 1 for tiny models, cores - 1 otherwise)")
    parser.add_argument("--output_dir", default="output/bench", help="where <preset>.json goes (default output/bench)")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(STAGES))
    if unknown or not args.only:
        errors.cli_error(f"--only: unknown stage(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(STAGES)}")
    if args.threads is not None and args.threads < 1:
        errors.cli_error("--threads must be a positive integer")
    if args.new_tokens is not None and (args.new_tokens < 1 or args.preset in REAL_STEPS):
        errors.cli_error("--new_tokens must be a positive integer, for the model presets (a real model's config sets "
                       "its completion length)")
    import torch

    import modeling

    if args.threads:  # modeling.configure_threads (called by load_model) reads it: the flag wins over the policy
        os.environ[modeling.THREADS_ENV] = str(args.threads)
        torch.set_num_threads(args.threads)
    if args.preset.startswith("3b") and not torch.cuda.is_available() and args.only != ["adapter_init"]:
        errors.cli_error(f"--preset {args.preset} needs a CUDA GPU (hours on a CPU); use --preset cpu, "
                       "or --only adapter_init for the SVD start-up alone")
    args.out = Path(args.output_dir) / f"{args.preset}.json"
    return args


def judge_throughput(programs: int, tests: int) -> dict:
    """bench_judge's workload graded by the judge (one worker per core) and by the seed-style loop, same programs."""
    from bench import judge_workload

    m = judge_workload.measure(programs, tests)
    return {"programs": programs, "tests": tests, "workers": m["workers"], "judge_s": m["judge_s"],
            "seed_style_s": m["seed_style_s"], "judge_programs_s": programs / m["judge_s"],
            "seed_style_programs_s": programs / m["seed_style_s"], "speedup": m["seed_style_s"] / m["judge_s"]}


def machine(device: str) -> dict:
    """What the numbers were measured on, for the docs' table header."""
    import importlib.metadata as md

    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    versions = {pkg: md.version(pkg) for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes")}
    return {"device": device, "name": name, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), **versions}


def command_line(argv: list[str] | None) -> str:
    """The command that ran this benchmark, for its report."""
    return " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])


def run_stage(results: dict, key: str, fn, *args) -> None:
    """results[key] = fn(*args), or {"error": ...} so one broken stage does not cost the others."""
    try:
        results[key] = fn(*args)
    except Exception as err:  # noqa: BLE001 - recorded and reported, the exit code says it failed
        traceback.print_exc()
        results[key] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def run_real_step(args, argv: list[str] | None, device: str) -> dict:
    """`--preset smollm2|qwen05`: profile one step of train_rl.py with its CPU config (bench/bench_step.py); for
    qwen05 first held-out sampling end to end against plain generate (bench/bench_sampling.py)."""
    import tempfile

    from bench import bench_sampling, bench_step

    config = REAL_STEPS[args.preset]
    report = {"preset": args.preset, "config": config, "machine": machine(device),
              "command": command_line(argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "load_average_before": os.getloadavg()}
    started = time.perf_counter()
    if args.preset == "qwen05":
        report["sampling"] = bench_sampling.measure()
        print(bench_sampling.table(report["sampling"]))
    with tempfile.TemporaryDirectory(prefix="bench-step-") as out_dir:
        report["results"] = bench_step.measure(["32", "28", "--config", config, "--max_steps", "1",
                                                "--save_steps", "1000000", "--output_dir", out_dir])
    report["total_s"] = time.perf_counter() - started
    report["load_average_after"] = os.getloadavg()
    report["machine"]["torch_threads"] = report["results"]["threads"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{args.preset} step on {report['machine']['name']} ({report['machine']['cores']} cores, load average "
          f"{report['load_average_before'][0]:.1f} before, {report['load_average_after'][0]:.1f} after), "
          f"{report['date']}, {report['total_s']:.0f} s; JSON in {args.out}\n")
    if "sampling" in report:
        print(bench_sampling.table(report["sampling"]) + "\n")
    print(real_step_table(report["results"], STEP_GOAL_S[args.preset]))
    return report


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def spread(median: float, quartiles: list[float]) -> str:
    """Per-round ratios (bench_model.Paired) as their median and interquartile range."""
    return f"{median:.3f} (IQR {quartiles[0]:.3f}–{quartiles[1]:.3f})"


def table(report: dict) -> str:
    """The results as one markdown table: what was measured, its reference, and their ratio."""
    G, P, N = bench_model.G, report["prompt_tokens"], report["new_tokens"]
    rows = ["| benchmark | base | measured | reference (same run) | ratio / error |", "|---|---|---|---|---|"]
    res = report["results"]
    if "adapter_init" in res:
        r = res["adapter_init"]
        rows.append(f"| adapter init: SVD of {r.get('modules', '?')} projections (rank {bench_model.RANK}) | dense | "
                    + ("failed: " + r["error"] + " | | |" if "error" in r else
                       f"truncated {r['truncated_s']:.2f} s | full (stock PEFT) {r['full_s']:.2f} s | "
                       f"{r['speedup']:.1f}x faster; max rel. err σ {r['sv_rel_err']:.1e}, "
                       f"rank-r W {r['recon_rel_err']:.1e} |"))
    for quant in report["quants"]:
        q = res.get(quant, {})
        label = q.get("dtype", quant)
        if "error" in q:
            rows.append(f"| {quant} | {label} | failed: {q['error']} | | |")
            continue
        for key, what, goal in (("forward", "", " (goal ≤ 1.05)"),
                                ("lora_forward", f", stock PEFT LoRA r={bench_model.RANK} (yardstick)", "")):
            if key in q:
                f = q[key]
                rows.append(f"| forward, {G}×{P + N} tokens{what} | {label} | adapted {f['adapted_s'] * 1e3:.1f} ms "
                            f"(fastest of {f['rounds']}) | base {f['base_s'] * 1e3:.1f} ms | {spread(f['ratio'], f['ratio_quartiles'])}{goal}"
                            + (f"; CPU time {spread(f['cpu_ratio'], f['cpu_ratio_quartiles'])}" if "cpu_ratio" in f
                               else "") + " |")
        if "rollout" in q:
            r = q["rollout"]
            rows.append(f"| rollout, {G}×{N} new tokens | {label} | adapted {r['adapted_tok_s']:.1f} tok/s | "
                        f"base {r['base_tok_s']:.1f} tok/s | {r['ratio']:.3f} (time, adapted / base) |")
        if "grpo_step" in q:
            s = q["grpo_step"]
            kind = "peak GPU alloc" if s["peak_kind"] == "cuda_max_allocated" else "peak RSS"
            ckpt = "on" if s["gradient_checkpointing"] else "off"
            rows.append(f"| GRPO step, G={G}, {s['prompt_tokens']}+{N} tokens, grad. ckpt {ckpt} "
                        f"| {label} | {s['seconds']:.2f} s, {kind} {fmt_bytes(s['peak_bytes'])}"
                        + (f" (reserved {fmt_bytes(s['peak_reserved_bytes'])})" if "peak_reserved_bytes" in s else "")
                        + f" | before the step {fmt_bytes(s['before_bytes'])} | — |")
    if "judge" in res:
        j = res["judge"]
        rows.append("| judge | — | failed: " + j["error"] + " | | |" if "error" in j else
                    f"| judge, {j['programs']} programs × {j['tests']} tests, {j['workers']} workers | — | "
                    f"{j['judge_programs_s']:.2f} programs/s | "
                    f"seed-style loop {j['seed_style_programs_s']:.2f} programs/s | "
                    f"{j['speedup']:.1f}x |")
    return "\n".join(rows)


def real_step_table(r: dict, goal_s: float) -> str:
    """One real GRPO step: ratios first (against the goal, plain generate, the matmul bound), then seconds."""
    parts, passes = r["parts_s"], r["passes"]
    plain = r["plain_generate_tok_s"]
    bound = r["rollout_matmul_bound_tok_s"]
    rows = ["| quantity | measured | reference (same run) | ratio |", "|---|---|---|---|",
            f"| GRPO step | {r['step_s']:.0f} s | goal {goal_s:.0f} s | {r['step_s'] / goal_s:.2f} |",
            f"| rollout in the step (real tokens) | {r['rollout_tok_s']:.1f} tok/s | plain generate, adapted, "
            f"{r['plain_generate_tokens']} tokens: {plain['adapted']:.1f} tok/s | {r['rollout_tok_s'] / plain['adapted']:.2f} |",
            f"| plain generate, adapted | {plain['adapted']:.1f} tok/s | plain generate, base: {plain['base']:.1f} tok/s | "
            f"{plain['base'] / plain['adapted']:.2f} (time, adapted / base) |",
            f"| rollout in the step (padded rows) | {r['rollout_padded_tok_s']:.1f} tok/s | matmul bound at batch "
            f"{r['rows']}: {bound:.0f} tok/s ({r['matmul_flop_s']['decode'] / 1e9:.1f} GFLOP/s × "
            f"{r['flops_per_token'] / 1e6:.0f} MFLOP/token) | {r['rollout_padded_tok_s'] / bound:.2f} |",
            f"| padding in the batch | {r['completion_tokens']:.0f} completion tokens | {r['padded_completion_tokens']:.0f} "
            f"computed (every row until the longest stops) | {r['completion_tokens'] / max(r['padded_completion_tokens'], 1):.2f} |"]
    bound = r["bound_s"]
    best = {"generation": bound["prefill"] + bound["decode"], "forward_with_grad": bound["forward_with_grad"],
            "backward": bound["backward"]}
    rows.append(f"| GRPO step at this CPU's rates | {r['step_s']:.0f} s | {sum(best.values()) + parts['judge']:.0f} s "
                f"(parts below + judge) | {r['step_s'] / (sum(best.values()) + parts['judge']):.2f} |")
    rows.append(f"| decode weight streaming | {r['weight_stream_bytes_s'] / 1e9:.2f} GB/s (fp32 LM head, {r['rows']} rows) "
                f"| GEMM at batch {r['rows']}: {r['matmul_flop_s']['decode'] / 1e9:.1f} GFLOP/s in cache, "
                f"{r['matmul_flop_s']['scoring'] / 1e9:.1f} at 2048 rows | — |")
    for name, seconds in parts.items():
        if name in best:
            detail = (f"prefill {bound['prefill']:.1f} s + decode {bound['decode']:.1f} s" if name == "generation"
                      else f"{best[name]:.1f} s")
            rows.append(f"| {name.replace('_', ' ')} | {seconds:.1f} s ({seconds / r['step_s']:.0%} of the step) "
                        f"| at this CPU's rates: {detail} | {seconds / best[name]:.2f} |")
        else:
            rows.append(f"| {name.replace('_', ' ')} | {seconds:.1f} s | of the step | {seconds / r['step_s']:.2f} |")
    rows.append(f"| forward passes | {passes['decode_forwards']} decode + {passes['long_no_grad_forwards']} long no-grad "
                f"(prefill + {passes['logprob_calls_no_grad']} old/ref log-prob calls) + "
                f"{len(passes['with_grad_forwards'])} with grad {passes['with_grad_forwards']} | minimum: prefill + "
                f"decode + 1 with grad | — |")
    touched = {part: fmt_bytes(pages * 4096) for part, pages in r["minor_faults"].items()}
    rows.append(f"| first touch of fresh memory (minor page faults × 4 KiB) | generation {touched['generation']}, "
                f"forward with grad {touched['forward_with_grad']}, backward {touched['backward']} "
                f"| a run's first step touches its activations' pages once | — |")
    rows.append(f"| peak memory | {fmt_bytes(r['peak_rss_bytes'])} RSS | {r['threads']} torch thread(s) | — |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import modeling
    from tqdm import tqdm

    device = modeling.default_device()
    if args.preset in REAL_STEPS:
        return run_real_step(args, argv, device)
    preset = bench_model.PRESETS[args.preset]
    if args.new_tokens:
        preset = dataclasses.replace(preset, new_tokens=args.new_tokens)
    report = {"preset": preset.name, "config": preset.config, "quants": QUANTS[args.quant], "only": args.only,
              "prompt_tokens": preset.prompt_len, "new_tokens": preset.new_tokens,
              "command": command_line(argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(device), "results": {}, "stage_s": {}}
    res = report["results"]
    model_stages = set(args.only) & {"forward", "rollout", "grpo_step"}
    steps = (["adapter_init"] if "adapter_init" in args.only else []) + (report["quants"] if model_stages else []) \
        + (["judge"] if "judge" in args.only else [])
    started = time.perf_counter()
    for step in tqdm(steps, desc=f"bench {preset.name}", unit="stage"):
        step_started = time.perf_counter()
        if step == "adapter_init":
            run_stage(res, step, bench_model.bench_svd, preset, device)
        elif step == "judge":
            run_stage(res, step, judge_throughput, *JUDGE_SIZE[preset.name])
        else:
            run_stage(res, step, bench_model.bench_quant, preset, step, device, model_stages)
        report["stage_s"][step] = time.perf_counter() - step_started
    report["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{preset.name} preset on {report['machine']['name']} ({report['machine']['cores']} cores), "
          f"{report['date']}, {report['total_s']:.0f} s; JSON in {args.out}\n")
    print(table(report))
    if any("error" in v for v in res.values()):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
