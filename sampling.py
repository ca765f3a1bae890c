"""The sampling copy: the policy as generation sees it, with the adapter folded in and, on CPU, int8 weights.

Sampling is the price of everything on a CPU. Decoding Qwen2.5-Coder-0.5B at 8-16 rows spends its time in fp32 GEMMs
with few rows, which MKL runs at 30-40 GFLOP/s on one AVX2 core; the same shapes as int8 dynamic-quantized GEMMs
(PyTorch's fbgemm kernels, weights per output channel, activations per call) run at about 150 GFLOP/s (docs/
benchmarks.md, "Sampling"). Folding W + ΔW once per policy version also removes the adapter's work per token.

Only which tokens are drawn comes from the copy. The trained model, v and its gradient, and every log-prob that GRPO
or evaluation computes stay in the model's own precision; `logprob_drift` measures how far the copy's distribution is
from the exact policy's, and `weights="exact"` samples from the trained model itself.
"""
from __future__ import annotations

import copy
import types
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from arguments import SAMPLER_WEIGHTS



class SamplingError(ValueError):
    """A sampling setting that cannot be used (an unknown weights kind, int8 off the CPU)."""


@dataclass(frozen=True)
class SamplerSettings:
    """How completions are drawn: `int8` (the folded copy, int8 linear layers; CPU) or `exact` (the model itself)."""

    weights: str = "int8"

    def __post_init__(self):
        if self.weights not in SAMPLER_WEIGHTS:
            raise SamplingError(f"sampler weights must be one of {', '.join(SAMPLER_WEIGHTS)}, not {self.weights!r}")


def default_weights(device: str | torch.device) -> str:
    """int8 on CPU, where it is 2-4x faster; exact elsewhere (a GPU decodes bf16 at memory speed already)."""
    return "int8" if torch.device(device).type == "cpu" else "exact"


