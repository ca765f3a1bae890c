"""Evaluation shared by test.py, validate.py and the training callback: generate, judge, score, compare.

One code path from problems to numbers: prompts from data.build_messages and the chat template, batched
generation with HF `generate` (left padding), judging and rewards only through utils (the judge), then
metrics whose denominators are the problems evaluated (skipped problems are listed with their reason).

Every run records what makes it comparable (problem ids, a hash of the prompts, the seed, the generation and
judge settings) and its per-problem outcomes, so `compare_runs` can refuse runs that did not see the same
prompts and pair the rest problem by problem: an exact McNemar test on pass/fail and a bootstrap interval on
the average-reward difference tell whether 3/165 -> 6/165 is more than noise.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

import data
import errors
import modeling
import sampling
import utils

# The outcome of one sample; the five partition every sample, so their counts add up to the samples judged.
OUTCOMES = ("pass", "partial", "compiled_zero", "compile_error", "no_code")
# All of a problem's tests (the 2 s limit and token comparison are the judge's defaults): pass@1 means every test.
EVAL_JUDGE = utils.JudgeConfig(max_tests=0)
BOOTSTRAP_RESAMPLES = 10_000
# Each generated batch, appended as it lands: what `--resume` continues a stopped run from (generation is the cost;
# judging the finished completions again takes a minute).
GENERATIONS_FILE = "generations.jsonl"


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides which completions a model writes; runs are paired only when these match."""

    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # samples per problem
    batch_size: int = 8  # part of the pairing: batch composition decides padding and sampling seeds
    seed: int = 42
    max_prompt_tokens: int | None = None  # longer prompts are skipped; None = context length - max_new_tokens
    sampler: str = "exact"  # which weights draw the tokens: arguments.SAMPLER_WEIGHTS (int8 is the CPU fast path)


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens before the stop token
    truncated: bool  # hit max_new_tokens without a stop token


# ----------------------------------------------------------------------------------------------------------------
# Prompts and generation


def evaluation_reward(judge: utils.JudgeConfig = EVAL_JUDGE) -> utils.CodeReward:
    """The reward evaluation reports: the seed scheme, unscaled, in [0, 1], on `judge` (all tests by default)."""
    return utils.CodeReward(judge, multipliers=False)


def prompt_text(problem: dict, tokenizer, prompt: data.PromptSettings = data.PromptSettings()) -> str:
    """The exact text the model continues: the chat template with the assistant turn opened."""
    return data.render_prompt(prompt.messages(problem), tokenizer)[0]


def build_prompts(problems: list[dict], tokenizer, settings: GenerationSettings,
                  prompt: data.PromptSettings = data.PromptSettings()) -> tuple[list[tuple[dict, str]], list[dict]]:
    """(problem, prompt) pairs to evaluate and {"id", "reason"} for the rest: a problem without tests cannot be
    judged and a prompt longer than `max_prompt_tokens` cannot be answered, so neither may count as a failure."""
    kept, skipped = [], []
    for problem in problems:
        if not data.all_tests(problem):
            skipped.append({"id": problem["id"], "reason": "no tests"})
            continue
        text, ids = data.render_prompt(prompt.messages(problem), tokenizer)
        n_tokens = len(ids)
        if settings.max_prompt_tokens is not None and n_tokens > settings.max_prompt_tokens:
            reason = f"prompt too long ({n_tokens} tokens > {settings.max_prompt_tokens})"
            skipped.append({"id": problem["id"], "reason": reason})
            continue
        kept.append((problem, text))
    return kept, skipped


def generation_config(model, tokenizer, settings: GenerationSettings):
    """A fresh GenerationConfig: every sampling knob is ours, none inherited from the model's defaults (Qwen ships
    top_k 20 and repetition_penalty 1.05, which would silently change what "temperature 0.8" means)."""
    from transformers import GenerationConfig

    sampled = settings.temperature > 0
    eos = model.generation_config.eos_token_id
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sampled,
        temperature=settings.temperature if sampled else None,
        top_p=settings.top_p if sampled else None,
        eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def _stop_ids(config, tokenizer) -> set[int]:
    eos = config.eos_token_id
    return {*(eos if isinstance(eos, list) else [eos]), tokenizer.pad_token_id} - {None}


