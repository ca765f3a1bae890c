"""One real GRPO step of train_rl.py, split into its parts: generation, log-prob passes, backward, judge, optimizer.

It runs train_rl.py's pipeline in this process for one step (`profile_step`: `training.prepare_grpo`, the set-up
train_rl.py runs, with the real model, prompts and judge), in a trainer that records the step at three seams, none
of which changes what runs:
- the trainer is a subclass of the one `training.make_trainer_class()` builds (`profiled_trainer_class`, handed to
  prepare_grpo's `trainer_class` hook): it times
  generation, the reward (the judge), every log-prob pass and `compute_loss` around the methods it inherits, and
  counts the minor page faults inside each (first touches of fresh memory, which cost several microseconds each in
  a VM);
- a Trainer callback times the step and the optimizer (`on_pre_optimizer_step` .. `on_optimizer_step`);
  backward is what lies between the end of `compute_loss` and the optimizer;
- a forward pre-hook inside the first decoder layer (its MLP) counts every forward pass with its shape and grad mode (a pass
  activation checkpointing re-runs inside the backward included), so the passes per step are counted, not assumed.
Then it measures the same model's plain `generate` on the step's prompts and two rates of this CPU, so every part
of the step is given against what it could cost at best (`part_bounds`): the GEMM rate at the passes' shapes for
prefill, the forward with grad and its backward, and for decoding the rate at which a skinny GEMM streams a weight
matrix too large for the caches, because one decode step reads every weight once from memory for only a few rows.
"""
from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


class Section(NamedTuple):
    """One timed part of the step as it ran: seconds from perf_counter, minor page faults before and after."""

    name: str
    start: float
    end: float
    grad: bool
    faults_start: int
    faults_end: int


@dataclass
class StepRecord:
    """What one profiled step did. Times in seconds from the step's start."""

    sections: list[Section] = field(default_factory=list)
    forwards: list[tuple[int, int, bool]] = field(default_factory=list)  # (batch, seq_len, grad enabled) per decoder call
    step_start: float = 0.0
    step_end: float = 0.0
    optimizer: tuple[float, float] = (0.0, 0.0)
    faults_before_optimizer: int = 0
    logs: dict = field(default_factory=dict)
    trainer: object = None  # the GRPOTrainer the step ran in (its model and prompts are reused afterwards)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Record the block as one Section named `name` (its grad mode is the one it ends in)."""
        start, faults = time.perf_counter(), minor_faults()
        try:
            yield
        finally:
            self.sections.append(Section(name, start, time.perf_counter(), torch.is_grad_enabled(), faults,
                                         minor_faults()))

    def total(self, name: str, grad: bool | None = None) -> float:
        return sum(s.end - s.start for s in self.sections if s.name == name and (grad is None or s.grad == grad))

    def faults(self, name: str) -> int:
        return sum(s.faults_end - s.faults_start for s in self.sections if s.name == name)

    def last(self, name: str) -> Section:
        return max((s for s in self.sections if s.name == name), key=lambda s: s.end)


def minor_faults() -> int:
    """This process's minor page faults so far: each is a first touch of a fresh page of memory (4 KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def profiled_trainer_class(record: StepRecord) -> type:
    """The trainer train_rl.py runs (`training.make_trainer_class()`), subclassed to record its steps in `record`:
    each timed part is a method it inherits, called through, so the work is the same."""
    from transformers import TrainerCallback

    import training

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            record.step_start = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            record.optimizer = (time.perf_counter(), 0.0)
            record.faults_before_optimizer = minor_faults()

        def on_optimizer_step(self, args, state, control, **kwargs):
            record.optimizer = (record.optimizer[0], time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            record.step_end = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            record.logs.update(logs or {})

    def count_forward(module, args, kwargs):
        hidden = args[0] if args else next(iter(kwargs.values()))  # (batch, seq, hidden)
        record.forwards.append((hidden.shape[0], hidden.shape[1], torch.is_grad_enabled()))

    class Profiled(training.make_trainer_class()):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            record.trainer = self
            self.add_callback(StepTimes())
            # inside the first decoder layer: activation checkpointing re-runs a layer's forward, not its hooks
            first_mlp = self.model.get_base_model().get_decoder().layers[0].mlp
            self._count_hook = first_mlp.register_forward_pre_hook(count_forward, with_kwargs=True)

        def _generate_single_turn(self, *args, **kwargs):
            self.sampler.model_for(self.model)  # an int8 sampling copy is (re)built here, outside "generation"
            with record.section("generation"):
                return super()._generate_single_turn(*args, **kwargs)

        def _calculate_rewards(self, *args, **kwargs):
            with record.section("judge"):
                return super()._calculate_rewards(*args, **kwargs)

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            with record.section("logprobs"):
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)

        def compute_loss(self, *args, **kwargs):
            with record.section("compute_loss"):
                return super().compute_loss(*args, **kwargs)

    return Profiled


def profile_step(argv: list[str]) -> StepRecord:
    """`python train_rl.py ARGV` in this process, in the profiled trainer: train_rl.py's own set-up
    (training.prepare_grpo) and training (the final save is not part of a step; ARGV without --do_validate and
    --compare_before_after keeps validation and the comparison out of the timing)."""
    import arguments
    import training

    record = StepRecord()
    training.prepare_grpo(arguments.parse_grpo_args(argv), trainer_class=profiled_trainer_class(record)).trainer.train()
    return record


def matmul_rate(rows: int, inner: int, cols: int, seconds: float = 2.0) -> float:
    """This CPU's fp32 matmul rate in FLOP/s at one shape (best of repeated runs for about `seconds`)."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    return 2 * rows * inner * cols / fastest(lambda: a @ b, seconds)


