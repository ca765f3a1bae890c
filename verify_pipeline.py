"""Check every stage of the pipeline in order, offline on a CPU in under two minutes: the first thing to run.

    python verify_pipeline.py                                        # embedded tiny model, shipped problems
    python verify_pipeline.py --model Qwen/Qwen2.5-Coder-3B-Instruct --dataset code_contests     # GPU, real model

One ✓/✗ line per stage with its time, then a summary. A stage whose prerequisite failed is skipped; the others
still run, so one run shows everything that is broken. Each stage's own output (TRL, bitsandbytes, compilers) goes
to a log whose last lines are shown only when the stage fails. Exit 0: all passed; 1: a stage failed (named, with
what to do); 2: bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import arguments
import data
import errors
import utils

ROOT = Path(__file__).resolve().parent
PROBE = "int main() { long long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }"
LOG_TAIL = 6


class Failed(Exception):
    """A check did not hold; the message becomes the ✗ line."""


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise Failed(reason)


@dataclasses.dataclass
class Context:
    """The arguments plus what one stage builds for the next (each model is loaded once)."""

    args: argparse.Namespace
    work: Path
    tokenizer: object = None
    ids: object = None          # probe input ids, (1, seq)
    model: object = None        # full-precision base; the TinyLoRA PeftModel after `adapter`
    logits: object = None       # the base model's logits on the probe, (1, seq, vocab)
    nf4: object = None
    nf4_logits: object = None
    loaded: object = None       # the adapter after a save/load round trip, evaluated last


def probe_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids.to(model.device)).logits.float().cpu()


# ------------------------------------------------------------------------------------------------------- stages
def check_toolchain(ctx: Context) -> str:
    cxx = shutil.which(ctx.args.cxx)
    check(cxx is not None, f"C++ compiler {ctx.args.cxx!r} not found")
    features = utils.sandbox_features()
    enabled = [name for name, on in features.items() if on is True and name != "root"]
    return f"{utils.compiler_version(cxx)}; sandbox {features['level']}: {', '.join(enabled) or 'see docs/judge.md'}"


def check_judge(ctx: Context) -> str:
    """The shipped reference must pass every test and the shipped wrong solution must not: both sides of the reward."""
    config = utils.JudgeConfig(cxx=ctx.args.cxx)
    problem = data.load_problems("sample", "test")[0]
    name, tests = problem["id"].split("/", 1)[1], data.all_tests(problem)
    verdicts = {}
    for kind in ("solutions", "wrong"):
        result = utils.judge_program((data.DATA_DIR / "sample" / kind / f"{name}.cpp").read_text(), tests, config)
        verdicts[kind] = f"{result.verdict.value} {result.passed}/{result.total}"
        if kind == "solutions":
            check(result.verdict is utils.Verdict.OK, f"reference {name}.cpp judged {verdicts[kind]} {result.message}")
        else:
            check(result.verdict is not utils.Verdict.OK, f"wrong/{name}.cpp judged OK: the tests miss its bug")
    return f"{name}: reference {verdicts['solutions']}, wrong {verdicts['wrong']}"


def check_model(ctx: Context) -> str:
    import torch

    import modeling

    ctx.model, ctx.tokenizer = modeling.load_model(ctx.args.model, quant=False)
    ctx.ids = ctx.tokenizer(PROBE, return_tensors="pt").input_ids
    ctx.logits = probe_logits(ctx.model, ctx.ids)
    check(bool(torch.isfinite(ctx.logits).all()), "the full-precision model gives non-finite logits")
    size = sum(p.numel() for p in ctx.model.parameters()) / 1e6
    done = [f"full precision ({str(ctx.model.dtype).removeprefix('torch.')}, {ctx.model.device}, {size:.1f}M parameters)"]
    if not ctx.args.no_quant:
        ctx.nf4 = modeling.load_model(ctx.args.model, quant=True)[0]
        ctx.nf4_logits = probe_logits(ctx.nf4, ctx.ids)
        check(bool(torch.isfinite(ctx.nf4_logits).all()), "the 4-bit model gives non-finite logits")
        layers = sum(type(m).__name__ == "Linear4bit" for m in ctx.nf4.modules())
        check(layers > 0, "quant=True loaded no 4-bit layers")
        done.append(f"4-bit NF4 ({layers} Linear4bit layers)")
    return ", ".join(done)


def check_adapter(ctx: Context) -> str:
    """tie=all shares one v of u numbers over every module; v starts at 0, so the base model's outputs are unchanged."""
    import torch

    import tinylora

    u = ctx.args.u
    for label, base, before in (("full", ctx.model, ctx.logits), ("NF4", ctx.nf4, ctx.nf4_logits)):
        if base is None:
            continue
        adapted = tinylora.apply_tiny_lora(base, u=u, tie="all")
        count = tinylora.count_trainable(adapted)
        check(count == u, f"{label}: {count} trainable parameters, expected u = {u}")
        check(torch.equal(probe_logits(adapted, ctx.ids), before), f"{label}: v = 0 changed the logits")
        if label == "full":
            ctx.model = adapted
    ctx.nf4 = ctx.nf4_logits = None  # only the full-precision adapter goes on; free the memory
    return f"{u} trainable numbers for u={u}, tie=all; v=0 leaves the logits bit-identical"