def _completion(row: list[int], tokenizer, stop_ids: set[int]) -> Completion:
    end = next((i for i, token in enumerate(row) if token in stop_ids), None)
    tokens = row if end is None else row[:end]
    return Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), end is None)


@contextlib.contextmanager
def _left_padding(tokenizer) -> Iterator[None]:
    """Batched generation continues each prompt from its last token only when padding is on the left;
    a training tokenizer may pad on the right, so switch for the duration and restore."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


class Journal:
    """A run's generations.jsonl under its key: the batches a stopped run already generated (`done`, read once; a
    line cut short by the stop is ignored), and each new batch appended as it lands. A file holding another run's
    generations is a errors.UsageError."""

    def __init__(self, path: Path, run_key: str):
        self.path, self.run_key = path, run_key
        self.done: dict[int, list[Completion]] = self.read()

    def read(self) -> dict[int, list[Completion]]:
        """The batches on disk now (generation processes append to the same file while the parent reads it)."""
        done = {}
        for line in self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry["key"] != self.run_key:
                raise errors.UsageError(f"{self.path} holds the generations of another run (other problems, prompts, "
                                        f"settings or model); pass another --output_dir or drop --resume")
            done[entry["batch"]] = [Completion(*c) for c in entry["completions"]]
        return done

    def record(self, batch: int, completions: list[Completion]) -> None:
        """One line, on disk before the next batch starts: a stop loses at most the batch under way (a line it cut
        short is ended first, so the next one stands on its own). The line goes out in one append, so generation
        processes writing the same journal never interleave their lines."""
        entry = {"key": self.run_key, "batch": batch, "completions": [dataclasses.astuple(c) for c in completions]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:  # appends go to the end whatever was read
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write((json.dumps(entry, ensure_ascii=False) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())


def generate(model, tokenizer, prompts: list[str], settings: GenerationSettings, progress: bool = True,
             journal: Journal | None = None, processes: int = 1) -> list[list[Completion]]:
    """`settings.n` completions per prompt, in prompt order.

    Samples are batched longest prompt first (less padding, and an out-of-memory error shows in the first
    batch), a prompt's samples side by side so they share one prefill, and each batch seeds the RNG from
    `settings.seed` and its index, so the same prompts and settings draw the same random numbers whatever the
    model: baseline and adapter runs are paired sample by sample. `settings.sampler` picks the weights that draw.
    With a `journal`, each batch is appended to it as it lands and the batches it already holds are not generated
    again: seeded per batch, a resumed run writes what an unbroken one would have. With `processes` > 1 the
    batches are shared out among that many forked processes (CPU only): seeded per batch, they write the same
    completions one process would, in about 1/processes of the time on as many idle cores.
    """
    jobs = sorted(((i, j) for i in range(len(prompts)) for j in range(settings.n)), key=lambda ij: -len(prompts[ij[0]]))
    batches = [jobs[start:start + settings.batch_size] for start in range(0, len(jobs), settings.batch_size)]
    config = generation_config(model, tokenizer, settings)
    drawing = sampling.Sampler(sampling.SamplerSettings(settings.sampler)).model_for(model)
    stop_ids = _stop_ids(config, tokenizer)

    def draw(index: int) -> list[Completion]:
        enc = tokenizer([prompts[i] for i, _ in batches[index]], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        torch.manual_seed(settings.seed + index)
        out = drawing.generate(**enc.to(model.device), generation_config=config)  # (batch, prompt + new)
        return [_completion(row, tokenizer, stop_ids) for row in out[:, enc.input_ids.shape[1]:].tolist()]

    done = dict(journal.done) if journal else {}
    todo = [index for index in range(len(batches)) if index not in done]
    with tqdm(total=len(jobs), desc="generate", unit="sample", disable=not progress) as bar, _left_padding(tokenizer):
        bar.update(sum(len(batches[index]) for index in done))
        if modeling.generation_processes(processes, model.device) > 1 and len(todo) > 1:
            done.update(_generate_forked(draw, todo, processes, journal, lambda index: bar.update(len(batches[index]))))
        else:
            for index in todo:
                done[index] = draw(index)
                if journal:
                    journal.record(index, done[index])
                bar.update(len(batches[index]))
    completions: list[list[Completion | None]] = [[None] * settings.n for _ in prompts]
    for index, batch in enumerate(batches):
        for (i, j), completion in zip(batch, done[index]):
            completions[i][j] = completion
    return completions


def _generate_forked(draw: Callable[[int], list[Completion]], todo: list[int], processes: int,
                     journal: Journal | None, landed: Callable[[int], None]) -> dict[int, list[Completion]]:
    """Draw the batches `todo` in `processes` forked children, each taking the next batch no child has taken
    when it is free (batches differ in length, so a fixed share would leave a core idle); {index: batch}.

    Forked after the model (and its sampling copy) are built, the children share their weights with the parent
    page by page instead of loading them again; each child inherits the parent's torch threads. The children hand
    their batches back through the journal (a temporary one without `journal`), one append per batch, while the
    parent reports each as it lands; a child that fails ends the run with an error giving its exit code (its
    traceback is on stderr), and the batches that did land stay in the journal for `--resume`.
    """
    with contextlib.ExitStack() as stack:
        if journal is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="generations-")))
            journal = Journal(folder / GENERATIONS_FILE, "forked")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the children tokenize; say so once, not per fork
        sys.stdout.flush(), sys.stderr.flush()
        taken = multiprocessing.get_context("fork").Value("i", 0)  # how many of `todo` children have taken
        children: list[int] = []
        stack.callback(_stop_children, children)  # before the first fork: an error while forking stops those forked
        for _ in range(min(processes, len(todo))):
            pid = os.fork()
            if pid == 0:  # the child: draw batches until none is left, then leave without the parent's exit handlers
                status = 0
                try:
                    while (index := _take(taken, todo)) is not None:
                        journal.record(index, draw(index))
                except BaseException:
                    traceback.print_exc()
                    status = 1
                finally:
                    sys.stdout.flush(), sys.stderr.flush()
                    os._exit(status)
            children.append(pid)
        on_disk: dict[int, list[Completion]] = {}
        size, failed = -1, []
        while children:
            time.sleep(0.1)
            for pid in list(children):
                finished, status = os.waitpid(pid, os.WNOHANG)
                if finished:
                    children.remove(pid)
                    if os.waitstatus_to_exitcode(status) != 0:
                        failed.append(os.waitstatus_to_exitcode(status))
            grown = journal.path.stat().st_size if journal.path.exists() else -1
            if grown != size:  # read again only when the journal grew
                size = grown
                landed_now = {index: batch for index, batch in journal.read().items() if index in todo}
                for index in sorted(landed_now.keys() - on_disk.keys()):
                    landed(index)
                on_disk = landed_now
        if failed:
            raise GenerationError(f"a generation process failed (exit code {failed[0]}; its error is above); "
                                  f"the batches that landed stay in {journal.path}")
        return {index: on_disk[index] for index in todo}


def _take(taken, todo: list[int]) -> int | None:
    """The next batch of `todo` no generation process has taken yet, or None when all are taken."""
    with taken.get_lock():
        if taken.value == len(todo):
            return None
        taken.value += 1
        return todo[taken.value - 1]


def _stop_children(pids: list[int]) -> None:
    """On an error or Ctrl-C in the parent: the children still drawing stop too, and are reaped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Evaluate without dropout or gradients and hand the model back in the mode it came in (the training
    callback validates a PeftModel in the middle of training)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------------------------