def _base_of(model: nn.Module) -> nn.Module:
    """The transformers model under a PeftModel (its TinyLoRA layers included), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _folded_weight(module: nn.Module) -> torch.Tensor:
    """W + ΔW (out, in) in fp32 for an adapted layer (TinyLoRA, dequantized first for an NF4 base, or a LoRA
    contrast: PEFT's `get_delta_weight` either way); W for a plain Linear."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not isinstance(module, BaseTunerLayer):
        return module.weight.float()
    weight = module.dense_weight().float() if hasattr(module, "dense_weight") else module.get_base_layer().weight.float()
    if not module.disable_adapters:
        for name in module.active_adapters:
            weight = weight + module.get_delta_weight(name).float().to(weight.device)  # (out, in)
    return weight


# Layers whose inputs carry Qwen2's "massive activations" (a few channels 100-1,000x the rest on some tokens): int8
# activations scaled per call lose every other channel there (KL to the exact policy 0.42 nats per token with them
# in plain int8), so their outlier channels take an fp32 path (OutlierSplitLinear; KL 0.038, the same as fp16
# weights there, and 18% faster per decode step than fp16 weights).
OUTLIER_SPLIT_LAYERS = ("down_proj",)
OUTLIER_THRESHOLD = 6.0  # |activation| above which an input channel is an outlier (LLM.int8's value)


def _quantized_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A dynamic-quantized Linear: int8 weights per output channel, int8 activations scaled per call.

    The weights are those `DynamicLinear.from_float` makes (its observer and rounding), built without its two
    wasted steps, which took two thirds of the copy's build: a float Linear initialised at random only to be
    overwritten, and a full-size placeholder packed for fbgemm before the real weights are packed."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.nn.quantized.modules.utils import _quantize_weight
    from torch.ao.quantization import per_channel_dynamic_qconfig

    observer = per_channel_dynamic_qconfig.weight()
    observer(weight)
    with warnings.catch_warnings():  # torch.ao's deprecation notices: the kernels are the ones we measured
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        layer = DynamicLinear(1, 1, dtype=torch.qint8)  # packs a 1 x 1 placeholder
        layer.set_weight_bias(_quantize_weight(weight.float(), observer), None if bias is None else bias.float())
    layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
    return layer


class OutlierSplitLinear(nn.Module):
    """LLM.int8()'s decomposition (Dettmers et al. 2022) on fbgemm's kernels: the input channels whose |x| exceeds
    `threshold` anywhere in this call go through fp32 against fp16-stored weight columns, the rest through the int8
    layer, so an outlier no longer sets the int8 scale of every other channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, threshold: float = OUTLIER_THRESHOLD):
        super().__init__()
        self.int8 = _quantized_linear(weight, bias)
        self.register_buffer("columns", weight.t().contiguous().half())  # (in, out): a row per input channel
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        outliers = (x.abs().flatten(0, -2).amax(0) > self.threshold).nonzero().squeeze(1)  # (k,) channel indices
        if len(outliers) == 0:
            return self.int8(x)
        ordinary = x.index_fill(-1, outliers, 0.0)  # (..., in)
        return self.int8(ordinary) + x.index_select(-1, outliers) @ self.columns[outliers].float()  # (..., out)


def _is_linear(module: nn.Module) -> bool:
    """A linear layer the copy replaces: plain, or adapted (PEFT's layer around its base Linear)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, (BaseTunerLayer, nn.Linear))


def int8_copy(model: nn.Module) -> nn.Module:
    """A generation-only copy of `model` (a PeftModel or a plain causal LM): every TinyLoRA layer folded into its
    weight and every linear layer (the seven projections and the LM head) in int8. Frozen tensors that stay as they
    are (embeddings, norms) are shared with `model`, not copied, so the copy costs about a quarter of the fp32
    weights."""
    base = _base_of(model)
    memo = {id(t): t for t in (*base.parameters(), *base.buffers())}  # deepcopy shares these instead of copying
    linears: dict[str, nn.Module] = {}
    for name, module in base.named_modules():
        if _is_linear(module) and not any(name.startswith(f"{outer}.") for outer in linears):  # not a base_layer
            linears[name] = module
    for module in linears.values():  # the copies of these are replaced below: don't copy their structure
        memo[id(module)] = module
    sampler = copy.deepcopy(base, memo)
    for name, module in linears.items():
        bias = module.get_base_layer().bias if hasattr(module, "get_base_layer") else module.bias
        parent_name, _, child = name.rpartition(".")
        parent = sampler.get_submodule(parent_name) if parent_name else sampler
        layer = OutlierSplitLinear if child in OUTLIER_SPLIT_LAYERS else _quantized_linear
        setattr(parent, child, layer(_folded_weight(module).cpu(), bias))
    return sampler.eval().requires_grad_(False)


def _policy_version(model: nn.Module) -> torch.Tensor | None:
    """The trainable numbers (a copy), to tell whether the policy changed since the copy was made."""
    import tinylora

    return tinylora.trained_vector(model) if hasattr(model, "peft_config") else None


class Sampler:
    """The model generation uses: the int8 copy, rebuilt only when the trained numbers changed; or the model itself."""

    def __init__(self, settings: SamplerSettings):
        self.settings = settings
        self._copy: nn.Module | None = None
        self._version: torch.Tensor | None = None
        self._source: int | None = None

    def model_for(self, model: nn.Module) -> nn.Module:
        if self.settings.weights == "exact":
            return model
        if next(model.parameters()).device.type != "cpu":
            raise SamplingError("int8 sampling runs on CPU only; use the exact sampler on a GPU")
        version = _policy_version(model)
        stale = self._copy is None or self._source != id(model) or (
            version is not None and (self._version is None or not torch.equal(version, self._version)))
        if stale:
            self._copy, self._version, self._source = None, None, None  # free the old copy before building the new
            fresh = int8_copy(model)
            fresh.generate = types.MethodType(copy_generate, fresh)  # callers' generate: shared prefills, fast draw
            self._copy, self._version, self._source = fresh, version, id(model)
        return self._copy


def logprob_drift(exact: nn.Module, sampled: nn.Module, input_ids: torch.Tensor, start: int) -> dict:
    """How far the sampling copy's next-token distribution is from the exact model's, on the tokens of
    `input_ids` (batch, seq) from position `start` on: mean and max |Δ log p| of the tokens that were drawn, mean KL
    (exact ‖ copy) per token in nats, and how often both would pick the same greedy token."""
    with torch.no_grad():
        exact_lp = exact(input_ids).logits[:, start - 1:-1].float().log_softmax(-1)  # (batch, tokens, vocab)
        copy_lp = sampled(input_ids).logits[:, start - 1:-1].float().log_softmax(-1)  # (batch, tokens, vocab)
    drawn = input_ids[:, start:, None]  # (batch, tokens, 1)
    delta = (exact_lp.gather(-1, drawn) - copy_lp.gather(-1, drawn)).abs()  # (batch, tokens, 1)
    kl = (exact_lp.exp() * (exact_lp - copy_lp)).sum(-1)  # (batch, tokens)
    return {"mean_abs_logprob_diff": delta.mean().item(), "max_abs_logprob_diff": delta.max().item(),
            "kl_nats_per_token": kl.mean().item(),
            "greedy_agreement": (exact_lp.argmax(-1) == copy_lp.argmax(-1)).float().mean().item()}


def cache_keyword(model: nn.Module) -> str:
    """transformers 5.x calls the cache `cache` in forward and generate (the old `past_key_values` warns); older
    releases know only the old name. Read from the transformers model's forward (a PeftModel's takes **kwargs)."""
    import inspect

    return "cache" if "cache" in inspect.signature(_base_of(model).forward).parameters else "past_key_values"


class InverseCdfDraw:
    """A logits processor that draws the next token itself: one uniform number per row against the softmax's
    cumulative sum (fp64), then every other token's score to -inf, so that `generate`'s greedy argmax returns the
    drawn token. The same categorical distribution as `generate`'s `torch.multinomial`, drawn from the same seeded
    global RNG; multinomial instead spends one exponential number per vocabulary entry (Qwen's 151,936: 61 ms per
    decode step at 8 rows on one core, against 9 ms here, a sixth of a 0.5B model's decode step).
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = scores.float().softmax(-1).double().cumsum(-1)  # (rows, vocab)
        uniform = torch.rand(len(scores), 1, dtype=torch.float64, device=scores.device) * cdf[:, -1:]  # (rows, 1)
        drawn = torch.searchsorted(cdf, uniform, right=True).clamp(max=scores.shape[-1] - 1)  # (rows, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)  # (rows, vocab)


# Sampling knobs whose warpers this module builds (transformers' own classes, in `generate`'s order); a config
# that sets any other warper is drawn by `generate` itself.
_OTHER_WARPERS = {"top_h": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


def inverse_cdf_config(config, processors: list | None = None):
    """(config, logits processors) that draw `config`'s sampled tokens with InverseCdfDraw: `do_sample` off, and
    transformers' temperature, top-k, top-p and min-p warpers followed by the draw, appended where `generate`
    appends its warpers (after every other processor). Unchanged when `config` is greedy, beams or sets another
    warper."""
    from transformers.generation import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper,
                                         TopKLogitsWarper, TopPLogitsWarper)

    others = any(getattr(config, k, d) not in (None, d) for k, d in _OTHER_WARPERS.items())
    if not config.do_sample or (config.num_beams or 1) > 1 or others:
        return config, processors
    warpers = list(processors or [])
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(config.min_p))
    greedy = copy.deepcopy(config)
    greedy.do_sample, greedy.temperature, greedy.top_k, greedy.top_p, greedy.min_p = False, None, None, None, None
    return greedy, LogitsProcessorList([*warpers, InverseCdfDraw()])


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]] | None:
    """Row indices grouped by equal prompt (padding ignored), in order of first appearance (TRL shuffles a step's
    rows, so a prompt's G completions are not side by side); None when no prompt repeats, where nothing is gained.
    Generation shares a group's prefill and GRPO's scoring pass its prompt forward."""
    groups: dict[tuple, list[int]] = {}
    for row, (ids, mask) in enumerate(zip(prompt_ids, prompt_mask)):
        groups.setdefault(tuple(ids[mask.bool()].tolist()), []).append(row)
    if len(groups) == len(prompt_ids):
        return None
    return list(groups.values())


def generate_shared_prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            generation_config, **kwargs) -> torch.Tensor:
    """`model.generate` with one prefill per distinct prompt: GRPO's G completions of a prompt and evaluation's n
    samples share it, and prefill is most of the work for prompts of a few hundred tokens and answers of a few
    hundred more. Returns (rows, prompt + new) as `generate` does, rows in the order given.

    Each distinct (left-padded) row is prefilled once up to its last token; the cache is repeated for its copies,
    and `generate` continues all rows from their last prompt token, drawing every new token as it would have.
    """
    from transformers import DynamicCache

    groups = prompt_groups(input_ids, attention_mask)
    generate = type(model).generate  # the class's: the sampling copy's own `generate` is this function
    if groups is None or input_ids.shape[1] < 2 or len({len(g) for g in groups}) > 1:
        return generate(model, input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
                        **kwargs)
    order = [row for group in groups for row in group]  # copies of one prompt adjacent, in first-seen order
    distinct = [group[0] for group in groups]
    ids, mask = input_ids[order], attention_mask[order]  # (rows, prompt), copies adjacent
    cache = DynamicCache(config=model.config)
    prefix_mask = attention_mask[distinct, :-1]  # (distinct, prompt - 1)
    positions = (prefix_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: count from each prompt's first token
    with torch.no_grad():
        model(input_ids=input_ids[distinct, :-1], attention_mask=prefix_mask, position_ids=positions, use_cache=True,
              logits_to_keep=1, **{cache_keyword(model): cache})
    cache.batch_repeat_interleave(len(groups[0]))  # (distinct · copies, heads, prompt - 1, head_dim) per layer
    out = generate(model, input_ids=ids, attention_mask=mask, generation_config=generation_config,
                   **{cache_keyword(model): cache}, **kwargs)  # (rows, prompt + new), in `order`
    return out[torch.argsort(torch.tensor(order))]


def copy_generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config,
                  logits_processor: list | None = None, **kwargs) -> torch.Tensor:
    """The sampling copy's `generate`: one prefill per distinct prompt, sampled tokens drawn by InverseCdfDraw."""
    config, processors = inverse_cdf_config(generation_config, logits_processor)
    if processors is not None:
        kwargs["logits_processor"] = processors
    return generate_shared_prefill(model, input_ids, attention_mask, config, **kwargs)


def draw_name(weights: str) -> str:
    """How a sampler draws a sampled token, recorded with every run: the int8 copy by inverse CDF, the exact model
    by `generate`'s multinomial. Runs that drew differently see different random tokens and never pair."""
    return "inverse_cdf" if weights == "int8" else "multinomial"