def check_grpo(ctx: Context) -> str:
    """One real `python train_rl.py` step: generation, the judge as reward, the update and an atomic, verified
    checkpoint. It runs as a user runs it, in its own process; what the reward saw is read from the trainer's log."""
    import json
    import subprocess

    import tinylora
    import training

    args, out = ctx.args, ctx.work / "grpo"
    config = ROOT / "configs" / ("default.yaml" if args.gpu else "tiny_cpu.yaml")
    code = subprocess.run([
        sys.executable, str(ROOT / "train_rl.py"), str(args.u), "4", "--config", str(config), "--model", args.model,
        "--dataset", args.dataset, "--max_steps", "1", "--max_completion_length", str(args.max_completion_length),
        "--gradient_accumulation_steps", "1", "--output_dir", str(out), "--save_steps", "1",
        *(["--no_quant"] if args.no_quant else []),
    ]).returncode
    check(code == 0, f"train_rl.py exited with code {code}")
    problem = training.checkpoint_problem(out / "checkpoint-1")
    check(problem is None, f"checkpoint-1: {problem}")
    tinylora.verify_adapter_files(out / "final")
    log = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    step = next((entry for entry in log if "judge/compile_rate" in entry), None)
    check(step is not None, "the reward function was never called")
    rates = ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in step.items()
                      if k.split("/")[-1] in {v.value for v in utils.Verdict} and v)
    return f"1 step, verdict rates {rates}, mean reward {step['reward']:.2f}; checkpoint verified"


def check_save_load(ctx: Context) -> str:
    """A nonzero v must survive save_tiny_lora -> load_tiny_lora on a fresh base model exactly."""
    import torch

    import modeling
    import tinylora

    gen = torch.Generator().manual_seed(0)
    values = {k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in tinylora.tiny_lora_v(ctx.model).items()}
    tinylora.set_tiny_lora_v(ctx.model, values)
    trained = probe_logits(ctx.model, ctx.ids)
    check(not torch.equal(trained, ctx.logits), "a nonzero v did not change the logits")
    adapter_dir = tinylora.save_tiny_lora(ctx.model, ctx.work / "adapter")
    ctx.loaded = tinylora.load_tiny_lora(modeling.load_model(ctx.args.model, quant=False)[0], adapter_dir)
    check(torch.equal(probe_logits(ctx.loaded, ctx.ids), trained), "the reloaded adapter gives different logits")
    files = sorted(p.name for p in adapter_dir.iterdir())
    return f"{len(files)} files ({', '.join(files)}); identical logits after reload"


def check_evaluation(ctx: Context) -> str:
    import evaluation

    args = ctx.args
    problems = data.load_problems(args.dataset, "test", args.num_problems)
    settings = evaluation.GenerationSettings(max_new_tokens=args.max_completion_length, batch_size=len(problems))
    reward = evaluation.evaluation_reward(dataclasses.replace(evaluation.EVAL_JUDGE, cxx=args.cxx))
    _, summary = evaluation.evaluate(ctx.loaded, ctx.tokenizer, problems, settings, reward, progress=False)
    metrics = summary["metrics"]
    check(metrics["problems"] == len(problems), f"{len(summary['skipped'])} of {len(problems)} problems skipped")
    outcomes = ", ".join(f"{k} {n}" for k, n in metrics["counts"].items() if n)
    return f"{metrics['problems']} {args.dataset} test problems: pass@1 {metrics['pass@1']:.2f} ({outcomes})"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]
    needs: tuple[str, ...]
    hint: str


STAGES = (
    Stage("toolchain", check_toolchain, (), "install a C++17 compiler (apt-get install g++) or point --cxx at one"),
    Stage("judge", check_judge, ("toolchain",), "python -m pytest tests/test_utils.py -q; see docs/judge.md"),
    Stage("model", check_model, (), "--model takes 'tiny', a local model dir, or a hub id already in the HF cache "
          "(download it while online); --no_quant skips the 4-bit load if bitsandbytes is missing"),
    Stage("adapter", check_adapter, ("model",), "python -m pytest tests/test_tinylora.py -q"),
    Stage("grpo", check_grpo, ("toolchain", "model"), "rerun the step by hand for its whole log: python train_rl.py "
          "32 4 --max_steps 1 --output_dir /tmp/grpo_step (on CPU add --config configs/tiny_cpu.yaml)"),
    Stage("save_load", check_save_load, ("adapter",), "python -m pytest tests/test_tinylora.py -q -k save"),
    Stage("evaluation", check_evaluation, ("toolchain", "save_load"), "python test.py --help: evaluate a few "
          "problems by hand; a missing dataset names its download command above"),
)


