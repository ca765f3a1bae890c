"""Model-side benchmarks at real shapes with random weights: adapter init, forward, rollout, one GRPO step.

Speed and memory depend on shapes, not on weight values, so a model built from Qwen2.5-Coder-3B-Instruct's public
config with random weights measures what the real one would, without a download. Each number is taken next to
its reference in the same process: TinyLoRA's truncated SVD next to the full SVD stock PEFT runs, the adapted
model next to the same base model before the adapter was injected. `bench/run.py` is the entry point.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

import modeling
import paths
import tinylora

WEIGHTS_VERSION = 1  # bump when the random-weight recipe changes, so cached checkpoints are rebuilt
SPIKES = 8  # planted leading singular directions per projection (see plant_spectrum)
G = 4  # completions per prompt (GRPO's num_generations), as in configs/default.yaml
U, RANK = 32, 2  # the default adapter: 32 numbers shared by every projection, rank-2 frozen factors

# Qwen/Qwen2.5-Coder-3B-Instruct's config.json, the fields that set shapes and cost.
QWEN25_CODER_3B = dict(
    hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
    head_dim=128, vocab_size=151936, tie_word_embeddings=True, rope_theta=1_000_000.0, max_position_embeddings=32768,
    rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False,
)


@dataclass(frozen=True)
class Preset:
    """A model config plus the workload sizes measured on it."""

    name: str
    config: dict  # Qwen2Config fields
    prompt_len: int  # prompt tokens per sequence
    new_tokens: int  # completion tokens per sequence (fixed: min_new_tokens = max_new_tokens)
    repeats: int  # alternating rounds of timed forwards, one per side each (see Paired)
    rollout_rounds: int  # timed generations on each side


PRESETS = {
    "3b": Preset("3b", QWEN25_CODER_3B, prompt_len=256, new_tokens=1024, repeats=10, rollout_rounds=1),
    # Same structure (GQA 16:2, tied embeddings, qkv bias), small enough for CI on 2 cores. hidden > 512 so the
    # square projections take tinylora's randomized-SVD path, as every projection of the 3B model does.
    # Two decoder layers of the real shapes: the SVD start-up cost per layer, measurable on a CPU in minutes.
    "3b-2layers": Preset("3b-2layers", {**QWEN25_CODER_3B, "num_hidden_layers": 2}, prompt_len=256, new_tokens=1024,
                         repeats=10, rollout_rounds=1),
    "cpu": Preset("cpu", {**QWEN25_CODER_3B, "hidden_size": 576, "intermediate_size": 1152, "num_hidden_layers": 2,
                          "head_dim": 36, "vocab_size": modeling.TINY_VOCAB_SIZE, "max_position_embeddings": 4096},
                  prompt_len=32, new_tokens=24, repeats=41, rollout_rounds=3),
}


# ------------------------------------------------------------------------------------------------ the model
def plant_spectrum(model: torch.nn.Module, seed: int = 0) -> None:
    """Add a few well-separated leading singular directions to every target projection, in place.

    Trained weights have a decaying top spectrum; i.i.d. random ones do not: their top singular values agree to
    about 1%, so their top-r factors are not unique and no two SVD methods could be compared on them. A rank-8
    spike with strengths 4x, 2.8x, 2x, ... the bulk's largest singular value gives the gaps trained weights have.
    Speed does not depend on it.
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name in tinylora.target_module_names(model):
        weight = model.get_submodule(name).weight.data  # (out, in)
        out_f, in_f = weight.shape
        bulk = weight.float().std() * (out_f**0.5 + in_f**0.5)  # largest singular value of the random part
        left = torch.linalg.qr(torch.randn(out_f, SPIKES, generator=generator, device=weight.device))[0]  # (out, k)
        right = torch.linalg.qr(torch.randn(in_f, SPIKES, generator=generator, device=weight.device))[0]  # (in, k)
        strengths = bulk * 4 * 0.7 ** torch.arange(SPIKES, device=weight.device)  # (k,)
        weight += ((left * strengths) @ right.T).to(weight.dtype)  # (out, in)


