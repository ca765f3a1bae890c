"""Train TinyLoRA's few numbers with GRPO on a reward that compiles and runs the model's C++.

    python train_rl.py 32 2000 --dataset deepcoder                   # GPU, Qwen2.5-Coder-3B-Instruct in NF4
    python train_rl.py 32 20 --config configs/tiny_cpu.yaml          # offline, CPU, embedded tiny model
    accelerate launch train_rl.py 32 2000 --dataset code_contests     # data parallel over several GPUs

Positional U and MAX_SAMPLES keep the seed project's form; every TRL GRPOConfig field is a flag and a YAML key
(`--config FILE`; default configs/default.yaml, or configs/tiny_cpu.yaml where no GPU is found; explicit
flags win). `--dataset` takes a dataset name or a problems .jsonl file. Checkpoints are atomic and verified;
`--resume` continues from the newest complete one. The adapter's metadata records the prompt it was trained
with (--system_prompt, --instruction, --show_examples), and test.py / validate.py ask it the same way.
Each logging step prints one line (reward, judge rates, length, s/step); every metric goes to OUTPUT_DIR/metrics.jsonl
(and --report_to), curves.png is drawn at the end, and --export_lora also writes the adapter as a standard PEFT
LoRA (OUTPUT_DIR/final_lora) for vLLM and other LoRA runtimes.
The wiring lives in training.py; this is the pipeline.
"""
from __future__ import annotations

import sys
from pathlib import Path

import arguments
import data


@data.script_main
def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if arguments.wants_help(argv):  # without importing torch and TRL: under 2 s
        arguments.exit_with_help(arguments.GRPO_CONCERNS, "train_rl.py", "train_rl.py [U] [MAX_SAMPLES] [flags]",
                                 "GRPOConfig", __doc__)
    import training

    flags = training.parse_grpo_args(argv)
    grpo, run = flags.grpo, flags.run
    prompt, reward = data.PromptSettings().overridden(flags.prompt), training.code_reward(flags.reward)
    device = training.configure_device(grpo)
    sampler = training.sampler_settings(run, device)
    resume_from = training.resume_checkpoint(Path(grpo.output_dir)) if run.resume else None
    model, tokenizer = training.load_adapted_model(flags.model, flags.adapter, grpo.seed, device)
    dataset, problems = training.grpo_rows(flags.data, flags.rollout, flags.reward, prompt, tokenizer, grpo.seed)
    info = training.run_info(flags.concerns(), grpo, prompt, training.data_hash(dataset))
    callbacks = []
    if flags.validation.do_validate:
        val_problems = training.validation_problems(flags.data.dataset, flags.validation, grpo.seed)
        callbacks.append(training.validation_callback(tokenizer, val_problems, flags.validation, prompt, info,
                                                       Path(grpo.output_dir), sampler))
    trainer = training.grpo_trainer(model, tokenizer, reward, grpo, dataset, callbacks, info, sampler,
                                     run.recompute_scoring)
    if run.compare_before_after:
        problems = training.comparison_problems(run, flags.data.dataset, problems, grpo.seed)
        before = training.sample_training_problems(model, tokenizer, problems, run, grpo, prompt, reward, "before",
                                                   sampler)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if run.compare_before_after and trainer.args.should_save:
        after = training.sample_training_problems(trainer.model, tokenizer, problems, run, grpo, prompt, reward,
                                                  "after", sampler)
        training.print_before_after(before, after)
    return training.save_final(trainer, info, export_lora=run.export_lora)


if __name__ == "__main__":
    main()