# ------------------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def captured(log: Path) -> Iterator[None]:
    """Send everything a stage writes to fds 1 and 2 (Python, C libraries, child processes) to `log`."""
    saved = {}
    with open(log, "ab") as f:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stream.flush()
            saved[fd] = os.dup(fd)
            os.dup2(f.fileno(), fd)
        try:
            yield
        finally:
            for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
                stream.flush()
                os.dup2(saved[fd], fd)
                os.close(saved[fd])


def log_tail(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").replace("\r", "\n").splitlines() if log.exists() else []
    return [line[:200] for line in lines if line.strip()][-LOG_TAIL:]


def run_stage(stage: Stage, ctx: Context) -> tuple[bool, str]:
    """(passed, detail): a failed check, an exception or a script's exit becomes a one-line reason."""
    log = ctx.work / f"{stage.name}.log"
    try:
        with captured(log):
            return True, stage.run(ctx)
    except Failed as err:
        return False, str(err)
    except errors.UsageError as err:  # what a script would print as its one "error: ..." line
        return False, f"error: {err}"
    except SystemExit as err:  # the scripts' cli_error: its "error: ..." line is the reason
        said = [line for line in log_tail(log) if line.startswith("error: ")]
        return False, said[-1] if said else f"exited with code {err.code}"
    except Exception as err:  # noqa: BLE001 - any crash is this stage's failure, and the next stages still run
        return False, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny",
                        help="hub id, local dir, FILE.gguf, or offline 'smollm2' / 'tiny' / 'tiny-coder'")
    parser.add_argument("--dataset", default="sample", help=f"{' | '.join(data.DATASETS)} | a problems .jsonl")
    parser.add_argument("--no_quant", action="store_true", help="skip the 4-bit NF4 load; train on the full base")
    parser.add_argument("--cxx", default=utils.JudgeConfig.cxx, help="C++ compiler the judge uses")
    parser.add_argument("--u", type=positive, default=32, help="TinyLoRA numbers per vector v")
    parser.add_argument("--num_problems", type=positive, default=3, help="test problems to evaluate")
    parser.add_argument("--max_completion_length", type=positive,
                        help="completion length cap, in tokens (default 32 on CPU, 512 on GPU)")
    arguments.add_retired_flags(parser)
    args = parser.parse_args(argv)
    if args.dataset not in data.DATASETS and not (args.dataset.endswith(".jsonl") and Path(args.dataset).is_file()):
        raise errors.UsageError(f"--dataset is one of {', '.join(data.DATASETS)} or an existing .jsonl file, "
                              f"not {args.dataset!r}")
    return args


def run_stages(ctx: Context) -> tuple[dict[str, str], list[str]]:
    """Every stage in order, one ✓/✗ line each (a stage whose prerequisite failed is skipped):
    ({stage: ok | failed | skipped}, the failures with their hints)."""
    status: dict[str, str] = {}
    failures: list[str] = []
    for stage in STAGES:
        missing = [name for name in stage.needs if status[name] != "ok"]
        if missing:
            status[stage.name] = "skipped"
            print(f"- {stage.name:<10} {'skipped':>7}  (needs {', '.join(missing)})", flush=True)
            continue
        if sys.stdout.isatty():
            print(f"… {stage.name}", end="\r", flush=True)
        began = time.monotonic()
        ok, detail = run_stage(stage, ctx)
        status[stage.name] = "ok" if ok else "failed"
        print(f"{'✓' if ok else '✗'} {stage.name:<10} {time.monotonic() - began:6.1f}s  {detail}", flush=True)
        if not ok:
            for line in log_tail(ctx.work / f"{stage.name}.log"):
                print(f"    | {line}")
            print(f"    hint: {stage.hint}", flush=True)
            failures.append(f"{stage.name}: {detail}\n    hint: {stage.hint}")
    return status, failures


@errors.script_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch  # after parsing: a typo should not wait for torch to import

    args.gpu = torch.cuda.is_available()
    args.max_completion_length = args.max_completion_length or (512 if args.gpu else 32)
    print(f"verify_pipeline: model={args.model} dataset={args.dataset} {'full precision' if args.no_quant else 'NF4'} "
          f"on {'GPU' if args.gpu else 'CPU'}, cxx={args.cxx}", flush=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="verify_pipeline-") as work:
        status, failures = run_stages(Context(args, Path(work)))
    passed = sum(s == "ok" for s in status.values())
    print(f"{passed}/{len(STAGES)} stages passed in {time.monotonic() - start:.1f}s")
    if failures:
        print("FAILED " + "\nFAILED ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
