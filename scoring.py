"""GRPO's scoring pass without repeated prompts or padding: the same log-probs, about a third less compute.

TRL scores a step's completions as one padded batch: each of a prompt's G completions carries its own copy of the
prompt through the forward and the backward, every row is padded to the longest prompt on the left and the longest
completion on the right, and a mask keeps the padding out. On a CPU, where that pass is most of a step, this does the
same arithmetic on fewer tokens: each distinct prompt goes through the model once, its keys and values (still in
v's autograd graph) are repeated for its G completions, and each group's completions are cut at the group's longest,
so no left padding and little right padding is computed. Right padding needs no mask: under causal attention a
real token never sees a later one. Gradients reach v through the prompt's keys and values as they do in TRL's pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import sampling


# Completions scored per recomputed unit. Measured on Qwen2.5-Coder-0.5B, 8 completions of ~450 tokens: a step
# peaked at 19.6 GB RSS keeping everything and 13.5 GB recomputing whole groups of 4 (too much for two runs on 23 GB).
RECOMPUTE_ROWS = 2


def layers_checkpointed(model) -> bool:
    """Whether transformers' activation checkpointing is on for a layer that would run now (training, with grad):
    such a layer drops the cache it is given (transformers.modeling_layers.GradientCheckpointingLayer), so a
    completion pass would not see its prompt."""
    return model.training and torch.is_grad_enabled() and any(
        getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _score_group(model, prompt: torch.Tensor, suffix: torch.Tensor, labels: torch.Tensor,
                 keyword: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies), each (g, suffix - 1), of one group: the prompt (p,) through the model once, its keys
    and values repeated for the g rows of `suffix` (g, 1 + longest): the prompt's last token, then the completions."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=prompt[None, :-1], use_cache=True, logits_to_keep=1, **{keyword: cache})
    cache.batch_repeat_interleave(len(suffix))  # (g, kv_heads, p - 1, head_dim) per layer, in v's graph
    positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + suffix.shape[1], device=suffix.device)
    out = model(input_ids=suffix, position_ids=positions.expand(len(suffix), -1), labels=labels, fused_lm_head=True,
                **{keyword: cache})
    return out.log_probs, out.entropy if out.entropy is not None else torch.zeros_like(out.log_probs)


def grouped_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                  compute_entropy: bool = False,
                  recompute: bool = False) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(log-probs, entropies or None), each (rows, logits_to_keep) and zero past a completion's end, as TRL's
    `_get_per_token_logps_and_entropies` returns them, computed group by group; None when the rows have no
    repeated prompt or the model's layers are checkpointed (the caller then runs TRL's own pass).

    `recompute` keeps only the outputs and recomputes the forward during the backward, RECOMPUTE_ROWS completions
    (with their prompt) at a time: the peak memory of two completions' activations instead of all eight, for one
    more forward and the prompt run once per pair instead of once per group.

    `model` is TRL's training model: a causal LM whose forward takes `fused_lm_head=True` and `labels` and returns
    per-token `log_probs` (and `entropy`) at the trainer's temperature (trl.trainer.utils.add_fused_lm_head).
    """
    prompt_len = input_ids.shape[1] - logits_to_keep
    groups = sampling.prompt_groups(input_ids[:, :prompt_len], attention_mask[:, :prompt_len])
    if groups is None or layers_checkpointed(model):
        return None
    keyword = sampling.cache_keyword(model)
    logps, entropies = [None] * len(input_ids), [None] * len(input_ids)
    recompute = recompute and torch.is_grad_enabled()  # without a backward there is nothing to recompute for
    if recompute:
        groups = [rows[i:i + RECOMPUTE_ROWS] for rows in groups for i in range(0, len(rows), RECOMPUTE_ROWS)]
    for rows in groups:
        first = rows[0]
        prompt = input_ids[first, :prompt_len][attention_mask[first, :prompt_len].bool()]  # (p,) no padding
        completion_mask = attention_mask[rows, prompt_len:]  # (g, logits_to_keep)
        longest = int(completion_mask.sum(1).max())
        # The prompt's last token, then the completions cut at the group's longest: (g, 1 + longest)
        suffix = torch.cat([prompt[-1:].expand(len(rows), 1), input_ids[rows, prompt_len:prompt_len + longest]], 1)
        labels = suffix.masked_fill(F.pad(completion_mask[:, :longest], (1, 0), value=1) == 0, -100)
        if recompute:
            from torch.utils.checkpoint import checkpoint

            group_logps, group_entropy = checkpoint(_score_group, model, prompt, suffix, labels, keyword,
                                                    use_reentrant=False)
        else:
            group_logps, group_entropy = _score_group(model, prompt, suffix, labels, keyword)
        for i, row in enumerate(rows):  # (longest,) each, padded back to logits_to_keep with zeros
            logps[row] = F.pad(group_logps[i], (0, logits_to_keep - longest))
            entropies[row] = F.pad(group_entropy[i], (0, logits_to_keep - longest))
    return torch.stack(logps), torch.stack(entropies) if compute_entropy else None
