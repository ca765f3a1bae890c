"""The SFT baseline: train the same TinyLoRA v on reference solutions with TRL's SFTTrainer.

    python train_sft.py --u 13 --max_samples 2000 --dataset code_contests --learning_rate 1e-4   # GPU, NF4 3B
    python train_sft.py --model tiny --no_quant --dataset sample --u 4 --max_steps 20 --learning_rate 1e-2

The paper's claim is that RL beats SFT at the same tiny budget; this is the SFT side of that comparison. The
adapter, its flags (--u --rank --tie --model --no_quant --dataset --max_samples ...) and the prompts are exactly
train_rl.py's; only the objective differs: the answer is the problem's reference solution as one ```cpp block
(code_contests `reference_solutions`, the shipped set's data/sample/solutions/), and the loss covers the answer
tokens only. Every TRL SFTConfig field is a flag and a YAML key (`--config FILE`). Evaluate the saved adapter
with the same `python test.py --checkpoint_path OUT/final` (it is asked with the prompt it was trained on).
"""
from __future__ import annotations

from pathlib import Path

import data
import sft
import training


@data.script_main
def main(argv: list[str] | None = None) -> Path:
    ours, config = sft.parse_sft_args(argv)
    prompt = data.PromptSettings().overridden(ours)
    device = training.configure_device(config)
    model, tokenizer = training.load_adapted_model(ours, config.seed, device)
    problems = training.load_training_problems(ours, config.seed, ours.max_samples)
    examples = sft.build_examples(problems, tokenizer, config.max_length, ours.solutions_per_problem, prompt)
    probe = examples[:ours.loss_samples]
    loss_before = sft.sft_loss(model, probe, config.per_device_eval_batch_size)
    trainer = sft.sft_trainer(model, tokenizer, config, examples)
    trainer.train()
    loss_after = sft.sft_loss(trainer.model, probe, config.per_device_eval_batch_size)
    print(f"SFT loss on {len(probe)} training examples: {loss_before:.4f} -> {loss_after:.4f}")
    info = training.run_info(ours, config, prompt, sft.examples_hash(examples), method="sft",
                             sft_loss={"before": loss_before, "after": loss_after})
    return training.save_final(trainer, info)


if __name__ == "__main__":
    main()