def model_dir(preset: Preset) -> Path:
    """Random-weight checkpoint (bf16 safetensors + the tiny tokenizer) for `preset`, built once and cached.

    Going through a checkpoint lets NF4 come from `modeling.load_model`, the path training uses, rather than from
    a hand-quantized copy. Token ids never exceed the tiny tokenizer's vocabulary in prompts; sampled ids above it
    decode to nothing, which the benchmark's reward does not mind.
    """
    recipe = json.dumps([WEIGHTS_VERSION, SPIKES, preset.config], sort_keys=True)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    out = paths.cache_dir() / f"bench-{preset.name}-{key}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(modeling.tiny_model_dir())
    config = Qwen2Config(**preset.config, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(modeling.default_device()):  # initialising 3B weights is minutes on CPU, seconds on a GPU
        model = Qwen2ForCausalLM(config)
        plant_spectrum(model)
        model = model.to(torch.bfloat16)
    with paths.replaced_atomically(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def load(preset: Preset, quant: bool, device: str):
    """(model, tokenizer) in NF4 or dense (bf16 on GPU, fp32 on CPU), exactly as train_rl.py loads a base model."""
    model, tokenizer = modeling.load_model(str(model_dir(preset)), quant=quant, device=device)
    model.eval()
    return model, tokenizer


def free(device: str) -> None:
    """Drop the previous model's memory before the next one loads (one 3B model at a time fits a 16 GB card)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str, clock: Callable[[], float] = time.perf_counter) -> float:
    """Time of one call of `fn` on `clock` (wall by default), with the GPU's queue drained on both sides."""
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


@dataclass(frozen=True)
class Paired:
    """Seconds of each side over alternating rounds: round i timed the base, then the adapted model.

    A ratio of the two fastest runs divides two independent extremes: on the 2-core CPU single bench runs of it
    spread from 1.02 to 1.09 for an overhead of about 5 %, wider than the effect measured. Each round's own ratio
    shares that round's machine state (frequency, caches, other jobs), so their median and quartiles over tens of
    rounds pin the overhead to about ±1 % and show the spread a reader should expect.
    """

    base: tuple[float, ...]
    adapted: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        return [a / b for b, a in zip(self.base, self.adapted)]

    def summary(self) -> dict:
        """Fastest run of each side, the median per-round ratio and its quartiles, and the ratio of the fastest."""
        ratios = self.ratios
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        return {"base_s": min(self.base), "adapted_s": min(self.adapted), "ratio": statistics.median(ratios),
                "ratio_quartiles": [quartiles[0], quartiles[2]], "fastest_ratio": min(self.adapted) / min(self.base),
                "rounds": len(ratios)}


def interleaved(fn: Callable[[torch.nn.Module], object], model, rounds: int, device: str,
                warmup: Callable[[torch.nn.Module], object] | None = None,
                clock: Callable[[], float] = time.perf_counter, layer_type: type | None = None) -> Paired:
    """Seconds of `fn(model)` over `rounds` alternating runs of the base and the adapted model, after a warm-up of
    each.

    `warmup` (default `fn`) may be a cheaper call through the same kernels. Alternating puts both sides under the
    same machine load. The base is the plain model: every adapter layer (`layer_type`, TinyLoRA's by default)
    swapped out for the layer it wraps.
    """
    with without_adapter(model, layer_type) as base:
        (warmup or fn)(base)
    (warmup or fn)(model)
    base_times, adapted_times = [], []
    for _ in range(rounds):
        with without_adapter(model, layer_type) as base:
            base_times.append(seconds(lambda: fn(base), device, clock))
        adapted_times.append(seconds(lambda: fn(model), device, clock))
    return Paired(tuple(base_times), tuple(adapted_times))


@contextmanager
def swapped(model, modules: dict[str, torch.nn.Module]) -> Iterator[torch.nn.Module]:
    """The base model with the submodules named in `modules` put in their places (torch's `set_submodule`), the
    originals put back on exit: the benchmark composes the model it built, and no code of the toolkit is replaced."""
    base = model.get_base_model()
    originals = {name: base.get_submodule(name) for name in modules}
    for name, module in modules.items():
        base.set_submodule(name, module)
    try:
        yield base
    finally:
        for name, module in originals.items():
            base.set_submodule(name, module)


def without_adapter(model, layer_type: type | None = None) -> AbstractContextManager[torch.nn.Module]:
    """The plain base model with every adapter layer (TinyLoRA's unless `layer_type` says another PEFT tuner's)
    replaced by the layer it wraps, for the block.

    Truer than PEFT's disable_adapter(), which still runs each wrapper's Python (part of what is measured).
    """
    from peft.tuners.tinylora.layer import TinyLoraLayer

    return swapped(model, {name: module.get_base_layer() for name, module in model.get_base_model().named_modules()
                           if isinstance(module, layer_type or TinyLoraLayer)})


class AdapterPart(torch.nn.Module):
    """One TinyLoRA layer run through another forward, `forward(layer, x, ...)`: a part of the layer's own forward or
    the same formula written out. Put in the layer's place with `swapped(model, adapter_parts(model, forward))`."""

    def __init__(self, layer: tinylora.TinyLoraLinear, forward: Callable) -> None:
        super().__init__()
        self.layer, self.part = layer, forward

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.part(self.layer, x, *args, **kwargs)


def adapter_parts(model, forward: Callable) -> dict[str, AdapterPart]:
    """An AdapterPart running `forward` for every TinyLoRA layer of `model`, by its name in the base model. Build
    them once and swap the same ones in each time: a compiled graph traced through them keeps its guards."""
    return {name: AdapterPart(layer, forward) for name, layer in tinylora.adapted_modules(model).items()}


def random_v(model: torch.nn.Module, seed: int = 0) -> None:
    """Every trainable v drawn small and at random, as after training: a zero v makes a zero update, which would let
    a wrong formula pass a logits check."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.01)


@dataclass(frozen=True)
class Probe:
    """An adapted model with a random v and the input of bench/run.py's forward stage, for the probes that split or
    compile that forward (bench/forward_parts.py, bench/compile_probe.py)."""

    model: torch.nn.Module
    ids: torch.Tensor  # (G, prompt_len + new_tokens)
    device: str

    @property
    def clock(self) -> Callable[[], float]:
        """CPU time on a CPU (as bench_forward's CPU-time pass), wall time on a GPU."""
        return time.process_time if self.device == "cpu" else time.perf_counter

    def timed(self, m: torch.nn.Module) -> float:
        """Seconds of one forward of `m` (this model, or its base) over the ids."""
        return seconds(lambda: m(input_ids=self.ids), self.device, self.clock)


def probe(preset: Preset, quant: bool, threads: int) -> Probe:
    """The probes' model: `preset` loaded as bench/run.py loads it (NF4 or dense), TinyLoRA's default adapter, v drawn
    at random; `threads` torch threads on a CPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(threads)
    model, _ = load(preset, quant, device)
    model = tinylora.apply_tiny_lora(model, u=U, rank=RANK)
    random_v(model)
    model.eval()
    return Probe(model, random_ids(preset.prompt_len + preset.new_tokens, device), device)


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The probes' shared flags: --preset and --threads (checked by check_probe_arguments)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu: the CI-sized model; 3b: Qwen2.5-Coder-3B-Instruct's config (GPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads on a CPU (default 1)")


def check_probe_arguments(args: argparse.Namespace) -> None:
    """One-line error, exit 2 (errors.cli_error), for a thread count below 1 or a 3B preset without a GPU."""
    import errors

    if args.threads < 1:
        errors.cli_error("--threads must be a positive integer")
    if args.preset.startswith("3b") and not torch.cuda.is_available():
        errors.cli_error(f"--preset {args.preset} needs a CUDA GPU (hours on a CPU); use --preset cpu")


def random_ids(length: int, device: str, seed: int = 0) -> torch.Tensor:
    """(G, length) random token ids inside the tiny tokenizer's vocabulary (ids 0-2 are its special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 1800, (G, length), generator=generator).to(device)  # (G, length)


# ------------------------------------------------------------------------------------------- the measurements
def bench_svd(preset: Preset, device: str, rank: int = RANK) -> dict:
    """tinylora.truncated_svd vs torch.linalg.svd (what stock PEFT runs) on every target projection's weight.

    Errors are relative to the full SVD: singular values |ŝ_i - s_i| / s_i, and the rank-r reconstruction
    ||Û Ŝ V̂ᵀ - U S Vᵀ||_F / ||U S Vᵀ||_F; the worst module is reported.
    """
    from safetensors import safe_open
    from tqdm import tqdm

    path = model_dir(preset) / "model.safetensors"
    out = {"modules": 0, "truncated_s": 0.0, "full_s": 0.0, "sv_rel_err": 0.0, "recon_rel_err": 0.0}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = [k for k in f.keys() if k.endswith(".weight") and k.rsplit(".", 2)[-2] in tinylora.TARGET_MODULES]
        for key in tqdm(keys, desc="adapter init: SVDs", leave=False):
            weight = f.get_tensor(key).to(device).float()  # (out, in)
            sync(device)
            start = time.perf_counter()
            U, S, Vh = tinylora.truncated_svd(weight, rank)  # (out, r), (r,), (r, in)
            sync(device)
            mid = time.perf_counter()
            Uf, Sf, Vhf = torch.linalg.svd(weight, full_matrices=False)
            sync(device)
            out["full_s"] += time.perf_counter() - mid
            out["truncated_s"] += mid - start
            exact = (Uf[:, :rank] * Sf[:rank]) @ Vhf[:rank]  # (out, in)
            approx = (U * S) @ Vh  # (out, in)
            out["sv_rel_err"] = max(out["sv_rel_err"], ((S - Sf[:rank]).abs() / Sf[:rank]).max().item())
            out["recon_rel_err"] = max(out["recon_rel_err"], ((approx - exact).norm() / exact.norm()).item())
            out["modules"] += 1
    out["speedup"] = out["full_s"] / out["truncated_s"]
    return out


def bench_forward(model, preset: Preset, device: str, layer_type: type | None = None) -> dict:
    """One no-grad forward over G sequences of prompt + completion length (GRPO's scoring pass), base vs adapted
    (TinyLoRA's layers, or `layer_type`'s: see bench_lora_forward)."""
    ids = random_ids(preset.prompt_len + preset.new_tokens, device)  # (G, prompt_len + new_tokens)

    def forward(m: torch.nn.Module) -> object:
        return m(input_ids=ids)

    with torch.no_grad():
        out = interleaved(forward, model, preset.repeats, device, layer_type=layer_type).summary()
    if device == "cpu":  # on a shared CPU the process's CPU time hides other jobs' preemption, which wall time shows
        with torch.no_grad():
            cpu = interleaved(forward, model, preset.repeats, device, clock=time.process_time,
                              layer_type=layer_type).summary()
        out.update(base_cpu_s=cpu["base_s"], adapted_cpu_s=cpu["adapted_s"], cpu_ratio=cpu["ratio"],
                   cpu_ratio_quartiles=cpu["ratio_quartiles"], cpu_fastest_ratio=cpu["fastest_ratio"])
    return out


def bench_lora_forward(preset: Preset, quant: bool, device: str) -> dict:
    """The yardstick for the forward's overhead: bench_forward's pass with stock PEFT LoRA of the same rank on the
    same projections, on a fresh copy of the base (B random, as after training: a zero B would be the same work).

    A LoRA layer runs the same two thin products per projection as TinyLoRA's, out of place and with no cache, so
    this separates what any unfused low-rank adapter costs at these shapes from what TinyLoRA's own code adds.
    """
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import LoraLayer

    base, _ = load(preset, quant, device)
    model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=RANK, target_modules=list(tinylora.TARGET_MODULES),
                                            init_lora_weights=False))
    model.eval()
    out = bench_forward(model, preset, device, layer_type=LoraLayer)
    del model, base
    free(device)
    return out


def bench_rollout(model, preset: Preset, device: str) -> dict:
    """Tokens/s generating G sampled completions of exactly new_tokens each (KV cache, batch G), base vs adapted."""
    ids = random_ids(preset.prompt_len, device)  # (G, prompt_len)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                  min_new_tokens=preset.new_tokens, max_new_tokens=preset.new_tokens,
                  pad_token_id=model.config.pad_token_id)
    torch.manual_seed(0)
    with torch.no_grad():
        short = {**kwargs, "min_new_tokens": 8, "max_new_tokens": 8}
        paired = interleaved(lambda m: m.generate(ids, **kwargs), model, preset.rollout_rounds, device,
                             warmup=lambda m: m.generate(ids, **short))
    base_s, adapted_s = min(paired.base), min(paired.adapted)  # the fastest: a few long generations per side
    tokens = G * preset.new_tokens
    return {"tokens": tokens, "base_tok_s": tokens / base_s, "adapted_tok_s": tokens / adapted_s,
            "ratio": adapted_s / base_s}


