"""TinyLoRA: train a handful of numbers on top of a frozen (bf16 or 4-bit NF4) Qwen model.

For every targeted projection W (q, k, v, o, gate, up, down; never lm_head or embeddings):

    W' = W + ΔW,   ΔW = U_r Σ_r (Σ_i v_i P_i) V_rᵀ = B R A,   R = Σ_i v_i P_i

with U_r, Σ_r, V_r the rank-r truncated SVD of the frozen (dequantized) weight, stored as A = V_rᵀ (r, in) and
B = U_r Σ_r (out, r); P_i fixed random r×r matrices (u of them); v (u,) the only trainable tensor, fp32 and zero
at the start, so the adapted model starts identical to the base. With tie="all" one v is shared by every module:
u numbers in total (32 by default) for the whole model (Morris et al., "Learning to Reason in 13 Parameters").

This builds on PEFT's TinyLoRA tuner, so the result is a real `PeftModel` that TRL, `save_pretrained`,
`PeftModel.from_pretrained` and `merge_and_unload` understand. PEFT lacks two things we need, added here at the
narrowest seam (the tuner's module factory and its pre-injection hook, see `TinyLoraModel`):
  * a bitsandbytes 4-bit layer (stock PEFT creates v in the weight's uint8 dtype and SVDs the packed bytes);
  * a fast truncated SVD (stock PEFT runs a full SVD of every weight: minutes for a 3B model on CPU).
Our layers also keep the r×r middle in fp32 whatever the model was cast to, cache their cast factors between writes
to v, and `export_lora` writes an adapter as the exact rank-r LoRA it is. PEFT's own TinyLoRA tests run against
this tuner in CI (.ci/peft_conformance.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from peft import PeftModel, TinyLoraConfig, get_peft_model
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tinylora import layer as peft_layer
from peft.tuners.tinylora import model as peft_model
from peft.utils import PeftType
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from paths import replaced_atomically

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TIE_MODES = ("all", "layer", "structured", "module", "groups:G")
META_FILE = "tinylora_meta.json"
EXACT_SVD_MAX_DIM = 512  # below this a full SVD is cheaper and exact; above it the randomized one is used
SVD_OVERSAMPLE = 8
SVD_POWER_ITERS = 6
SVD_SEED = 0


class TinyLoraError(ValueError):
    """A bad TinyLoRA argument or an adapter that does not fit the model; the message says what to change."""


# transformers 5 deprecated `model.is_gradient_checkpointing`, which PEFT's PeftModel (and TRL's generation, see
# training.grpo_trainer) still read: a FutureWarning the user cannot act on, ignored only where they read it.
CHECKPOINTING_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Build a PeftModel without transformers' `is_gradient_checkpointing` FutureWarning (that one alone)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CHECKPOINTING_DEPRECATION, category=FutureWarning)
        yield


# ----------------------------------------------------------------------------------------------------- the SVD
def truncated_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` SVD of `weight` (out, in) in fp32: U (out, r), S (r,), Vh (r, in).

    Large matrices use PyTorch's randomized SVD (Halko et al.; oversampling and power iterations), seeded so that
    the factors are reproducible; small ones use the exact SVD. Signs are normalised (largest |U| entry of each
    column positive) so both methods give the same factors up to numerical error.
    """
    w = weight.float()  # (out, in)
    if min(w.shape) <= EXACT_SVD_MAX_DIM:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    else:
        devices = [w.device] if w.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(SVD_SEED)
            U, S, V = torch.svd_lowrank(w, q=rank + SVD_OVERSAMPLE, niter=SVD_POWER_ITERS)
        U, S, Vh = U[:, :rank], S[:rank], V[:, :rank].T
    sign = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))  # (1, r)
    sign[sign == 0] = 1
    return (U * sign).contiguous(), S.contiguous(), (Vh * sign.T).contiguous()


# ------------------------------------------------------------------------------------------------- the layers
class WriteCounter:
    """Counts optimizer steps process-wide (and explicit writes to v): part of every layer's cache key.

    A hook on `Optimizer.step` sees every update however the optimizer writes (fused AdamW updates v without
    bumping its version counter, so the counter alone cannot tell the cache that v changed).
    """

    def __init__(self) -> None:
        self.count = 0

    def bump(self, *_) -> None:
        self.count += 1