# Judging and metrics


def outcome(result: utils.JudgeResult) -> str:
    """Which of OUTCOMES a judged sample is. "compiled_zero" is its own bucket: the seed counted "0 of N
    tests passed" as a partial pass."""
    if result.verdict is utils.Verdict.NO_CODE:
        return "no_code"
    if not result.compiled:
        return "compile_error"
    if result.total and result.passed == result.total:
        return "pass"
    return "partial" if result.passed else "compiled_zero"


def judge_completions(problems: list[dict], completions: list[list[Completion]],
                      reward: utils.CodeReward | None = None, progress: bool = True) -> list[dict]:
    """One record per (problem, sample) as written to results.jsonl. The judge is the only thing that runs the
    programs and `reward` (default: evaluation_reward(); + 0.0 turns -0.0 for "no code" into 0.0) scores them."""
    reward = reward or evaluation_reward()
    flat = [(p, j, c) for p, cs in zip(problems, completions) for j, c in enumerate(cs)]
    codes = [utils.extract_code(c.text) for _, _, c in flat]
    configs = [utils.problem_judge_config(p, reward.judge) for p, _, _ in flat]
    items = [(code, data.all_tests(p), config) for code, (p, _, _), config in zip(codes, flat, configs)]
    results = utils.judge_batch(items, reward.judge, progress=progress)
    return [
        {"id": p["id"], "sample": j, "completion": c.text, "code": code, "outcome": outcome(r),
         "verdict": r.verdict.value, "verdicts": [v.value for v in r.verdicts], "passed": r.passed, "total": r.total,
         "compiled": r.compiled, "reward": reward.score(r, p.get("source", ""), p.get("difficulty", "")) + 0.0,
         "completion_tokens": c.tokens, "truncated": c.truncated, "message": r.message,
         "time_limit_s": config.time_limit_s, "compare": config.compare}
        for (p, j, c), code, r, config in zip(flat, codes, results, configs)
    ]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n = {n})")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def per_problem(samples: list[dict]) -> list[dict]:
    """Per problem, in evaluation order: samples, full passes, whether the first sample passed, mean reward.
    Stored in summary.json so two runs can be paired problem by problem."""
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["id"], []).append(s)
    return [{"id": pid, "n": len(g), "passes": sum(s["outcome"] == "pass" for s in g),
             "first_pass": g[0]["outcome"] == "pass", "reward": sum(s["reward"] for s in g) / len(g)}
            for pid, g in groups.items()]