def peak_memory_reset(device: str) -> None:
    """Start a fresh high-water mark: the GPU allocator's, or the process's resident-set peak (Linux VmHWM)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def memory_bytes(device: str, peak: bool) -> int:
    """GPU memory allocated by torch (now or peak), or on CPU the process's resident set (VmRSS or VmHWM)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()
    field = "VmHWM:" if peak else "VmRSS:"
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024  # kB


def bench_grpo_step(model, tokenizer, preset: Preset, device: str) -> dict:
    """One optimizer step of train_rl.py's GRPO trainer: G rollouts, scoring, backward through the 4-bit/bf16 base.

    The reward alternates 0, 1 over the group: not what is measured, but varied, so the advantages (hence the
    gradients) are not zero whatever random text comes out. What is timed is generation plus the policy's forward
    and backward, with gradient checkpointing on GPU.
    """
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    import training

    class StepTimer(TrainerCallback):
        """Times the step alone (trainer setup and teardown excluded): generation happens inside the step."""

        start = seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.seconds = time.perf_counter() - self.start

    def alternating_reward(prompts, completions, **kwargs) -> list[float]:
        return [float(i % 2) for i in range(len(completions))]

    prompt = tokenizer.decode(random_ids(preset.prompt_len, "cpu")[0].tolist())
    with tempfile.TemporaryDirectory() as out_dir:
        args = GRPOConfig(
            output_dir=out_dir, num_generations=G, per_device_train_batch_size=G, gradient_accumulation_steps=1,
            max_steps=1, max_completion_length=preset.new_tokens, generation_kwargs={"min_new_tokens": preset.new_tokens},
            learning_rate=1e-3, beta=0.0, temperature=1.0, report_to="none", save_strategy="no", logging_steps=1,
            seed=42, dataloader_num_workers=0, disable_tqdm=True, use_cpu=device == "cpu", bf16=device != "cpu",
        )
        training.configure_device(args)  # bf16 + gradient checkpointing on GPU, fp32 on CPU, as in training
        timer = StepTimer()
        trainer = training.make_trainer_class()(
            model=model, reward_funcs=[alternating_reward], args=args,
            train_dataset=Dataset.from_list([{"prompt": prompt}] * G),
            processing_class=tokenizer, callbacks=[timer], run_info={},
        )
        before = memory_bytes(device, peak=False)  # the model, mostly: what the step adds is peak - before
        peak_memory_reset(device)
        trainer.train()
        peak = memory_bytes(device, peak=True)
    on_gpu = device.startswith("cuda")
    return {
        "seconds": timer.seconds, "peak_bytes": peak, "before_bytes": before,
        "peak_kind": "cuda_max_allocated" if on_gpu else "process_peak_rss",
        # what a smaller card must hold: the allocator's cached blocks on top of the live tensors
        **({"peak_reserved_bytes": torch.cuda.max_memory_reserved()} if on_gpu else {}),
        "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
        "completion_tokens": preset.new_tokens, "gradient_checkpointing": bool(args.gradient_checkpointing),
    }


def bench_quant(preset: Preset, quant: str, device: str, only: set[str]) -> dict:
    """Forward overhead, rollout speed and one GRPO step for one base precision ("nf4" or "bf16")."""
    model, tokenizer = load(preset, quant == "nf4", device)
    out: dict = {"dtype": "nf4" if quant == "nf4" else str(model.dtype).removeprefix("torch.")}
    start = time.perf_counter()
    model = tinylora.apply_tiny_lora(model, u=U, rank=RANK)
    out["apply_tiny_lora_s"] = time.perf_counter() - start
    if "forward" in only:
        out["forward"] = bench_forward(model, preset, device)
    if "rollout" in only:
        out["rollout"] = bench_rollout(model, preset, device)
    if "grpo_step" in only:
        if device == "cpu":
            modeling.disable_cpu_bf16_kernel(model)  # bnb's CPU fast path, cached by the forwards above, breaks backward
        out["grpo_step"] = bench_grpo_step(model, tokenizer, preset, device)
    del model
    free(device)
    if "forward" in only:
        out["lora_forward"] = bench_lora_forward(preset, quant == "nf4", device)
    return out
