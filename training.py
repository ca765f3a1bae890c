"""Training TinyLoRA's few numbers: the wiring train_rl.py (GRPO) and train_sft.py (SFT) share.

Flags are dataclasses parsed by TRL's parser (every GRPOConfig/SFTConfig field is a flag and a YAML key); the
settings that decide what an adapter is (the prompt, the reward) are built once from them and saved with every
checkpoint and adapter, so evaluating it later needs no memory of the command line. Checkpoints are written
atomically with a sha256 manifest; `--resume` continues from the newest complete one.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import arguments
import data
import errors
import paths
import records
import sampling
import scoring
import utils

MANIFEST = "manifest.json"


def sampler_settings(run: arguments.RunArguments, device: str) -> sampling.SamplerSettings:
    """The weights completions are drawn with: --sampler, else the device's fast default."""
    return sampling.SamplerSettings(run.sampler or sampling.default_weights(device))


def code_reward(reward: arguments.RewardArguments) -> utils.CodeReward:
    """The training reward from the flags (an unknown scheme raises errors.UsageError)."""
    try:
        return utils.CodeReward(utils.JudgeConfig(max_tests=reward.max_tests, test_selection=reward.test_selection),
                                scheme=reward.reward_scheme, no_code_penalty=reward.no_code_penalty)
    except ValueError as err:
        raise errors.UsageError(str(err))


def set_checkpointing(trainer_args, enabled: bool, **kwargs) -> None:
    """Turn activation (gradient) checkpointing on or off after the config was built.

    transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` and resolves the old alias only
    in __post_init__: assigning the old name afterwards changes nothing (on CPU, TRL's default left checkpointing
    on, so every backward recomputed the whole forward). Set both names.
    """
    trainer_args.gradient_checkpointing = enabled
    trainer_args.gradient_checkpointing_kwargs = kwargs or None
    if hasattr(trainer_args, "activation_checkpointing"):
        trainer_args.activation_checkpointing = enabled
        trainer_args.activation_checkpointing_kwargs = kwargs or None


def set_bf16(trainer_args, enabled: bool) -> None:
    """Turn bf16 mixed precision on or off after the config was built.

    TRL's configs default to bf16=True, and transformers 5 turns that into `mixed_precision="bf16"` in
    __post_init__, which is what the Trainer's accelerator reads: assigning bf16=False afterwards left CPU training
    under bf16 autocast, whose matmuls have no fast kernel on most CPUs (a SmolLM2 GRPO backward ran in torch's
    reference GEMM, 30x slower than fp32 BLAS). Set the resolved field too.
    """
    trainer_args.bf16, trainer_args.fp16 = enabled, False
    if hasattr(trainer_args, "mixed_precision"):
        trainer_args.mixed_precision = "bf16" if enabled else "no"


def configure_device(trainer_args) -> str:
    """bf16 + gradient checkpointing on GPU; fp32 on CPU (bf16 autocast on CPU is slow and lossy)."""
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available() and not trainer_args.use_cpu:
        set_bf16(trainer_args, True)
        set_checkpointing(trainer_args, True, use_reentrant=False)
        return str(PartialState().device)
    trainer_args.use_cpu = True
    trainer_args.dataloader_pin_memory = False  # no accelerator to pin for: torch warns once per epoch otherwise
    set_bf16(trainer_args, False)
    set_checkpointing(trainer_args, False)  # TRL turns it on by default; on CPU memory is plentiful and time is not
    return "cpu"


# ------------------------------------------------------------------------------------------- the final adapter
def save_final(trainer, info: dict, export_lora: bool = False) -> Path:
    """The trained adapter in OUTPUT_DIR/final (atomically, on the main process), with `info` in its metadata;
    with `export_lora` also as the exact rank-r PEFT LoRA any LoRA runtime serves (OUTPUT_DIR/final_lora)."""
    import tinylora

    final = Path(trainer.args.output_dir) / "final"
    if trainer.args.should_save:
        tinylora.save_tiny_lora(trainer.model, final, extra_meta={**info, "global_step": trainer.state.global_step})
        print(f"adapter ({tinylora.count_trainable(trainer.model)} numbers) saved to {final}")
        if export_lora:
            lora = tinylora.export_lora(trainer.model, final.with_name("final_lora"))
            print(f"the same adapter as a standard PEFT LoRA (for vLLM --enable-lora, PeftModel) in {lora}")
    return final


