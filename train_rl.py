"""Train TinyLoRA's few numbers with GRPO on a reward that compiles and runs the model's C++.

    python train_rl.py 32 2000 --dataset deepcoder                   # GPU, Qwen2.5-Coder-3B-Instruct in NF4
    python train_rl.py 32 20 --config configs/tiny_cpu.yaml          # offline, CPU, embedded tiny model
    accelerate launch train_rl.py 32 2000 --dataset code_contests     # data parallel over several GPUs

Positional U and MAX_SAMPLES keep the seed project's form; every TRL GRPOConfig field is a flag and a YAML key
(`--config FILE`; default configs/default.yaml, or configs/tiny_cpu.yaml where no GPU is found; explicit
flags win). Checkpoints are atomic and verified;
`--resume` continues from the newest complete one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"  # the GPU recipe
CPU_CONFIG = ROOT / "configs" / "tiny_cpu.yaml"  # the default where no GPU is found: short, offline-sized runs
MANIFEST = "manifest.json"
logger = logging.getLogger("train_rl")


@dataclass
class TinyLoraArguments:
    """Our own knobs; everything else is TRL's GRPOConfig."""

    u: int = field(default=32, metadata={"help": "numbers in each trainable vector v (positional U)"})
    max_samples: int = field(default=2000, metadata={"help": "training problems to sample (positional MAX_SAMPLES)"})
    rank: int = field(default=2, metadata={"help": "SVD rank r of the frozen factors"})
    tie: str = field(default="all", metadata={"help": "v sharing: all | layer | structured | module | groups:G"})
    model: str = field(default="Qwen/Qwen2.5-Coder-3B-Instruct",
                       metadata={"help": "hub id, local dir, FILE.gguf, or offline 'smollm2' / 'tiny' / 'tiny-coder'"})
    no_quant: bool = field(default=False, metadata={"help": "bf16 base instead of NF4 4-bit"})
    dataset: str = field(default="code_contests", metadata={"help": "code_contests | deepcoder | sample"})
    train_data: str | None = field(default=None, metadata={"help": "a problems .jsonl instead of --dataset"})
    show_examples: bool = field(default=False, metadata={"help": "put the public tests in the prompt"})
    system_prompt: str | None = field(default=None, metadata={"help": "override data.DEFAULT_SYSTEM_PROMPT"})
    instruction: str | None = field(default=None, metadata={"help": "override data.DEFAULT_INSTRUCTION"})
    max_prompt_length: int = field(default=1024, metadata={"help": "prompts longer than this (tokens) are dropped"})
    max_tests: int = field(default=10, metadata={"help": "tests judged per completion"})
    test_selection: str = field(default="first", metadata={"help": "first | longest tests when capping"})
    reward_scheme: str = field(default="seed", metadata={"help": "seed (partial credit) | binary"})
    no_code_penalty: float = field(default=0.0, metadata={"help": "reward for a completion with no code"})
    do_validate: bool = field(default=False, metadata={"help": "greedy validation every --val_steps"})
    val_steps: int = field(default=100, metadata={"help": "steps between validations"})
    val_samples: int = field(default=10, metadata={"help": "held-out problems per validation"})
    val_max_new_tokens: int = field(default=1024, metadata={"help": "generation budget during validation"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest complete checkpoint"})
    problem_ids: str | None = field(default=None, metadata={"help": "train only on these problem ids (comma list)"})
    compare_before_after: bool = field(
        default=False, metadata={"help": "sample the training problems before and after training and compare"}
    )
    eval_samples: int = field(default=16, metadata={"help": "samples per problem for --compare_before_after"})


def split_positionals(argv: list[str], default_config: Path | None = None) -> list[str]:
    """`32 2000 --flags` -> `--u 32 --max_samples 2000 --flags`; adds the default config unless one is named
    (configs/default.yaml with a GPU, configs/tiny_cpu.yaml without)."""
    import torch

    names, rest = ["--u", "--max_samples"], list(argv)
    flags: list[str] = []
    while rest and names and not rest[0].startswith("-"):
        flags += [names.pop(0), rest.pop(0)]
    if "--config" not in rest and not any(a in ("-h", "--help") for a in rest):
        flags += ["--config", str(default_config or (DEFAULT_CONFIG if torch.cuda.is_available() else CPU_CONFIG))]
    return flags + rest


def parse_args(argv: list[str] | None = None):
    """(TinyLoraArguments, GRPOConfig) from flags and YAML; contradictions exit 2 with one line."""
    from trl import GRPOConfig, TrlParser

    from data import cli_error

    parser = TrlParser((TinyLoraArguments, GRPOConfig), prog="train_rl.py", usage="train_rl.py [U] [MAX_SAMPLES] [flags]")
    argv = split_positionals(sys.argv[1:] if argv is None else argv)
    config_path = argv[argv.index("--config") + 1] if "--config" in argv else None
    if config_path and not Path(config_path).exists():
        cli_error(f"config file {config_path} not found")
    try:
        ours, grpo = parser.parse_args_and_config(argv)
    except ValueError as err:  # TRL/transformers validate their own fields
        cli_error(str(err).splitlines()[0])
    if ours.u < 1 or ours.max_samples < 1 or ours.rank < 1:
        cli_error("U, MAX_SAMPLES and --rank must be positive integers")
    if ours.do_validate and (ours.val_samples < 1 or ours.val_steps < 1):
        cli_error("--do_validate needs --val_samples >= 1 and --val_steps >= 1")
    if ours.do_validate and ours.train_data:
        cli_error("--do_validate with --train_data: validation needs a named --dataset to hold problems out of")
    if ours.reward_scheme not in ("seed", "binary") or ours.test_selection not in ("first", "longest"):
        cli_error("--reward_scheme is seed|binary and --test_selection is first|longest")
    return ours, grpo


# ------------------------------------------------------------------------------------------------- the data
def build_dataset(ours: TinyLoraArguments, tokenizer, seed: int):
    """Problems as GRPO rows: the chat prompt plus the test columns the reward function needs."""
    from datasets import Dataset

    import data
    import utils

    problems = data.load_problems(ours.train_data or ours.dataset, "train", None if ours.problem_ids else ours.max_samples, seed)
    if ours.problem_ids:
        wanted = ours.problem_ids.split(",")
        missing = sorted(set(wanted) - {p["id"] for p in problems})
        if missing:
            data.cli_error(f"--problem_ids not in the training split: {', '.join(missing)}")
        problems = [p for p in problems if p["id"] in wanted][: ours.max_samples]
    rows, too_long = [], 0
    for problem in problems:
        messages = data.build_messages(problem, **prompt_kwargs(ours))
        if len(data.render_prompt(messages, tokenizer)[1]) > ours.max_prompt_length:
            too_long += 1
            continue
        tests = utils.select_tests(data.all_tests(problem), ours.max_tests, ours.test_selection)
        if tests:
            rows.append({"prompt": messages, "tests": tests, "id": problem["id"],
                         "source": problem.get("source", ""), "difficulty": problem.get("difficulty", "")})
    print(f"data: {len(rows)} training problems ({too_long} dropped: prompt over {ours.max_prompt_length} tokens)")
    if not rows:
        data.cli_error("no training problems left; raise --max_prompt_length or check the dataset")
    kept = {row["id"] for row in rows}
    return Dataset.from_list(rows), [p for p in problems if p["id"] in kept]


def prompt_kwargs(args) -> dict:
    """build_messages keyword arguments from the prompt flags (unset overrides keep data.py's defaults)."""
    overrides = {k: getattr(args, k) for k in ("system_prompt", "instruction") if getattr(args, k, None) is not None}
    return {"show_examples": args.show_examples, **overrides}


def data_hash(rows) -> str:
    """Fingerprint of exactly what was trained on (ids, prompts, tests), for the checkpoint manifest."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["id"], row["prompt"], row["tests"]], sort_keys=True).encode())
    return digest.hexdigest()


def checked_reward(prompts, completions, tests=None, **kwargs) -> list[float]:
    """utils.code_reward_func, refusing to run when the test columns were dropped (seed bug: reward 0, no error)."""
    import utils

    if tests is None or len(tests) != len(completions) or not all(tests):
        raise RuntimeError("the reward function did not receive the `tests` column; keep remove_unused_columns=False")
    return utils.code_reward_func(prompts, completions, tests, **kwargs)


checked_reward.__name__ = "code_reward"


# ------------------------------------------------------------------------------------------- checkpoints
def write_manifest(checkpoint: Path, run_info: dict) -> None:
    """Record every file's sha256 plus the run's config; written last, it marks the checkpoint complete."""
    import tinylora

    (checkpoint / MANIFEST).write_text(json.dumps({**run_info, "files": tinylora.file_hashes(checkpoint)}, indent=1))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (None when every file matches its manifest)."""
    import tinylora

    manifest = checkpoint / MANIFEST
    if not manifest.exists():
        return "no manifest (incomplete)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable manifest"
    damaged = tinylora.damaged_file(checkpoint, files)
    return f"{damaged} is missing or corrupted" if damaged else None


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N directories, newest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def latest_valid_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest; broken ones are skipped with a warning."""
    for checkpoint in checkpoints(output_dir):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        warnings.warn(f"skipping {checkpoint}: {problem}")
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def make_trainer_class():
    """GRPOTrainer with fp32 v and atomic, manifest-checked checkpoints (imported lazily: TRL is slow to import)."""
    from trl import GRPOTrainer

    import tinylora

    class TinyLoraGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, run_info: dict, **kwargs):
            super().__init__(*args, **kwargs)
            tinylora.ensure_v_fp32(self.model)  # TRL casts trainable params of 4-bit models to bf16
            self.run_info = run_info
            self._staging: Path | None = None

        def _get_output_dir(self, trial):
            return str(self._staging) if self._staging else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            """Write into a staging dir, add the manifest, then rename: no reader ever sees half a checkpoint."""
            root = Path(self.args.output_dir)
            self._staging = root / ".staging"
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = None
            if not self.args.should_save:
                return
            name = f"checkpoint-{self.state.global_step}"
            write_manifest(root / ".staging" / name, {**self.run_info, "global_step": self.state.global_step})
            if (root / name).exists():
                shutil.rmtree(root / name)
            os.replace(root / ".staging" / name, root / name)
            for old in checkpoints(root)[self.args.save_total_limit or 10**9:]:
                shutil.rmtree(old, ignore_errors=True)

    return TinyLoraGRPOTrainer


# ------------------------------------------------------------------------------------------------ validation
def make_validation_callback(tokenizer, val_problems: list[dict], ours: TinyLoraArguments, output_dir: Path, run_info: dict):
    """Every val_steps: greedy pass@1 on held-out problems through validate.py's code path; keep best/."""
    from transformers import TrainerCallback

    import evaluation
    import tinylora

    class ValidationCallback(TrainerCallback):
        best: tuple[float, float] | None = None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % ours.val_steps or not state.is_world_process_zero:
                return
            summary = evaluation.run_validation(
                model, tokenizer, val_problems, max_new_tokens=ours.val_max_new_tokens,
                batch_size=args.per_device_eval_batch_size, show_examples=ours.show_examples,
            )
            metrics = {f"val/{k}": summary[k] for k in ("pass@1", "compile_rate", "avg_reward") if k in summary}
            print(f"validation @ step {state.global_step}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
            state.log_history.append({**metrics, "step": state.global_step})
            score = (summary.get("pass@1", 0.0), summary.get("avg_reward", 0.0))
            if self.best is None or score > self.best:
                self.best = score
                meta = {**run_info, "global_step": state.global_step, "validation": metrics}
                tinylora.save_tiny_lora(model, output_dir / "best", extra_meta=meta)

    return ValidationCallback()


def validation_problems(ours: TinyLoraArguments, seed: int) -> list[dict]:
    """Held-out problems of the training dataset, on validate.py's split (valid where it exists, else test)."""
    import data
    import validate

    return data.load_problems(ours.dataset, validate.validation_split(ours.dataset), ours.val_samples, seed)


def sample_training_problems(model, tokenizer, problems: list[dict], ours: TinyLoraArguments, grpo, label: str) -> dict:
    """Sample the training problems as GRPO does (same temperature and length), judged by evaluation.py."""
    import evaluation

    settings = evaluation.GenerationSettings(
        max_new_tokens=grpo.max_completion_length, temperature=grpo.temperature, n=ours.eval_samples,
        batch_size=max(grpo.per_device_train_batch_size, ours.eval_samples), seed=grpo.seed,
        show_examples=ours.show_examples,
    )
    judge = dataclasses.replace(evaluation.EVAL_JUDGE, max_tests=ours.max_tests, test_selection=ours.test_selection)
    samples, summary = evaluation.evaluate(model, tokenizer, problems, settings, judge)
    summary["label"] = label
    evaluation.write_outputs(Path(grpo.output_dir) / f"eval_{label}", samples, summary)
    return summary


def print_before_after(before: dict, after: dict) -> None:
    import evaluation

    print(evaluation.format_comparison(before, after, evaluation.compare_runs(before, after)))


# -------------------------------------------------------------------------------------------------------- main
def set_checkpointing(grpo, enabled: bool, **kwargs) -> None:
    """Turn activation (gradient) checkpointing on or off after the config was built.

    transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` and resolves the old alias only
    in __post_init__: assigning the old name afterwards changes nothing (on CPU, TRL's default left checkpointing
    on, so every backward recomputed the whole forward). Set both names.
    """
    grpo.gradient_checkpointing = enabled
    grpo.gradient_checkpointing_kwargs = kwargs or None
    if hasattr(grpo, "activation_checkpointing"):
        grpo.activation_checkpointing = enabled
        grpo.activation_checkpointing_kwargs = kwargs or None


def configure_device(grpo) -> str:
    """bf16 + gradient checkpointing on GPU; fp32 on CPU (bf16 autocast on CPU is slow and lossy)."""
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available() and not grpo.use_cpu:
        grpo.bf16 = True
        set_checkpointing(grpo, True, use_reentrant=False)
        return str(PartialState().device)
    grpo.use_cpu, grpo.bf16, grpo.fp16 = True, False, False
    set_checkpointing(grpo, False)  # TRL turns it on by default; on CPU memory is plentiful and time is not
    return "cpu"


def main(argv: list[str] | None = None) -> Path:
    ours, grpo = parse_args(argv)
    import data
    import modeling
    import tinylora
    import utils

    device = configure_device(grpo)
    output_dir = Path(grpo.output_dir)
    resume_from = None
    if ours.resume:
        resume_from = latest_valid_checkpoint(output_dir)
        if resume_from is None:
            data.cli_error(f"--resume: no complete checkpoint in {output_dir}; drop --resume to start fresh")
        print(f"resuming from {resume_from}")
    try:
        model, tokenizer = modeling.load_model(ours.model, quant=not ours.no_quant, device=device)
        model = tinylora.apply_tiny_lora(model, u=ours.u, rank=ours.rank, seed=grpo.seed, tie=ours.tie)
        dataset, problems = build_dataset(ours, tokenizer, grpo.seed)
        val_problems = validation_problems(ours, grpo.seed) if ours.do_validate else []
    except (tinylora.TinyLoraError, data.DataMissingError, OSError) as err:
        data.cli_error(str(err).splitlines()[0])
    expected = ours.u * len(tinylora.tiny_lora_v(model))
    trainable = tinylora.count_trainable(model)
    assert trainable == expected, f"{trainable} trainable parameters, expected {expected}"
    print(f"TinyLoRA: {trainable} trainable parameters (u={ours.u}, tie={ours.tie}, rank={ours.rank}) "
          f"on {ours.model} ({'bf16/fp32' if ours.no_quant else 'NF4'}, {device})")
    utils.set_reward_config(
        utils.JudgeConfig(max_tests=ours.max_tests, test_selection=ours.test_selection),
        scheme=ours.reward_scheme, no_code_penalty=ours.no_code_penalty,
    )
    run_info = {"config": {**dataclasses.asdict(ours), "grpo": grpo.to_dict()}, "commit": git_commit(),
                "seeds": {"seed": grpo.seed, "projection_seed": grpo.seed}, "data_hash": data_hash(dataset)}
    callbacks = [make_validation_callback(tokenizer, val_problems, ours, output_dir, run_info)] if val_problems else []
    trainer_class = make_trainer_class()
    try:
        trainer = trainer_class(model=model, reward_funcs=[checked_reward], args=grpo, train_dataset=dataset,
                                processing_class=tokenizer, callbacks=callbacks, run_info=run_info)
    except ValueError as err:  # e.g. batch sizes that num_generations does not divide
        data.cli_error(str(err).splitlines()[0])
    before = sample_training_problems(model, tokenizer, problems, ours, grpo, "before") if ours.compare_before_after else None
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if before is not None and trainer.args.should_save:
        print_before_after(before, sample_training_problems(trainer.model, tokenizer, problems, ours, grpo, "after"))
    final = output_dir / "final"
    if trainer.args.should_save:
        tinylora.save_tiny_lora(trainer.model, final, extra_meta={**run_info, "global_step": trainer.state.global_step})
        print(f"adapter ({trainable} numbers) saved to {final}")
    return final


if __name__ == "__main__":
    main()
