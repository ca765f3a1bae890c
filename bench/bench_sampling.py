"""Held-out sampling end to end against plain `transformers` generate, side by side in one run (bench/run.py
--preset qwen05 runs it; issue #29's yardstick).

Plain: the model as `from_pretrained` gives it, fp32, one torch thread, `generate` at batch 16 with a fixed number
of new tokens (min = max), on the chat prompts of the shipped test problems, each asked `n` times: tokens/s = rows x
new tokens / seconds of `generate` alone (no load, no judging).
Toolkit: `python validate.py` with its defaults (on CPU the int8 sampling copy, generating in one process per
core), and without each lever, on the same problems, samples and token cap, as a user runs it: a fresh process,
wall time from start to exit, model load and judging included;
tokens/s = the completion tokens it generated (read back from its results.jsonl) / that wall time, and also the
same rows x cap / wall time the plain side is measured with, for a like-for-like count when answers stop early.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plain_generate(model_name: str, problems: list[dict], n: int, new_tokens: int, batch_size: int = 16) -> dict:
    """Tokens/s of plain generate: fp32, one thread, every row generating exactly `new_tokens`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import data
    import modeling

    path = modeling.resolve_model_path(model_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    torch.set_num_threads(1)
    prompt = data.PromptSettings(show_examples=True)
    texts = [data.render_prompt(prompt.messages(p), tokenizer)[0] for p in problems for _ in range(n)]
    seconds = 0.0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(start)
        began = time.perf_counter()
        with torch.no_grad():
            model.generate(**enc, do_sample=True, temperature=0.8, top_p=1.0, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
        seconds += time.perf_counter() - began
    tokens = len(texts) * new_tokens
    return {"rows": len(texts), "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def toolkit_validate(model_name: str, problems: int, n: int, new_tokens: int, extra: list[str]) -> dict:
    """Tokens/s of `python validate.py` end to end (a fresh process; load, generation and judging included)."""
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as out:
        command = [sys.executable, "validate.py", str(problems), "--model", model_name, "--no_quant", "--dataset",
                   "sample", "--show_examples", "--temperature", "0.8", "--n", str(n), "--k", "1",
                   "--max_completion_length", str(new_tokens), "--batch_size", "16", "--output_dir", out, *extra]
        began = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - began
        samples = [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]
        summary = json.loads((Path(out) / "summary.json").read_text())
    generated = sum(s["completion_tokens"] for s in samples)
    return {"command": " ".join(["python", *command[1:]]), "wall_s": wall, "generated_tokens": generated,
            "tok_s": generated / wall, "capped_tok_s": len(samples) * new_tokens / wall,
            "timing": summary["timing"], "pass@1": summary["metrics"].get("pass@1"),
            "sampler": summary["run"]["generation"]["sampler"]}


# The toolkit's paths, each `python validate.py` with these flags added: its defaults, then each lever taken away.
VALIDATE_PATHS = {
    "validate_default": ("validate.py, defaults", []),
    "validate_one_process": ("validate.py --processes 1", ["--processes", "1"]),
    "validate_exact": ("validate.py --sampler exact --processes 1", ["--sampler", "exact", "--processes", "1"]),
}


def measure(model_name: str = "qwen2.5-coder-0.5b", n: int = 4, new_tokens: int = 256,
            paths: Sequence[str] = tuple(VALIDATE_PATHS)) -> dict:
    """Both sides on the shipped test problems: plain generate, then the toolkit's default path and the same path
    without each lever (one generation process; then the exact sampler too). `n` = 4 asks what the experiment's
    evaluation asks (4 batches of 16); issue #29's first measurement asked 2, which makes 2 batches (16 and 10
    samples), so a second process has one short batch to take and waits for the long one."""
    import data

    problems = data.load_problems("sample", "test")
    plain = plain_generate(model_name, problems, n, new_tokens)
    paths = {key: toolkit_validate(model_name, len(problems), n, new_tokens, VALIDATE_PATHS[key][1]) for key in paths}
    return {"problems": len(problems), "n": n, "new_tokens": new_tokens, "plain_generate": plain, **paths,
            **{f"ratio_{key.removeprefix('validate_')}": v["tok_s"] / plain["tok_s"] for key, v in paths.items()},
            "ratio_default_capped": paths["validate_default"]["capped_tok_s"] / plain["tok_s"]}


def table(r: dict) -> str:
    plain = r["plain_generate"]
    rows = ["| path | tokens/s | against plain generate |", "|---|---|---|",
            f"| plain generate (fp32, 1 thread, batch 16, {r['new_tokens']} tokens fixed) | {plain['tok_s']:.1f} | 1.00 |"]
    for key, (label, _) in VALIDATE_PATHS.items():
        if key not in r:
            continue
        v = r[key]
        timing = v["timing"]
        rows.append(f"| {label} ({v['sampler']}, {timing['processes']} generating process(es); end to end, "
                    f"{v['wall_s']:.0f} s: generate {timing['generate_s']:.0f} s, "
                    f"judge {timing['judge_s']:.0f} s) | {v['tok_s']:.1f} generated ({v['capped_tok_s']:.1f} at "
                    f"rows x cap) | {v['tok_s'] / plain['tok_s']:.2f} ({v['capped_tok_s'] / plain['tok_s']:.2f}) |")
    return "\n".join(rows)