# ------------------------------------------------------------------------------------------- checkpoints
def write_manifest(checkpoint: Path, info: dict) -> None:
    """Record every file's sha256 plus the run's config; written last, it marks the checkpoint complete."""
    import tinylora

    (checkpoint / MANIFEST).write_text(json.dumps({**info, "files": tinylora.file_hashes(checkpoint)}, indent=1))


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


def resume_checkpoint(output_dir: Path) -> Path:
    """The checkpoint `--resume` continues from, or a errors.UsageError when there is none."""
    found = latest_valid_checkpoint(output_dir)
    if found is None:
        raise errors.UsageError(f"--resume: no complete checkpoint in {output_dir}; drop --resume to start fresh")
    print(f"resuming from {found}")
    return found


class ManifestCheckpoints:
    """A transformers Trainer mixin (before the Trainer in the bases) whose checkpoints `--resume` can trust: each
    is written into a staging dir, given its manifest (`run_info` and every file's sha256), then renamed, so no
    reader sees half a checkpoint; then all but the newest `save_total_limit` go. GRPO and SFT runs share it."""

    run_info: dict  # set by the trainer class: the run's config, recorded in every manifest
    _staging: Path | None = None

    def _get_output_dir(self, trial):
        return str(self._staging) if self._staging else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        root = Path(self.args.output_dir)
        self._staging = root / ".staging"
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        if not self.args.should_save:
            return
        name = f"checkpoint-{self.state.global_step}"
        with paths.replaced_atomically(root / name) as tmp:
            (root / ".staging" / name).rename(tmp)
            write_manifest(tmp, {**self.run_info, "global_step": self.state.global_step})
        for old in checkpoints(root)[self.args.save_total_limit or 10**9:]:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- what a run shows
CURVES_FILE = "curves.png"  # reward and judge rates by step, drawn at the end


def _shown(logs: dict, key: str, spec: str) -> str:
    value = logs.get(key)
    return "-" if value is None else format(value, spec)


def step_line(step: int, max_steps: int, logs: dict) -> str:
    """One console line per training log instead of TRL's 40-key dict: reward mean ± std over the step's
    completions, the judge's full-pass / compile / no-code rates, mean completion length and seconds per step.
    Other logs (the end-of-training summary) print their numbers compactly on one line too."""
    if "reward" not in logs:
        shown = {k: v for k, v in logs.items() if k != "total_flos"}
        return f"step {step}/{max_steps}: " + ", ".join(
            f"{k} {format(v, '.4g') if isinstance(v, float) else v}" for k, v in shown.items())
    return (f"step {step}/{max_steps} | reward {_shown(logs, 'reward', '.3f')} ± {_shown(logs, 'reward_std', '.3f')} "
            f"| pass {_shown(logs, 'judge/full_pass_rate', '.0%')} compile {_shown(logs, 'judge/compile_rate', '.0%')} "
            f"no code {_shown(logs, 'judge/no_code_rate', '.0%')} | {_shown(logs, 'completions/mean_length', '.0f')} "
            f"tokens | {_shown(logs, 'step_time', '.1f')} s/step")


