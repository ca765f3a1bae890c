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
The pipeline is training.run_grpo: set up (prepare_grpo), train, save. Validation (--do_validate) and the
before/after samples (--compare_before_after) belong to the trainer, around and between its steps.
"""
from __future__ import annotations

import sys
from pathlib import Path

import arguments
import errors


@errors.script_main
def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if arguments.wants_help(argv):  # without importing torch and TRL: under 2 s
        arguments.exit_with_help(arguments.GRPO_CONCERNS, "train_rl.py", "train_rl.py [U] [MAX_SAMPLES] [flags]",
                                 "GRPOConfig", __doc__)
    flags = arguments.parse_grpo_args(argv)
    import training

    return training.run_grpo(flags)


if __name__ == "__main__":
    main()