def compute_metrics(samples: list[dict], ks: Sequence[int] = (1,), elapsed_s: float | None = None) -> dict:
    """Rates over samples (every problem has the same n, so this is also the mean over problems evaluated) and
    pass@k over problems (always k = 1: the unbiased mean(c/n), i.e. the full-pass rate)."""
    problems = per_problem(samples)
    n_samples = len(samples)
    counts = Counter(s["outcome"] for s in samples)
    verdicts = Counter(s["verdict"] for s in samples)

    def mean(total: float) -> float:
        return total / n_samples if n_samples else 0.0

    metrics = {
        "problems": len(problems), "samples": n_samples,
        "avg_reward": mean(sum(s["reward"] for s in samples)),
        "compile_rate": mean(sum(s["compiled"] for s in samples)),
        "partial_rate": mean(counts["partial"]), "compiled_zero_rate": mean(counts["compiled_zero"]),
        "compile_error_rate": mean(counts["compile_error"]), "no_code_rate": mean(counts["no_code"]),
        "truncated_rate": mean(sum(s["truncated"] for s in samples)),
        "mean_completion_tokens": mean(sum(s["completion_tokens"] for s in samples)),
        "counts": {o: counts[o] for o in OUTCOMES},
        "verdicts": {v.value: verdicts[v.value] for v in utils.Verdict},
    }
    uncut = [s for s in samples if not s["truncated"]]
    if uncut:  # does a lift come from solving, or only from shorter answers that are no longer cut?
        metrics["pass_rate_uncut"] = sum(s["outcome"] == "pass" for s in uncut) / len(uncut)
    n = min((p["n"] for p in problems), default=0)
    for k in sorted({1, *ks}):
        if 0 < k <= n:
            metrics[f"pass@{k}"] = sum(pass_at_k(p["n"], p["passes"], k) for p in problems) / len(problems)
    if elapsed_s:
        metrics["problems_per_minute"] = len(problems) / (elapsed_s / 60)
    return metrics


