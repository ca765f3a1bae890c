"""The SFT baseline: train the same TinyLoRA v on reference solutions with TRL's SFTTrainer.

    python train_sft.py --u 13 --num_problems 2000 --dataset code_contests --learning_rate 1e-4   # GPU, NF4 3B
    python train_sft.py --model tiny --no_quant --dataset sample --u 4 --max_steps 20 --learning_rate 1e-2

The paper's claim is that RL beats SFT at the same tiny budget; this is the SFT side of that comparison. The
adapter, its flags (--u --rank --tie --model --no_quant --dataset --num_problems ...) and the prompts are exactly
train_rl.py's; only the objective differs: the answer is the problem's reference solution as one ```cpp block
(code_contests `reference_solutions`, the shipped set's data/sample/solutions/), and the loss covers the answer
tokens only. Every TRL SFTConfig field is a flag and a YAML key (`--config FILE`). Checkpoints carry
train_rl.py's manifests, so a stopped run continues with `--resume`. Evaluate the saved adapter with the same
`python test.py --checkpoint_path OUT/final` (it is asked with the prompt it was trained on).
"""
from __future__ import annotations

import sys
from pathlib import Path

import arguments
import data
import errors


@errors.script_main
def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if arguments.wants_help(argv):  # without importing torch and TRL: under 2 s
        arguments.exit_with_help(arguments.SFT_CONCERNS, "train_sft.py", "train_sft.py [flags]", "SFTConfig", __doc__)
    flags = arguments.parse_sft_args(argv)
    import modeling
    import records
    import sft
    import training

    config, own = flags.config, flags.sft
    prompt = data.PromptSettings().overridden(flags.prompt)
    device = training.configure_device(config)
    resume_from = training.resume_checkpoint(Path(config.output_dir)) if own.resume else None
    model, tokenizer, loaded = modeling.load_adapted_model(flags.model.model, not flags.model.no_quant, flags.adapter,
                                                           seed=config.seed, device=device)
    print(modeling.describe_loaded(loaded, device))
    problems = data.load_problems(flags.data.dataset, "train", flags.data.num_problems, config.seed)
    examples = sft.build_examples(problems, tokenizer, config.max_length, own.solutions_per_problem, prompt)
    probe = examples[:own.loss_samples]
    loss_before = sft.sft_loss(model, probe, config.per_device_eval_batch_size)  # v = 0, resumed or not
    info = records.run_info(flags.concerns(), config, prompt, sft.examples_hash(examples), method="sft")
    trainer = sft.sft_trainer(model, tokenizer, config, examples, info)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    loss_after = sft.sft_loss(trainer.model, probe, config.per_device_eval_batch_size)
    print(f"SFT loss on {len(probe)} training examples: {loss_before:.4f} -> {loss_after:.4f}")
    return training.save_final(trainer, {**info, "sft_loss": {"before": loss_before, "after": loss_after}})


if __name__ == "__main__":
    main()