def run_log_callbacks(trainer) -> None:
    """Swap the Trainer's log printer (ProgressCallback's dict under the bar, or PrinterCallback's with
    --disable_tqdm) for `step_line`, and add metrics.jsonl and curves.png in the output folder (main process).
    `report_to` loggers are separate callbacks and still receive every metric."""
    from tqdm import tqdm
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    import plots

    class StepLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                tqdm.write(step_line(state.global_step, state.max_steps, logs))

    class StepLinesUnderBar(StepLines, ProgressCallback):
        """ProgressCallback's bar; StepLines' on_log comes first in the MRO and replaces the dict."""

    class RunLog(TrainerCallback):
        def __init__(self, output_dir: Path):
            self.output_dir, self.metrics = output_dir, output_dir / records.METRICS_FILE

        def on_train_begin(self, args, state, control, **kwargs):
            """A fresh run starts the file; a resumed one keeps what came before its checkpoint."""
            if state.is_world_process_zero:
                kept = [line for line in self.metrics.read_text().splitlines()
                        if json.loads(line)["step"] <= state.global_step] if self.metrics.exists() else []
                self.metrics.parent.mkdir(parents=True, exist_ok=True)
                self.metrics.write_text("".join(line + "\n" for line in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                records.append_metrics(self.output_dir, {"step": state.global_step, **logs})

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                drawn = plots.training_curves(state.log_history, self.output_dir / CURVES_FILE, title=args.output_dir)
                tqdm.write(f"metrics in {self.metrics}" + (f", curves in {drawn}" if drawn else ""))

    under_bar = trainer.pop_callback(ProgressCallback) is not None
    trainer.pop_callback(PrinterCallback)
    trainer.add_callback(StepLinesUnderBar if under_bar else StepLines)
    trainer.add_callback(RunLog(Path(trainer.args.output_dir)))


def score_completion_positions_only() -> None:
    """Let TRL's fused LM head score only the completion tokens on CPU, as it already does on CUDA.

    TRL 1.x runs every scoring pass's LM head (`trl.trainer.utils.add_fused_lm_head`) over the positions whose label
    is not -100, packed together, but only where `_use_triton` says a Triton device: elsewhere it scores every
    position (prompt and padding too) and masks afterwards, so that static-shape compilers (Neuron) see one tile
    shape. On CPU nothing compiles, and scoring all positions put 8 × 485 rows instead of about 1,500 through a
    49,152-word head, three GEMMs each (forward, recompute, input gradient). The packed path is the one TRL runs on
    CUDA; only its guard is widened here, for the CPU and nowhere else.
    """
    from trl.kernels.chunked_logprob import _use_triton as triton_guard  # TRL's own guard, never replaced
    from trl.trainer import utils as trl_utils

    def packed_on_cpu(device) -> bool:
        return device.type == "cpu" or triton_guard(device)

    trl_utils._use_triton = packed_on_cpu  # a second call wraps TRL's guard again, not this wrapper


def make_trainer_class():
    """GRPOTrainer with fp32 v, atomic manifest-checked checkpoints, and the run's validation and before/after
    comparison (built lazily: TRL and transformers' Trainer are slow to import)."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer
    from trl.extras.profiling import profiling_decorator

    import tinylora

    score_completion_positions_only()

    class ValidationCallback(TrainerCallback):
        """Every val_steps: the trainer's validation, logged with the step's metrics; the best adapter so far (by
        pass@1, then reward) saved to OUTPUT_DIR/best with the run's info and its validation metrics."""

        def __init__(self, trainer):
            self.trainer, self.best = trainer, None

        def on_step_end(self, args, state, control, **kwargs):
            validation = self.trainer.validation
            if state.global_step % validation.settings.val_steps or not state.is_world_process_zero:
                return
            model, output_dir = self.trainer.model, Path(args.output_dir)
            metrics = validation.metrics(model, self.trainer.processing_class, args.per_device_eval_batch_size,
                                         args.world_size)
            print(f"validation @ step {state.global_step}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
            state.log_history.append({**metrics, "step": state.global_step})
            records.append_metrics(output_dir, {"step": state.global_step, **metrics})
            score = (metrics.get("val/pass@1", 0.0), metrics.get("val/avg_reward", 0.0))
            if self.best is None or score > self.best:
                self.best = score
                meta = {**self.trainer.run_info, "global_step": state.global_step, "validation": metrics}
                tinylora.save_tiny_lora(model, output_dir / "best", extra_meta=meta)

    class TinyLoraGRPOTrainer(ManifestCheckpoints, GRPOTrainer):
        def __init__(self, *args, run_info: dict, sampler: sampling.Sampler | None = None,
                     recompute_scoring: bool = False, validation: Validation | None = None,
                     comparison: Comparison | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.recompute_scoring = recompute_scoring
            tinylora.ensure_v_fp32(self.model)  # TRL casts trainable params of 4-bit models to bf16
            self.validation, self.comparison = validation, comparison
            if validation:
                self.add_callback(ValidationCallback(self))
            run_log_callbacks(self)
            self.run_info = run_info
            self.sampler = sampler or sampling.Sampler(sampling.SamplerSettings("exact"))

        def train(self, *args, **kwargs):
            """TRL's training, between the two samples of the comparison when there is one (each process samples
            before; the main process samples after and prints both side by side)."""
            before = self.comparison.sample(self, "before") if self.comparison else None
            result = super().train(*args, **kwargs)
            if before is not None and self.args.should_save:
                self.comparison.report(before, self.comparison.sample(self, "after"))
            return result

        def _generate_single_turn(self, *args, **kwargs):
            """TRL's generation, drawing from the sampler's model: with the int8 sampler, a copy with v folded in
            (rebuilt when v changed) that shares one prefill among a prompt's completions. TRL unwraps and calls
            `generate` on whatever `model_wrapped` is; the loss and every log-prob still use the trained model."""
            drawing = self.sampler.model_for(self.model)
            if drawing is self.model:
                return super()._generate_single_turn(*args, **kwargs)
            trained, self.model_wrapped = self.model_wrapped, drawing
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                self.model_wrapped = trained

        @profiling_decorator  # as TRL's own: its timing (the run's logs) keeps seeing the scoring pass
        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False, **media):
            """TRL's scoring pass, computed with one forward per distinct prompt and no padding (scoring.py) for
            text-only batches whose prompts repeat on an unwrapped model; anything else goes through TRL's own pass
            (a DDP-wrapped model expects one forward per backward, and grouped scoring makes two per prompt)."""
            unwrapped = self.accelerator.unwrap_model(model) is model
            if unwrapped and not compute_aux_loss and all(v is None for v in media.values()):
                with self.accelerator.autocast():
                    grouped = scoring.grouped_logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy,
                                                    recompute=self.recompute_scoring)
                if grouped is not None:
                    return (*grouped, None)
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **media)

    return TinyLoraGRPOTrainer


def grpo_trainer(model, tokenizer, reward: utils.CodeReward, grpo, dataset, info: dict,
                 sampler: sampling.SamplerSettings = sampling.SamplerSettings("exact"), recompute_scoring: bool = False,
                 trainer_class: type | None = None, validation: Validation | None = None,
                 comparison: Comparison | None = None):
    """The GRPO trainer, make_trainer_class()'s or `trainer_class` (a subclass of it); batch sizes that
    num_generations does not divide raise errors.UsageError with TRL's line."""
    import tinylora

    # TRL's generation reads `model.is_gradient_checkpointing` at every step (trl/models/utils.py), a property
    # transformers 5 deprecated with a FutureWarning the user cannot act on: that one warning is ignored for the run.
    warnings.filterwarnings("ignore", message=tinylora.CHECKPOINTING_DEPRECATION, category=FutureWarning,
                            module=r"transformers\.modeling_utils")
    try:
        return (trainer_class or make_trainer_class())(
            model=model, reward_funcs=[reward], args=grpo, train_dataset=dataset, processing_class=tokenizer,
            run_info=info, sampler=sampling.Sampler(sampler), recompute_scoring=recompute_scoring,
            validation=validation, comparison=comparison)
    except ValueError as err:
        raise errors.UsageError(str(err).splitlines()[0])


# ------------------------------------------------------------------------------------ validation and comparison
def generation_processes(model, world_size: int) -> int:
    """Validation and the comparison generate as test.py does (one forked process per core on CPU), except in a
    run of several training processes, which already share the machine."""
    import modeling

    return modeling.generation_processes(None, model.device) if world_size == 1 else 1


class Validation(NamedTuple):
    """Validation during training (--do_validate): every `settings.val_steps` steps, greedy pass@1 on held-out
    `problems` asked with the training prompt, through validate.py's code path and reward. The trainer keeps the
    best adapter in OUTPUT_DIR/best."""

    problems: list[dict]
    settings: arguments.ValidationArguments
    prompt: data.PromptSettings
    sampler: sampling.SamplerSettings

    def metrics(self, model, tokenizer, batch_size: int, world_size: int = 1) -> dict:
        """{"val/pass@1", "val/compile_rate", "val/avg_reward"} of `model` now."""
        import evaluation

        summary = evaluation.run_validation(model, tokenizer, self.problems,
                                            max_new_tokens=self.settings.val_max_completion_length,
                                            batch_size=batch_size, prompt=self.prompt, sampler=self.sampler.weights,
                                            processes=generation_processes(model, world_size))
        return {f"val/{k}": summary[k] for k in ("pass@1", "compile_rate", "avg_reward") if k in summary}


class Comparison(NamedTuple):
    """--compare_before_after: `problems` sampled as GRPO samples them (same prompt, temperature, length) before the
    first step and after the last, scored as evaluation.py scores (seed scheme, unscaled: comparable with test.py) on
    the training reward's judge and tests for training problems, on all tests for held-out ones (--compare_split
    test); each side written to OUTPUT_DIR/eval_<label>, and the paired comparison printed."""

    problems: list[dict]
    run: arguments.RunArguments
    prompt: data.PromptSettings
    reward: utils.CodeReward
    sampler: sampling.SamplerSettings

    def sample(self, trainer, label: str) -> dict:
        """The summary of the trainer's model on the problems now."""
        import evaluation

        grpo = trainer.args
        settings = evaluation.GenerationSettings(
            max_new_tokens=grpo.max_completion_length, temperature=grpo.temperature, n=self.run.n,
            batch_size=max(grpo.per_device_train_batch_size, self.run.n), seed=grpo.seed, sampler=self.sampler.weights)
        judge = (dataclasses.replace(self.reward.judge, binary=False) if self.run.compare_split == "train"
                 else evaluation.EVAL_JUDGE)
        samples, summary = evaluation.evaluate(trainer.model, trainer.processing_class, self.problems, settings,
                                               evaluation.evaluation_reward(judge), prompt=self.prompt,
                                               processes=generation_processes(trainer.model, grpo.world_size))
        summary["label"] = label
        evaluation.write_outputs(Path(grpo.output_dir) / f"eval_{label}", samples, summary)
        return summary

    @staticmethod
    def report(before: dict, after: dict) -> None:
        import evaluation

        print(evaluation.format_comparison(before, after, evaluation.compare_runs(before, after)))


# ------------------------------------------------------------------------------------------------ the pipeline
class GrpoRun(NamedTuple):
    """What setting up hands to training: the trainer (its run_info, validation and comparison included) and the
    checkpoint --resume continues from."""

    trainer: object  # make_trainer_class()'s trainer, or the subclass prepare_grpo was given
    resume_from: Path | None


def prepare_grpo(flags: arguments.GrpoFlags, trainer_class: type | None = None) -> GrpoRun:
    """Everything before the first step: device, reward, the base with a fresh adapter, the GRPO rows, the problems
    validation and the comparison sample, and the trainer. `trainer_class`, a subclass of make_trainer_class()'s,
    lets bench/bench_step.py time the very trainer train_rl.py runs."""
    import modeling

    grpo, run, chosen = flags.grpo, flags.run, flags.data
    device = configure_device(grpo)
    sampler, reward = sampler_settings(run, device), code_reward(flags.reward)
    resume_from = resume_checkpoint(Path(grpo.output_dir)) if run.resume else None
    model, tokenizer, loaded = modeling.load_adapted_model(flags.model.model, not flags.model.no_quant, flags.adapter,
                                                           seed=grpo.seed, device=device)
    print(modeling.describe_loaded(loaded, device))
    prompt = data.PromptSettings().overridden(flags.prompt)
    problems = data.training_problems(chosen.dataset, chosen.num_problems, flags.rollout.problem_ids, grpo.seed)
    rows = data.grpo_rows(problems, prompt, tokenizer, flags.rollout.max_prompt_length, reward.columns)
    print(f"data: {len(rows.problems)} training problems "
          f"({rows.too_long} dropped: prompt over {flags.rollout.max_prompt_length} tokens)")
    validation = comparison = None
    if flags.validation.do_validate:
        validation = Validation(data.load_problems(chosen.dataset, data.validation_split(chosen.dataset),
                                                   flags.validation.val_num_problems, grpo.seed),
                                flags.validation, prompt, sampler)
    if run.compare_before_after:
        held_out = run.compare_split == "test"
        compared = data.load_problems(chosen.dataset, "test", None, grpo.seed) if held_out else rows.problems
        comparison = Comparison(compared, run, prompt, reward, sampler)
    info = records.run_info(flags.concerns(), grpo, prompt, data.rows_fingerprint(rows.dataset))
    trainer = grpo_trainer(model, tokenizer, reward, grpo, rows.dataset, info, sampler, run.recompute_scoring,
                           trainer_class=trainer_class, validation=validation, comparison=comparison)
    return GrpoRun(trainer, resume_from)


def run_grpo(flags: arguments.GrpoFlags) -> Path:
    """train_rl.py's whole run: set up, train (between the before and after samples of --compare_before_after),
    save the final adapter."""
    prepared = prepare_grpo(flags)
    prepared.trainer.train(resume_from_checkpoint=str(prepared.resume_from) if prepared.resume_from else None)
    return save_final(prepared.trainer, prepared.trainer.run_info, export_lora=flags.run.export_lora)