def prompts_sha256(kept: list[tuple[dict, str]]) -> str:
    """One hash over (id, prompt) pairs: equal hashes mean the models saw byte-identical prompts."""
    return hashlib.sha256(json.dumps([[p["id"], text] for p, text in kept]).encode()).hexdigest()


def _resolve(settings: GenerationSettings, model) -> GenerationSettings:
    if settings.max_prompt_tokens is not None:
        return settings
    context = getattr(model.config, "max_position_embeddings", None)
    return dataclasses.replace(settings, max_prompt_tokens=context and context - settings.max_new_tokens)


def evaluate(model, tokenizer, problems: list[dict], settings: GenerationSettings = GenerationSettings(),
             reward: utils.CodeReward | None = None, *, prompt: data.PromptSettings = data.PromptSettings(),
             ks: Sequence[int] = (1,), progress: bool = True, journal: Path | None = None,
             model_key: str = "", processes: int = 1) -> tuple[list[dict], dict]:
    """Generate, judge and score `problems` asked with `prompt`: (per-sample records, summary). The summary's
    "run" holds what must match for two runs to be compared; "per_problem" holds what the comparison pairs.
    With a `journal` (generate's), a stopped run continues where it stopped; `model_key` names the weights, so a
    journal is only ever continued by the model that began it. `processes` (generate's) changes the time, not the
    completions."""
    start = time.monotonic()
    settings = _resolve(settings, model)
    reward = reward or evaluation_reward()
    kept, skipped = build_prompts(problems, tokenizer, settings, prompt)
    prompts_digest = prompts_sha256(kept)
    run_key = hashlib.sha256(json.dumps([prompts_digest, dataclasses.asdict(settings), model_key]).encode()).hexdigest()
    batches = Journal(journal, run_key) if journal else None
    resumed = len(batches.done) if batches else 0
    with eval_mode(model):
        completions = generate(model, tokenizer, [text for _, text in kept], settings, progress, batches, processes)
    generate_s = time.monotonic() - start
    samples = judge_completions([p for p, _ in kept], completions, reward, progress)
    elapsed = time.monotonic() - start
    judge = {k: v for k, v in dataclasses.asdict(reward.judge).items() if k != "workers"}
    scoring = {"scheme": reward.scheme, "no_code_penalty": reward.no_code_penalty, "multipliers": reward.multipliers}
    summary = {
        "run": {"problem_ids": [p["id"] for p, _ in kept], "skipped_ids": [s["id"] for s in skipped],
                "prompts_sha256": prompts_digest, "prompt": prompt.to_dict(),
                "generation": dataclasses.asdict(settings), "draw": sampling.draw_name(settings.sampler), "judge": json.loads(json.dumps(judge)), "reward": scoring},
        "metrics": compute_metrics(samples, ks, elapsed),
        "timing": {"generate_s": generate_s, "judge_s": elapsed - generate_s, "total_s": elapsed,
                   "resumed_batches": resumed, "processes": processes},
        "skipped": skipped,
        "per_problem": per_problem(samples),
    }
    return samples, summary