V_WRITES = WriteCounter()
register_optimizer_step_post_hook(V_WRITES.bump)


class TinyLoraLinear(peft_layer.Linear):
    """PEFT's dense TinyLoRA layer with a truncated SVD and a forward that keeps v (and R) in fp32."""

    def dense_weight(self) -> torch.Tensor:
        """The frozen weight as a float matrix (out, in)."""
        return self.get_base_layer().weight.data

    def _init_svd(self, adapter_name: str, r: int, fan_in_fan_out: bool) -> None:
        U, S, Vh = truncated_svd(self.dense_weight(), r)  # (out, r), (r,), (r, in)
        # The paper's (and LoRA-XS's) split, ΔW = (U Σ) R Vᵀ; stock PEFT puts √Σ on each side, which is another
        # parameterisation of v. Same files either way, so stock PEFT loads these A and B unchanged.
        # A and B stay fp32 (a few KB per module): the forward casts them to the activation dtype.
        self.tinylora_A[adapter_name] = Vh  # (r, in)
        self.tinylora_B[adapter_name] = (U * S[None, :]).contiguous()  # (out, r)
        self.r[adapter_name] = S.numel()

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """base(x) + B (R (A x)): the tiny middle (r, r) in fp32 whatever dtype v, A, B or x were cast to."""
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)  # (batch, seq, out)
        if self.disable_adapters or self.merged:
            return result
        grad = torch.is_grad_enabled()
        for name in self.active_adapters:
            f = self.factors(name, x.dtype, result.dtype, x.device)
            if f is None:
                continue  # not one of ours (another tuner's adapter on the same layer)
            dropped = x if f.dropout is None else f.dropout(x)  # (batch, seq, in)
            # A xᵀ rather than x Aᵀ: the same product, but a GEMM with r rows runs 2-5x faster on CPU BLAS than one
            # with r columns (224 tokens of width 576 at rank 2: 7 against 35 µs), most of the adapter's cost
            h_t = torch.mm(f.A, dropped.reshape(-1, dropped.shape[-1]).T)  # (r, tokens)
            right = f.BR_t  # (r, out): R already folded into B
            if grad and f.v.requires_grad:  # v's gradient is wanted: R is built from v, a separate fp32 factor
                R = (f.v.to(f.P_flat.dtype) @ f.P_flat).view(f.A.shape[0], -1)  # (r, r), in v's autograd graph
                h_t = (R @ h_t.to(R.dtype)).to(result.dtype)  # (r, tokens): the tiny middle in fp32
                right = f.B_t  # (r, out)
            flat = result.shape[:-1].numel(), result.shape[-1]
            if (grad and (result.requires_grad or h_t.requires_grad)) or not result.is_contiguous():
                # out of place: the in-place form would be safe for nn.Linear (its backward does not keep its
                # output) but not for every base layer a PEFT user may bring
                result = torch.addmm(result.reshape(flat), h_t.T, right).view(result.shape)  # (batch, seq, out)
            else:  # decoding and scoring: one GEMM accumulating into the base output, no (tokens, out) temporary
                result.view(flat).addmm_(h_t.T, right)  # (tokens, out), in place
        return result if result.dtype == x.dtype else result.to(x.dtype)  # as stock PEFT: x's dtype comes out

    def _apply(self, fn, *args, **kwargs):
        """`.to()`, `.half()`, `.cuda()` replace A, B, P and v: forget the cast factors built from the old ones."""
        self.__dict__.pop("_tinylora_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def update_layer(self, adapter_name: str, *args, **kwargs) -> None:
        """PEFT's (re)initialisation of an adapter: new A, B, P and v objects, so the cached factors are stale."""
        self.__dict__.get("_tinylora_cache", {}).pop(adapter_name, None)
        super().update_layer(adapter_name, *args, **kwargs)

    def factors(self, name: str, x_dtype: torch.dtype, out_dtype: torch.dtype, device: torch.device) -> Factors | None:
        """The adapter's factors cast for this call (None if `name` is not a TinyLoRA adapter of this layer),
        computed once per write to v: A for x, Bᵀ and (B·R)ᵀ for the output, R folded into B in fp32 once, so
        decoding and scoring run two thin GEMMs.

        Casting A and B and rebuilding R on every call cost about 10% of a forward. Checking the cache must be cheap
        too (a projection of bench/run.py's CPU preset computes in 0.13-1.8 ms, and looking v, A, B and P up in
        PEFT's module dicts took 6 µs), so it reads only counters of the tensors it was built from. It is
        rebuilt when v, A, B or P are written in place (their version counters), replaced by `.data =` (their
        storage) or by `.to()`/`.half()` (`_apply`) or by PEFT re-adding the adapter (`update_layer`), when the layer
        is pointed at another v (`_rewire`: the group key), or after an optimizer step (`V_WRITES`: fused AdamW writes
        v without bumping its version counter). Assigning a new tensor into PEFT's dicts by hand
        (`layer.tinylora_A[name] = t`) is the one change it does not see: write in place or go through PEFT.

        Under `torch.compile` there is no cache: Dynamo cannot trace storage addresses and version counters (a
        graph break at every projection), and a compiled graph reads v, A, B and P afresh on each call anyway, so
        it builds the factors itself, a few tiny ops per projection.
        """
        if torch.compiler.is_compiling():
            return self._build_factors(name, x_dtype, out_dtype, device, key=None)
        cache = self.__dict__.setdefault("_tinylora_cache", {})
        f = cache.get(name)
        key = (x_dtype, out_dtype, device, V_WRITES.count, self._tinylora_v_key.get(name))
        if f is not None and f.key == key and f.versions == _storage_versions(f.sources):
            return f
        f = self._build_factors(name, x_dtype, out_dtype, device, key)
        if f is not None:
            cache[name] = f
        return f

    def _build_factors(self, name: str, x_dtype: torch.dtype, out_dtype: torch.dtype, device: torch.device,
                       key: tuple | None) -> Factors | None:
        """`factors` without the cache; `key` None (compiling) leaves out the counters a cache check reads."""
        if name not in self.tinylora_A:
            return None
        v, A, B, P = layer_v(self, name), self.tinylora_A[name], self.tinylora_B[name], self.tinylora_P[name]
        middle = torch.promote_types(x_dtype, torch.float32)  # fp32 (fp64 stays fp64)
        P_flat = P.detach().to(device, middle).reshape(P.shape[0], -1)  # (u, r·r)
        with torch.no_grad():
            R = (v.to(device, middle) @ P_flat).view(P.shape[1:])  # (r, r)
            BR = (B.to(device, middle) @ R).to(out_dtype)  # (out, r)
        dropout = self.tinylora_dropout[name]
        versions = () if key is None else _storage_versions((v, A, B, P))
        return Factors(key, (v, A, B, P), versions, A.to(device, x_dtype), P_flat, B.to(device, out_dtype).T, BR.T,
                       None if isinstance(dropout, nn.Identity) else dropout)


class Factors(NamedTuple):
    """One adapter's factors as a forward uses them, and what they were built from."""

    key: tuple | None  # (x dtype, output dtype, device, V_WRITES.count, v's group key); None when compiled
    sources: tuple[torch.Tensor, ...]  # (v, A, B, P) as stored in the layer
    versions: tuple[int, ...]  # their storage addresses and write counts when the factors were built (cached only)
    A: torch.Tensor  # (r, in), x's dtype
    P_flat: torch.Tensor  # (u, r·r), fp32
    B_t: torch.Tensor  # (r, out), the output's dtype
    BR_t: torch.Tensor  # (r, out): (B R)ᵀ, R folded in fp32 at build time
    dropout: nn.Module | None  # None when it is the identity

    @property
    def v(self) -> nn.Parameter:
        """The trainable v (u,) itself, the first of the sources."""
        return self.sources[0]


def _storage_versions(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    """(storage address, in-place write count) of each tensor: changes when one is replaced or written in place."""
    return tuple(n for t in tensors for n in (t.data_ptr(), 0 if t.is_inference() else t._version))


class TinyLoraLinear4bit(TinyLoraLinear):
    """The same layer on a bitsandbytes NF4 `Linear4bit`: SVD of the dequantized weight; no in-place merge."""

    def dense_weight(self) -> torch.Tensor:
        import bitsandbytes.functional as bnbf

        weight = self.get_base_layer().weight
        return bnbf.dequantize_4bit(weight.data, weight.quant_state)  # (out, in)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError(
            "merging into NF4 weights would re-quantize away the update; use tinylora.export_merged(model, dir)"
        )


def peft_group_index(index: int, n_modules: int, weight_tying: float) -> int:
    """PEFT's rule for which shared v the `index`-th target module uses (contiguous groups)."""
    n_groups = max(1, round(n_modules * (1.0 - weight_tying)))
    group_size = max(1, n_modules // n_groups)
    return min(index // group_size, n_groups - 1)


class TinyLoraModel(peft_model.TinyLoraModel):
    """PEFT's TinyLoRA tuner, extended at two seams: fp32 v created before injection, and the layer factory."""

    def _pre_injection_hook(self, model: nn.Module, config: TinyLoraConfig, adapter_name: str) -> None:
        super()._pre_injection_hook(model, config, adapter_name)
        # Stock PEFT creates each v lazily in the target weight's dtype (uint8 for NF4: an error; bf16: rounding).
        # Creating them here in fp32 means PEFT finds them and never creates its own.
        n_modules = len(self._build_target_key_mapping(config))
        groups = sorted({peft_group_index(i, n_modules, config.weight_tying) for i in range(n_modules)})
        vs = nn.ParameterDict({str(g): nn.Parameter(torch.zeros(config.u, dtype=torch.float32)) for g in groups})
        if config.init_weights == "uniform":
            for v in vs.values():
                nn.init.uniform_(v, -config.init_v_bound, config.init_v_bound)
        self.tinylora_v[adapter_name] = vs

    @staticmethod
    def _create_new_module(config, tinylora_v, v_key, adapter_name, target, **kwargs):
        base = target.get_base_layer() if isinstance(target, peft_layer.TinyLoraLayer) else target
        if type(base).__module__.startswith("bitsandbytes."):  # NF4: a dense model never needs bitsandbytes
            import bitsandbytes as bnb

            if isinstance(base, bnb.nn.Linear4bit):
                return TinyLoraLinear4bit(target, tinylora_v, v_key, adapter_name, config, **kwargs)
        if type(base) is nn.Linear:
            return TinyLoraLinear(target, tinylora_v, v_key, adapter_name, config, **kwargs)
        return peft_model.TinyLoraModel._create_new_module(config, tinylora_v, v_key, adapter_name, target, **kwargs)


# Register our tuner for PeftType.TINYLORA so get_peft_model and PeftModel.from_pretrained build through it.
PEFT_TYPE_TO_TUNER_MAPPING[PeftType.TINYLORA] = TinyLoraModel


# --------------------------------------------------------------------------------------------------- tie modes
@dataclass(frozen=True)
class TiePlan:
    """How target modules share v: a PEFT weight_tying value plus, for non-contiguous modes, an explicit map."""

    mode: str
    weight_tying: float
    group_of: dict[str, int] | None  # module name -> group, only where PEFT's contiguous rule cannot express it


def target_module_names(model: nn.Module) -> list[str]:
    """Targeted projections in PEFT's injection order (model.named_modules)."""
    return [n for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in TARGET_MODULES and isinstance(m, nn.Linear)]


def _layer_of(name: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'model.layers.3' (the decoder block the module lives in)."""
    return name.rsplit(".", 2)[0]


def plan_tie(names: list[str], tie: str) -> TiePlan:
    """Translate a tie mode into PEFT's weight_tying (and an explicit map where contiguous groups cannot do it)."""
    n = len(names)
    if n == 0:
        raise TinyLoraError(f"no target modules ({', '.join(TARGET_MODULES)}) found in this model")
    if tie == "all":
        return TiePlan("all", 1.0, None)
    if tie == "module":
        return TiePlan("module", 0.0, None)
    if tie == "structured":
        types = sorted({name.rsplit(".", 1)[-1] for name in names}, key=TARGET_MODULES.index)
        group_of = {name: types.index(name.rsplit(".", 1)[-1]) for name in names}
        return TiePlan("structured", 1.0 - len(types) / n, group_of)
    if tie == "layer":
        layers = list(dict.fromkeys(_layer_of(name) for name in names))
        weight_tying = 1.0 - len(layers) / n
        group_of = {name: layers.index(_layer_of(name)) for name in names}
        contiguous = [peft_group_index(i, n, weight_tying) for i in range(n)]
        return TiePlan("layer", weight_tying, None if contiguous == list(group_of.values()) else group_of)
    if tie.startswith("groups:"):
        try:
            n_groups = int(tie.split(":", 1)[1])
        except ValueError:
            n_groups = 0
        if not 1 <= n_groups <= n:
            raise TinyLoraError(f"tie '{tie}': the number of groups must be an integer from 1 to {n}")
        return TiePlan(tie, 1.0 - n_groups / n, None)
    raise TinyLoraError(f"unknown tie mode '{tie}'; choose one of {', '.join(TIE_MODES)}")


def plan_budget(budget: int, n_modules: int, n_layers: int, tie: str = "all") -> tuple[int, str]:
    """Pick (u, tie) so the adapter has exactly `budget` trainable numbers, e.g. 13 -> (13, "all").

    The count is u × (number of groups): "all" has 1 group, "structured" 7, "layer" one per decoder block,
    "module" one per projection, "groups:G" G. Raises with the nearest feasible budgets when it does not divide.
    """
    groups = {"all": 1, "structured": len(TARGET_MODULES), "layer": n_layers, "module": n_modules}
    n_groups = int(tie.split(":", 1)[1]) if tie.startswith("groups:") else groups.get(tie)
    if n_groups is None:
        raise TinyLoraError(f"unknown tie mode '{tie}'; choose one of {', '.join(TIE_MODES)}")
    if budget < n_groups or budget % n_groups:
        lower, upper = max(1, budget // n_groups) * n_groups, (budget // n_groups + 1) * n_groups
        raise TinyLoraError(f"budget {budget} is not a multiple of tie '{tie}' groups ({n_groups}); try {lower} or {upper}")
    return budget // n_groups, tie


# ------------------------------------------------- PEFT's private group key: the only two functions that touch it
# PEFT keeps which shared v a layer uses in the private `layer._tinylora_v_key[adapter]` (reworked between PEFT
# releases); tests/test_tinylora.py::test_v_group_key_seam names the PEFT version when it moves.
def layer_v(module: peft_layer.TinyLoraLayer, adapter: str = "default") -> nn.Parameter:
    """The v (u,) this layer uses for `adapter`."""
    return module.tinylora_v[adapter][module._tinylora_v_key[adapter]]


def _rewire(model: PeftModel, group_of: dict[str, int], adapter: str = "default") -> None:
    """Point each layer at the v of its group (for tie modes PEFT's contiguous rule cannot express)."""
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, peft_layer.TinyLoraLayer) and name in group_of:
            module._tinylora_v_key[adapter] = str(group_of[name])


# ------------------------------------------------------------------------------------------------ public API
def _check_args(u: int, rank: int) -> None:
    if not isinstance(u, int) or isinstance(u, bool) or u < 1:
        raise TinyLoraError(f"u must be a positive integer (got {u!r})")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise TinyLoraError(f"rank must be a positive integer (got {rank!r})")


def ensure_v_fp32(model: PeftModel) -> None:
    """Keep v (or a LoRA contrast's factors: every trainable tensor) in fp32, in place (same Parameter objects, so
    optimizers keep tracking them).

    bf16 rounds away the tiny updates GRPO makes (a fault of the seed project), and TRL casts the trainable
    parameters of 4-bit models to bf16 for QLoRA's sake.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    V_WRITES.bump()


def apply_tiny_lora(
    model: nn.Module, u: int = 32, rank: int = 2, seed: int = 42, tie: str = "all", dropout: float = 0.0
) -> PeftModel:
    """Wrap `model` (dense or NF4) in a TinyLoRA PeftModel; v starts at zero so outputs are unchanged."""
    _check_args(u, rank)
    names = target_module_names(model)
    plan = plan_tie(names, tie)
    config = TinyLoraConfig(
        r=rank,
        u=u,
        weight_tying=plan.weight_tying,
        projection_seed=seed,
        save_projection=True,
        target_modules=list(TARGET_MODULES),
        tinylora_dropout=dropout,
        init_weights=True,
    )
    with peft_quietly():
        peft = get_peft_model(model, config)
    if plan.group_of:
        _rewire(peft, plan.group_of)
    ensure_v_fp32(peft)
    peft.tinylora_tie = plan  # kept for save_tiny_lora's metadata
    return peft


def apply_lora(model: nn.Module, rank: int = 1) -> PeftModel:
    """The parameter-count contrast: a stock PEFT LoRA of `rank` on the same seven projections (r · (in + out)
    numbers per projection, about 550,000 at rank 1 on Qwen2.5-Coder-0.5B against TinyLoRA's 32), lora_alpha = rank
    (scale 1), B = 0 at the start so the model starts unchanged, factors in fp32."""
    from peft import LoraConfig

    if rank < 1:
        raise TinyLoraError(f"LoRA rank must be at least 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
                        init_lora_weights=True)
    with peft_quietly():
        peft = get_peft_model(model, config)
    ensure_v_fp32(peft)
    return peft


def is_tiny_lora(model: nn.Module) -> bool:
    """Whether `model` carries TinyLoRA's shared v (and not a stock LoRA contrast)."""
    return hasattr(getattr(model, "base_model", None), "tinylora_v")


def trained_vector(model: PeftModel) -> torch.Tensor:
    """The numbers training moves, flattened into one fp32 CPU copy: TinyLoRA's v (each shared vector once) or a
    LoRA contrast's A and B, trainable or loaded frozen for evaluation. What a run learned, and what tells a
    sampling copy whether the policy moved since it was built."""
    if is_tiny_lora(model):
        tensors = list(model.base_model.tinylora_v["default"].values())
    else:
        tensors = [p for name, p in model.named_parameters() if "lora_A" in name or "lora_B" in name]
    return torch.cat([t.detach().float().flatten().cpu() for t in tensors])


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalars (shared parameters counted once)."""
    seen = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    return sum(seen.values())


def set_tiny_lora_v(model: PeftModel, values: dict[str, torch.Tensor]) -> None:
    """Overwrite the trainable vectors in place (by group key, as tiny_lora_v returns them)."""
    vs = model.base_model.tinylora_v["default"]
    if set(values) != set(vs.keys()):
        raise TinyLoraError(f"v groups {sorted(values)} do not match the model's {sorted(vs.keys())}")
    with torch.no_grad():
        for key, value in values.items():
            vs[key].copy_(value)
    V_WRITES.bump()


def tiny_lora_v(model: PeftModel) -> dict[str, torch.Tensor]:
    """The trainable vectors by group key (a copy): what the run actually learned."""
    return {k: v.detach().clone() for k, v in model.base_model.tinylora_v["default"].items()}


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path: the manifest adapters and checkpoints carry."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def damaged_file(directory: Path, hashes: dict[str, str]) -> str | None:
    """The first file of `hashes` that is missing or altered under `directory` (None when all match)."""
    for name, digest in hashes.items():
        path = directory / name
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return name
    return None


def save_tiny_lora(model: PeftModel, out_dir: str | os.PathLike, extra_meta: dict | None = None) -> Path:
    """Save the adapter in PEFT's format (v, A, B and P, so loading replays no RNG and no SVD), atomically.

    Written to a temp dir and renamed, with `tinylora_meta.json` (tie mode and group map, trainable count, sha256
    of each file): a crash never leaves a half-written adapter under `out_dir`.
    """
    out_dir = Path(out_dir)
    with replaced_atomically(out_dir) as tmp:
        model.save_pretrained(tmp)
        plan: TiePlan | None = getattr(model, "tinylora_tie", None)
        meta = {
            "tie": plan.mode if plan else "peft",
            "group_of": plan.group_of if plan else None,
            "trainable": count_trainable(model),
            "files": file_hashes(tmp),
            **(extra_meta or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return out_dir


def read_meta(adapter_dir: str | os.PathLike) -> dict:
    """The adapter's metadata (empty for adapters made by stock PEFT)."""
    path = Path(adapter_dir) / META_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def verify_adapter_files(adapter_dir: str | os.PathLike) -> None:
    """Raise TinyLoraError when the adapter is missing, truncated or altered (sha256 against its metadata)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise TinyLoraError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)")
    damaged = damaged_file(adapter_dir, read_meta(adapter_dir).get("files", {}))
    if damaged:
        raise TinyLoraError(f"adapter file {adapter_dir / damaged} is missing or corrupted (sha256 mismatch)")


def load_adapter(base_model: nn.Module, adapter_dir: str | os.PathLike) -> PeftModel:
    """Load a trained adapter for evaluation: TinyLoRA (load_tiny_lora's checks) or a stock LoRA contrast."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if config_path.exists() and json.loads(config_path.read_text()).get("peft_type") == PeftType.LORA.value:
        verify_adapter_files(adapter_dir)
        return _from_pretrained(base_model, adapter_dir, trainable=False)
    return load_tiny_lora(base_model, adapter_dir)


def _from_pretrained(base_model: nn.Module, adapter_dir: str | os.PathLike, trainable: bool) -> PeftModel:
    """PEFT's loader, with a size mismatch (an adapter for another base model) as a TinyLoraError."""
    try:
        with peft_quietly():
            return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=trainable)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines()]
        reason = next((line for line in lines if "size mismatch" in line), lines[0])
        raise TinyLoraError(f"adapter {adapter_dir} does not fit this base model: {reason}") from None


def load_tiny_lora(base_model: nn.Module, adapter_dir: str | os.PathLike, trainable: bool = False) -> PeftModel:
    """Load an adapter (ours or stock PEFT TinyLoRA) onto a dense or NF4 base; its u/rank/tie come from the files.

    Every saved tensor is checked against the loaded model, so an adapter for another base model fails loudly
    instead of loading half its weights.
    """
    verify_adapter_files(adapter_dir)
    model = _from_pretrained(base_model, adapter_dir, trainable)
    meta = read_meta(adapter_dir)
    if meta.get("group_of"):
        _rewire(model, meta["group_of"])
    ensure_v_fp32(model)
    config = model.peft_config["default"]
    model.tinylora_tie = TiePlan(meta.get("tie", "peft"), config.weight_tying, meta.get("group_of"))
    _check_loaded(model, Path(adapter_dir))
    return model


def _check_loaded(model: PeftModel, adapter_dir: Path) -> None:
    """Compare every saved tensor with the loaded model's copy: PEFT only warns about keys it could not place."""
    from safetensors.torch import load_file

    vs = model.base_model.tinylora_v["default"]
    base = model.get_base_model()
    for key, saved in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        if key.startswith("base_model.tinylora_v."):
            loaded = vs[key.rsplit(".", 1)[1]] if key.rsplit(".", 1)[1] in vs else None
        else:
            module_name, buffer = key.removeprefix("base_model.model.").rsplit(".", 1)
            buffers = getattr(base.get_submodule(module_name), buffer, None) if _has(base, module_name) else None
            loaded = buffers["default"] if buffers is not None and "default" in buffers else None
        if loaded is None or not torch.equal(loaded.detach().float().cpu(), saved.float()):
            raise TinyLoraError(f"adapter {adapter_dir} does not fit this base model: {key} did not load")


def _has(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def delta_weight(module: peft_layer.TinyLoraLayer, adapter: str = "default") -> torch.Tensor:
    """ΔW = B R A in fp32 (out, in) for one adapted module (PEFT's own product; our A and B are fp32)."""
    return module.get_delta_weight(adapter).float()


def adapted_modules(model: PeftModel) -> dict[str, TinyLoraLinear]:
    """Every TinyLoRA layer of the model by its name in the base model ('model.layers.0.self_attn.q_proj')."""
    return {name: m for name, m in model.get_base_model().named_modules() if isinstance(m, TinyLoraLinear)}


def export_lora(model: PeftModel, out_dir: str | os.PathLike) -> Path:
    """Write the adapter as a standard rank-r PEFT LoRA adapter that every LoRA runtime can serve exactly.

    ΔW = B R A has rank r, so it is a LoRA with lora_A = A (r, in), lora_B = B R (out, r) and scaling
    lora_alpha / r = 1, all fp32: no SVD, no merge, no rounding of W. Works for every tie mode (each module's own R)
    and for NF4 bases (A and B come from the dequantized weight; serve on the unquantized base, whose weight the
    NF4 one approximates). Stock `PeftModel.from_pretrained(base, out_dir)` loads it.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    modules = adapted_modules(model)
    if not modules:
        raise TinyLoraError("export_lora: this model has no TinyLoRA layers")
    state: dict[str, torch.Tensor] = {}
    ranks = set()
    for name, module in modules.items():
        with torch.no_grad():
            R = module._compute_R("default").float()  # (r, r)
            A = module.tinylora_A["default"].float()  # (r, in)
            BR = module.tinylora_B["default"].float() @ R  # (out, r)
        state[f"base_model.model.{name}.lora_A.weight"] = A.cpu().contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = BR.cpu().contiguous()
        ranks.add(A.shape[0])
    if len(ranks) != 1:
        raise TinyLoraError(f"export_lora: modules have different ranks {sorted(ranks)} (a matrix smaller than r)")
    rank = ranks.pop()
    tiny = model.peft_config["default"]
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", task_type=tiny.task_type,
                        target_modules=sorted({name.rsplit(".", 1)[-1] for name in modules}),
                        base_model_name_or_path=tiny.base_model_name_or_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(state, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


MERGE_KEPT_WARN = 0.9  # warn when a module's merged weights keep less of ΔW than this
MERGE_REPORT = "tinylora_merge.json"


def base_float_dtype(model: PeftModel) -> torch.dtype:
    """The dtype a merge should write: the dense base weights' own (fp32 stays fp32), bf16 for NF4 bases."""
    modules = list(adapted_modules(model).values())
    if any(isinstance(m, TinyLoraLinear4bit) for m in modules):
        return torch.bfloat16
    return modules[0].get_base_layer().weight.dtype if modules else torch.bfloat16


def kept_fraction(merged: torch.Tensor, weight: torch.Tensor, delta: torch.Tensor) -> float:
    """How much of ΔW the merged weights carry: 1 − ‖(merged − W) − ΔW‖ / ‖ΔW‖, in [0, 1] (1 when ΔW = 0).

    A cast that rounds W + ΔW back to W keeps 0; an exact merge keeps 1.
    """
    norm = delta.norm()
    if norm == 0:
        return 1.0
    return max(0.0, 1.0 - ((merged.to(weight.dtype) - weight) - delta).norm().item() / norm.item())


def export_merged(model: PeftModel, out_dir: str | os.PathLike, dtype: torch.dtype | None = None,
                  tokenizer=None) -> Path:
    """Write a plain HF model with ΔW merged into the weights (NF4 bases are dequantized), loadable anywhere.

    `dtype` defaults to the base's own float dtype (fp32 stays fp32; NF4 becomes bf16). TinyLoRA's update is tiny
    next to W and bf16 keeps about three significant digits, so a low-precision merge can silently drop what was
    learned: the share of ΔW each module keeps is measured, written to `tinylora_merge.json` beside the weights,
    and a warning names `export_lora` (exact at any precision) when a module keeps less than 90%.
    The adapted model itself is left untouched.
    """
    from transformers import AutoModelForCausalLM

    dtype = dtype or base_float_dtype(model)
    base = model.get_base_model()
    modules = adapted_modules(model)
    state: dict[str, torch.Tensor] = {}
    kept: dict[str, float] = {}
    for name, module in modules.items():
        weight, delta = module.dense_weight().float(), delta_weight(module)  # (out, in) each
        merged = (weight + delta).to(dtype)  # (out, in)
        kept[name] = kept_fraction(merged, weight, delta)
        state[f"{name}.weight"] = merged.cpu()
        if module.get_base_layer().bias is not None:
            state[f"{name}.bias"] = module.get_base_layer().bias.detach().to(dtype).cpu()
    for key, tensor in base.state_dict().items():
        if not any(key.startswith(name + ".") for name in modules) and tensor.is_floating_point():
            state[key] = tensor.detach().to(dtype).cpu()
    config = base.config.__class__.from_dict(base.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    merged_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    merged_model.load_state_dict(state, strict=True)
    merged_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    out_dir = Path(out_dir)
    (out_dir / MERGE_REPORT).write_text(json.dumps({"dtype": str(dtype).removeprefix("torch."), "kept": kept}, indent=1))
    lossy = {name: share for name, share in kept.items() if share < MERGE_KEPT_WARN}
    if lossy:
        worst = min(lossy, key=lossy.get)
        warnings.warn(f"export_merged: {len(lossy)} of {len(kept)} modules keep less than {MERGE_KEPT_WARN:.0%} of "
                      f"their update in {dtype} (worst {worst}: {lossy[worst]:.0%}; see {out_dir / MERGE_REPORT}). "
                      "tinylora.export_lora(model, dir) writes the update exactly as a standard LoRA adapter",
                      stacklevel=2)
    return out_dir