def fastest(run: Callable[[], object], seconds: float) -> float:
    """The shortest of repeated calls of `run` for about `seconds`: the rate the machine can give, not its noise."""
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def weight_stream_rate(rows: int, inner: int, cols: int, seconds: float = 2.0) -> float:
    """Bytes/s at which `F.linear` reads an fp32 (cols, inner) weight for `rows` rows, best of repeats: with a
    weight larger than the caches (an LM head) this is how fast a decode step, which reads every weight once for a
    handful of rows, can go; on the development machine it is far below the GEMM rate at the same shape."""
    x, weight = torch.randn(rows, inner), torch.randn(cols, inner)
    seconds_per_read = fastest(lambda: torch.nn.functional.linear(x, weight), seconds)  # (rows, cols)
    return weight.numel() * weight.element_size() / seconds_per_read


def flops_per_token(config, lm_head: bool = True) -> float:
    """Matmul FLOPs per token of a Llama/Qwen2 decoder: the seven projections of every layer, plus the LM head
    when `lm_head` (attention scores and softmax left out: under 15% at these lengths)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + h * i * 3  # q, o; k, v; gate, up, down
    return 2 * (layers * per_layer + (h * config.vocab_size if lm_head else 0))


def part_bounds(step: dict, body_flops: float, head_flops: float, gemm_flop_s: float, stream_bytes_s: float) -> dict:
    """Seconds each part of the step would take at this CPU's measured rates, with nothing wasted.

    Prefill: the prompt tokens through the body (the LM head only sees each row's last token). Decode: every
    decode step streams all fp32 weights once (2 bytes per FLOP of a token). Forward with grad: every token of
    the (rows, prompt + completion) batch through the body, the LM head only on completion positions (TRL's
    `logits_to_keep`). Backward: one GEMM per forward GEMM, since only activations need gradients (v's 32
    numbers are a product of rank-r terms; no weight gradient is formed).
    """
    forward = (step["with_grad_tokens"] * body_flops + step["padded_completion_tokens"] * head_flops) / gemm_flop_s
    return {"prefill": step["prefill_tokens"] * body_flops / gemm_flop_s,
            "decode": step["passes"]["decode_forwards"] * 2 * (body_flops + head_flops) / stream_bytes_s,
            "forward_with_grad": forward, "backward": forward}


def plain_generate(model, tokenizer, prompts: list[str], new_tokens: int, temperature: float) -> float:
    """Tokens/s of `model.generate` on `prompts` (left-padded, sampling), exactly `new_tokens` per row."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(**batch, do_sample=True, temperature=temperature, min_new_tokens=new_tokens,
                       max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def summarize(record: StepRecord) -> dict:
    """Seconds per part, forward passes by kind, and padding, from one profiled step."""
    step = record.step_end - record.step_start
    scoring = record.last("compute_loss")  # the loss's forward with grad; the backward runs from its end
    parts = {
        "generation": record.total("generation"),
        "judge": record.total("judge"),
        "logprob_no_grad": record.total("logprobs", grad=False),
        "forward_with_grad": record.total("compute_loss"),
        "backward": record.optimizer[0] - scoring.end,
        "optimizer": record.optimizer[1] - record.optimizer[0],
    }
    parts["other"] = step - sum(parts.values())
    # the generation batch, prompts x num_generations: the decode steps' rows (the prefill may hold only the distinct
    # prompts, sampling.generate_shared_prefill)
    rows = max((b for b, s, g in record.forwards if s == 1 and not g), default=record.forwards[0][0])
    logprob_calls = [s.grad for s in record.sections if s.name == "logprobs"]
    completion_tokens = record.logs.get("completions/mean_length", 0.0) * rows
    with_grad = [(b, s) for b, s, g in record.forwards if g]
    # old / reference log-prob passes score the same (rows, prompt + completion) batch as the pass with grad
    scored_no_grad = logprob_calls.count(False) * (with_grad[0][0] * with_grad[0][1] if with_grad else 0)
    padded = record.logs.get("completions/max_length", 0.0) * rows  # every row runs until the longest stops
    return {
        "step_s": step,
        "parts_s": parts,
        # first touches of fresh memory: a run's first forward with grad touches every saved activation's pages once
        "minor_faults": {"generation": record.faults("generation"),
                         "forward_with_grad": record.faults("compute_loss"),
                         "backward": record.faults_before_optimizer - scoring.faults_end},
        "passes": {
            "decode_forwards": sum(1 for _, s, g in record.forwards if s == 1 and not g),
            "long_no_grad_forwards": sum(1 for _, s, g in record.forwards if s > 1 and not g),  # prefill + scoring
            "logprob_calls_no_grad": logprob_calls.count(False),  # old / reference log-probs
            "logprob_calls_with_grad": logprob_calls.count(True),
            "with_grad_forwards": with_grad,
        },
        "rows": rows,
        "prefill_tokens": sum(b * s for b, s, g in record.forwards if s > 1 and not g) - scored_no_grad,
        "with_grad_tokens": sum(b * s for b, s in with_grad),
        "completion_tokens": completion_tokens,
        "padded_completion_tokens": padded,
        "rollout_tok_s": completion_tokens / parts["generation"] if parts["generation"] else 0.0,
        "rollout_padded_tok_s": padded / parts["generation"] if parts["generation"] else 0.0,
        "reward": record.logs.get("reward"),
        "trl_step_time": record.logs.get("step_time"),
        "mixed_precision": record.trainer.accelerator.mixed_precision,  # "no" on CPU: bf16 autocast has no fast GEMM
    }


def measure(argv: list[str], plain_tokens: int = 32) -> dict:
    """Profile one step of `train_rl.py argv`, then plain generate on its prompts and the CPU's matmul rate."""
    import data
    from bench.bench_model import memory_bytes, peak_memory_reset, without_adapter

    peak_memory_reset("cpu")
    record = profile_step(argv)
    peak = memory_bytes("cpu", peak=True)
    out = {**summarize(record), "peak_rss_bytes": peak, "threads": torch.get_num_threads()}
    trainer = record.trainer
    model, tokenizer, rows = trainer.model.eval(), trainer.processing_class, out["rows"]
    prompts = [data.render_prompt(row["prompt"], tokenizer)[0] for row in trainer.train_dataset.select(range(2))]
    prompts = [p for p in prompts for _ in range(rows // len(prompts))]  # (rows,) as in the step: 2 prompts x G
    temperature = trainer.args.temperature
    out["plain_generate_tokens"] = plain_tokens
    out["plain_generate_tok_s"] = {"adapted": plain_generate(model, tokenizer, prompts, plain_tokens, temperature)}
    with without_adapter(model) as base:
        out["plain_generate_tok_s"]["base"] = plain_generate(base, tokenizer, prompts, plain_tokens, temperature)
    config = model.get_base_model().config
    out["matmul_flop_s"] = {"decode": matmul_rate(rows, config.hidden_size, config.intermediate_size),
                            "scoring": matmul_rate(2048, config.hidden_size, config.intermediate_size)}
    out["flops_per_token"] = flops_per_token(config)
    out["rollout_matmul_bound_tok_s"] = out["matmul_flop_s"]["decode"] / out["flops_per_token"]
    out["weight_stream_bytes_s"] = weight_stream_rate(rows, config.hidden_size, config.vocab_size)
    body = flops_per_token(config, lm_head=False)
    out["bound_s"] = part_bounds(out, body, out["flops_per_token"] - body, out["matmul_flop_s"]["scoring"],
                                 out["weight_stream_bytes_s"])
    return out