def run_validation(model, tokenizer, problems: list[dict], *, max_new_tokens: int, batch_size: int,
                   prompt: data.PromptSettings = data.PromptSettings(), reward: utils.CodeReward | None = None,
                   progress: bool = False, sampler: str = "exact", processes: int = 1) -> dict:
    """Greedy metrics (pass@1, compile_rate, avg_reward, ...) for the training callback, on validate.py's reward
    (all tests) by default so `best/` is chosen by what validate.py will report; the model may be a PeftModel in
    training mode: it is evaluated without gradients and handed back in training mode."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, sampler=sampler)
    return evaluate(model, tokenizer, problems, settings, reward, prompt=prompt, progress=progress,
                    processes=processes)[1]["metrics"]


# ----------------------------------------------------------------------------------------------------------------
# Reports


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# (metric key, label, formatter, delta formatter): the rows of both the run table and the comparison table
ROWS = [
    ("avg_reward", "average reward", "{:.3f}".format, "{:+.3f}".format),
    ("pass@1", "pass@1 (all tests)", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("compile_rate", "compile rate", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("partial_rate", "partial pass (some tests)", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("compiled_zero_rate", "compiled, 0 tests passed", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("compile_error_rate", "compile error", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("no_code_rate", "no code", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("truncated_rate", "hit max_new_tokens", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("pass_rate_uncut", "pass rate of answers not cut", _pct, lambda d: f"{100 * d:+.2f} pp"),
    ("mean_completion_tokens", "mean completion tokens", "{:.1f}".format, "{:+.1f}".format),
    ("problems_per_minute", "problems / minute", "{:.2f}".format, "{:+.2f}".format),
]


def _rows(metrics: dict) -> list[tuple]:
    """ROWS plus a pass@k row per k the run has, after pass@1."""
    ks = sorted(int(key[5:]) for key in metrics if key.startswith("pass@") and key != "pass@1")
    extra = [(f"pass@{k}", f"pass@{k}", _pct, lambda d: f"{100 * d:+.2f} pp") for k in ks]
    return ROWS[:2] + extra + ROWS[2:]


def format_summary(summary: dict) -> str:
    """The markdown table printed at the end of a run."""
    m = summary["metrics"]
    lines = [f"| metric | {summary.get('label', 'value')} |", "|---|---|",
             f"| problems evaluated (samples) | {m['problems']} ({m['samples']}) |"]
    lines += [f"| {label} | {fmt(m[key])} |" for key, label, fmt, _ in _rows(m) if key in m]
    lines.append(f"| verdicts | {' '.join(f'{v}={c}' for v, c in m['verdicts'].items() if c) or '-'} |")
    if summary["skipped"]:
        reasons = Counter(s["reason"].split(" (")[0] for s in summary["skipped"])
        lines.append(f"| skipped | {', '.join(f'{r}: {c}' for r, c in reasons.items())} |")
    return "\n".join(lines)


class GenerationError(RuntimeError):
    """A generation process ended with an error (its traceback is on stderr above)."""


class UnpairedRunsError(ValueError):
    """Two summaries that did not see the same problems, prompts, seeds or settings: a comparison would lie."""


def check_paired(a: dict, b: dict) -> None:
    """Raise UnpairedRunsError naming the first field of "run" in which the two summaries differ."""
    for key in sorted(set(a["run"]) | set(b["run"])):
        va, vb = a["run"].get(key), b["run"].get(key)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = next(k for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k))
            key, va, vb = f"{key}.{sub}", va.get(sub), vb.get(sub)
        elif isinstance(va, list) and isinstance(vb, list):
            va, vb = (f"{len(va)} ids", f"{len(vb)} ids") if len(va) != len(vb) else ("one list", "another")
        raise UnpairedRunsError(f"runs are not paired: {key} differs ({va} vs {vb}); rerun with the same "
                                f"problems, prompts, seed and settings")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no difference each of the b + c discordant problems (passed by
    only one run) is a fair coin, so p = 2 * P(Binomial(b + c, 1/2) <= min(b, c)), capped at 1."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n) if n else 1.0


def bootstrap_ci(diffs: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired per-problem differences (problems resampled)."""
    import numpy as np

    values = np.asarray(diffs, dtype=float)
    if values.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def compare_runs(a: dict, b: dict, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Paired comparison of two summaries (B minus A): McNemar on the first sample's pass/fail per problem, a
    bootstrap 95% interval on the average-reward difference, and the problems whose number of passing samples
    changed (`changed`: id, passes in A, passes in B), so a reader sees where a difference comes from. Raises
    UnpairedRunsError for unpaired runs."""
    check_paired(a, b)
    pa, pb = {p["id"]: p for p in a["per_problem"]}, {p["id"]: p for p in b["per_problem"]}
    ids = [p["id"] for p in a["per_problem"]]
    only_a = sum(pa[i]["first_pass"] and not pb[i]["first_pass"] for i in ids)
    only_b = sum(pb[i]["first_pass"] and not pa[i]["first_pass"] for i in ids)
    low, high = bootstrap_ci([pb[i]["reward"] - pa[i]["reward"] for i in ids], resamples, seed)
    changed = [{"id": i, "passes_a": pa[i]["passes"], "passes_b": pb[i]["passes"]}
               for i in ids if pa[i]["passes"] != pb[i]["passes"]]
    return {"problems": len(ids), "only_a": only_a, "only_b": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b),
            "reward_diff": b["metrics"]["avg_reward"] - a["metrics"]["avg_reward"], "reward_ci": [low, high],
            "resamples": resamples, "bootstrap_seed": seed, "changed": changed}


def format_comparison(a: dict, b: dict, result: dict) -> str:
    """Side-by-side markdown table with deltas (B - A), then the two paired tests in words."""
    ma, mb = a["metrics"], b["metrics"]
    lines = [f"A: {a.get('label', 'A')}", f"B: {b.get('label', 'B')}", "",
             "| metric | A | B | Δ (B − A) |", "|---|---|---|---|",
             f"| problems evaluated | {ma['problems']} | {mb['problems']} | |"]
    lines += [f"| {label} | {fmt(ma[key])} | {fmt(mb[key])} | {dfmt(mb[key] - ma[key])} |"
              for key, label, fmt, dfmt in _rows(ma) if key in ma and key in mb]
    low, high = result["reward_ci"]
    lines += ["", f"McNemar exact test (first sample, paired pass/fail on {result['problems']} problems): "
                  f"passed only by A {result['only_a']}, only by B {result['only_b']}, "
                  f"two-sided p = {result['mcnemar_p']:.4g}",
              f"Average reward Δ = {result['reward_diff']:+.4f}, paired bootstrap 95% CI [{low:+.4f}, {high:+.4f}] "
              f"({result['resamples']} resamples, seed {result['bootstrap_seed']})"]
    n = a["per_problem"][0]["n"] if a["per_problem"] else 0
    moves = ", ".join(f"{c['id']} {c['passes_a']}→{c['passes_b']}" for c in result["changed"]) or "none"
    lines.append(f"Problems whose passing samples (of {n}) changed, A → B: {moves}")
    return "\n".join(lines)


def write_outputs(out_dir: str | Path, samples: list[dict], summary: dict) -> Path:
    """results.jsonl (one line per problem and sample) and summary.json in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return out_dir


def load_summary(path: str | Path) -> dict:
    """A summary.json written by write_outputs; ValueError with the reason when it is not one."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read summary {path}: {e}") from None
    if not isinstance(summary, dict) or not {"run", "metrics", "per_problem"} <= set(summary):
        raise ValueError(f"{path} is not a summary.json written by test.py or validate.py")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Command line shared by test.py and validate.py


def _settings(args: argparse.Namespace) -> tuple[GenerationSettings, utils.CodeReward, list[int]]:
    """Validate the flags that argparse cannot check alone."""
    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        raise errors.UsageError(f"--k must be comma-separated integers (got {args.k!r})")
    positive = {"--n": args.n, "--batch_size": args.batch_size, "--max_completion_length": args.max_completion_length,
                "--time_limit": args.time_limit or EVAL_JUDGE.time_limit_s, "--k": min(ks),
                "--processes": 1 if args.processes is None else args.processes}
    for flag, value in positive.items():
        if value <= 0:
            raise errors.UsageError(f"{flag} must be positive (got {value})")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise errors.UsageError("--temperature must be >= 0 and --top_p in (0, 1]")
    if args.n > 1 and args.temperature == 0:
        raise errors.UsageError("--n > 1 needs --temperature > 0 (greedy samples are identical)")
    if max(ks) > args.n:
        raise errors.UsageError(f"pass@{max(ks)} needs --n >= {max(ks)} samples per problem")
    settings = GenerationSettings(max_new_tokens=args.max_completion_length, temperature=args.temperature, top_p=args.top_p,
                                  n=args.n, batch_size=args.batch_size, seed=args.seed,
                                  max_prompt_tokens=args.max_prompt_tokens,
                                  sampler=args.sampler or sampling.default_weights(modeling.default_device()))
    reward = evaluation_reward(dataclasses.replace(EVAL_JUDGE, max_tests=args.max_tests, time_limit_s=args.time_limit or EVAL_JUDGE.time_limit_s))
    return settings, reward, ks


def prompt_for(args: argparse.Namespace, info: dict) -> data.PromptSettings:
    """The adapter's own prompt (data's defaults for the base model), with the prompt flags given overriding it."""
    return data.PromptSettings.from_meta(info.get("meta", {})).overridden(args)


def model_key(model, info: dict) -> str:
    """What names the weights a run generates with: the base and how it was loaded, and the adapter's own numbers
    (a directory's path alone would not see it retrained in place)."""
    import tinylora

    trained = tinylora.trained_vector(model).numpy().tobytes() if info.get("adapter") else b""
    return json.dumps(info, sort_keys=True) + hashlib.sha256(trained).hexdigest()


def run_cli(args: argparse.Namespace, script: str) -> dict:
    """The whole run behind `python test.py` / `python validate.py`: load, evaluate, write, print the table."""
    settings, reward, ks = _settings(args)
    if args.resume and not args.output_dir:
        raise errors.UsageError("--resume continues the run in --output_dir: name it")
    named = args.dataset in data.DATASETS
    problems = data.load_problems(args.dataset, args.split, args.num_problems, seed=args.seed)
    model, tokenizer, info = modeling.load_adapted_model(args.model, not args.no_quant, args.checkpoint_path)
    prompt = prompt_for(args, info)
    label = f"adapter {args.checkpoint_path}" if args.checkpoint_path else f"baseline {args.model}"
    adapter = "".join(f", {k}={info[k]}" for k in ("u", "rank", "tie") if k in info)
    print(f"{script}: {label}{adapter} on {len(problems)} problems of {args.dataset}"
          f"{f' {args.split}' if named else ''}", file=sys.stderr)
    name = f"{datetime.now():%Y%m%d-%H%M%S}-{Path(args.checkpoint_path).name if args.checkpoint_path else 'baseline'}"
    out_dir = Path(args.output_dir or Path("output") / script / name)
    journal = out_dir / GENERATIONS_FILE
    if not args.resume:
        journal.unlink(missing_ok=True)  # a fresh run: generations left in the folder by another are not reused
    info = {k: v for k, v in info.items() if k != "meta"}
    processes = modeling.generation_processes(args.processes, model.device)
    samples, summary = evaluate(model, tokenizer, problems, settings, reward, prompt=prompt, ks=ks, journal=journal,
                                model_key=model_key(model, info), processes=processes)
    summary["run"].update(dataset=args.dataset, split=args.split if named else None)
    summary = {"label": label, "created": datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
               "model": info, **summary}
    write_outputs(out_dir, samples, summary)
    print(format_summary(summary))
    print(f"\nwrote {out_dir / 'results.jsonl'} and {out_dir / 'summary.json'}")
    return summary


def compare_cli(path_a: str, path_b: str, output_dir: str | None = None) -> dict:
    """`--compare A B`: print the paired comparison and draw it as paired bars, in --output_dir/compare.png or else
    beside B's summary.json (compare_vs_<A's folder>.png); a errors.UsageError for unreadable or unpaired runs."""
    import plots

    try:
        a, b = load_summary(path_a), load_summary(path_b)
        result = compare_runs(a, b)
    except ValueError as e:  # includes UnpairedRunsError
        raise errors.UsageError(str(e))
    print(format_comparison(a, b, result))
    chart = Path(output_dir) / "compare.png" if output_dir else \
        Path(path_b).parent / f"compare_vs_{Path(path_a).resolve().parent.name}.png"
    result["chart"] = str(plots.comparison_bars(a, b, result, chart))
    print(f"\nwrote {chart}")
    return result
