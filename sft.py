"""The SFT side of "RL beats SFT at the same tiny budget": examples from reference solutions and their loss.

train_sft.py trains on these examples and loss_surface.py measures the same loss over a grid of v, so both see
the very same tokens. The adapter, its flags and the prompts are train_rl.py's (arguments.py's concerns);
only the objective differs: the answer is the problem's reference solution as one ```cpp block, and the loss
covers the answer tokens only.
"""
from __future__ import annotations

import hashlib
import json

import data
import errors

def tokenize_example(messages: list[dict], answer: str, tokenizer) -> dict:
    """input_ids of prompt + answer and labels that are -100 on the prompt: the loss covers the answer only.

    We tokenize here (not inside SFTTrainer) so that training and `sft_loss` (used again by loss_surface.py) see
    the very same tokens; SFTTrainer keeps a dataset that already has `labels` as it is.
    """
    prompt, prompt_ids = data.render_prompt(messages, tokenizer)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    assert full.startswith(prompt), "the chat template renders the prompt differently with an answer appended"
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


def build_examples(problems: list[dict], tokenizer, max_length: int | None, solutions_per_problem: int = 1,
                   prompt: data.PromptSettings = data.PromptSettings()) -> list[dict]:
    """SFT examples: each problem's prompt (as train_rl.py asks it) answered by up to `solutions_per_problem`
    reference solutions.

    Examples longer than `max_length` are dropped, not truncated: a cut-off program teaches unfinished code.
    """
    examples, no_reference, too_long = [], 0, 0
    for problem in problems:
        solutions = data.reference_solutions(problem)[:solutions_per_problem]
        no_reference += not solutions
        messages = prompt.messages(problem)
        for solution in solutions:
            example = tokenize_example(messages, data.answer_text(solution), tokenizer)
            if max_length is not None and len(example["input_ids"]) > max_length:
                too_long += 1
                continue
            examples.append({**example, "id": problem["id"]})
    print(f"data: {len(examples)} SFT examples from {len(problems)} problems ({no_reference} without a reference "
          f"solution, {too_long} over {max_length} tokens dropped)")
    if not examples:
        raise errors.UsageError("no SFT examples: no problem has a reference solution that fits (deepcoder has none; "
                              "code_contests needs download_code_contests.py --max_reference_solutions > 0)")
    return examples


def examples_hash(examples: list[dict]) -> str:
    """Fingerprint of exactly what was trained on (ids, tokens, labels), stored in the adapter's metadata."""
    return hashlib.sha256(json.dumps([[e["id"], e["input_ids"], e["labels"]] for e in examples]).encode()).hexdigest()


def sft_loss(model, examples: list[dict], batch_size: int = 8) -> float:
    """Mean cross-entropy per answer token over `examples` (token-weighted, as SFTTrainer's nll loss averages)."""
    import torch
    import torch.nn.functional as F

    from evaluation import eval_mode

    total, tokens = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)  # (batch, width), right-padded
            labels = torch.full((len(batch), width), -100)  # (batch, width)
            for row, e in enumerate(batch):
                ids[row, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
                labels[row, :len(e["labels"])] = torch.tensor(e["labels"])
            mask = (torch.arange(width)[None, :] < torch.tensor([len(e["input_ids"]) for e in batch])[:, None]).long()
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
            targets = labels[:, 1:].to(logits.device)  # (batch, width - 1): token t is predicted at t - 1
            total += F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum").item()
            tokens += int((targets != -100).sum())
    return total / max(tokens, 1)


def sft_trainer(model, tokenizer, sft, examples: list[dict], run_info: dict):
    """TRL's SFTTrainer on our pre-tokenized examples, with v kept in fp32 (TRL casts 4-bit models' to bf16), and
    what train_rl.py's trainer has besides: checkpoints `--resume` can trust (their manifests record `run_info`),
    one console line per step, and OUTPUT_DIR/metrics.jsonl."""
    from datasets import Dataset
    from trl import SFTTrainer

    import tinylora
    import training

    class TinyLoraSFTTrainer(training.ManifestCheckpoints, SFTTrainer):
        """TRL's SFTTrainer whose checkpoints carry train_rl.py's manifests."""

    dataset = Dataset.from_list([{k: e[k] for k in ("input_ids", "labels")} for e in examples])
    try:
        trainer = TinyLoraSFTTrainer(model=model, args=sft, train_dataset=dataset, processing_class=tokenizer)
    except ValueError as err:
        raise errors.UsageError(str(err).splitlines()[0])
    trainer.run_info = run_info
    tinylora.ensure_v_fp32(trainer.model)
    training.run_log_callbacks(trainer)
    return trainer
