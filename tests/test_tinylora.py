"""TinyLoRA adapter: the paper's formula, exact parameter counts, 4-bit training, and PEFT-format round trips."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from peft.tuners.tinylora import layer as peft_layer
from peft.tuners.tinylora import model as peft_model

import modeling
import tinylora

IDS = torch.tensor([[5, 17, 99, 3, 42, 7, 250, 11]])


@pytest.fixture(scope="module")
def tiny_path() -> str:
    return str(modeling.tiny_model_dir())


def dense(path: str) -> torch.nn.Module:
    return modeling.load_model(path, quant=False)[0].eval()


def nf4(path: str) -> torch.nn.Module:
    return modeling.load_model(path, quant=True)[0].eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def set_v(model, seed: int = 1, scale: float = 0.5) -> None:
    gen = torch.Generator().manual_seed(seed)
    current = tinylora.tiny_lora_v(model)
    tinylora.set_tiny_lora_v(model, {k: torch.randn(v.shape, generator=gen) * scale for k, v in current.items()})


def layers(model) -> dict[str, tinylora.TinyLoraLinear]:
    return {n: m for n, m in model.get_base_model().named_modules() if isinstance(m, tinylora.TinyLoraLinear)}


@pytest.mark.parametrize("loader", [dense, nf4])
def test_zero_v_is_identity(tiny_path, loader):
    base = logits(loader(tiny_path))
    adapted = tinylora.apply_tiny_lora(loader(tiny_path), u=32)
    assert torch.equal(logits(adapted), base)
    assert all(v.dtype == torch.float32 and not v.any() for v in tinylora.tiny_lora_v(adapted).values())


def with_known_spectrum(model: torch.nn.Module) -> torch.nn.Module:
    """Give every target weight a well-separated spectrum (1, 1/2, 1/3, …) like trained weights have.

    Random init weights have nearly equal top singular values, whose singular vectors no fp32 SVD pins down.
    """
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in tinylora.target_module_names(model):
            weight = model.get_submodule(name).weight
            U, _ = torch.linalg.qr(torch.randn(weight.shape[0], min(weight.shape), generator=gen, dtype=torch.float64))
            V, _ = torch.linalg.qr(torch.randn(weight.shape[1], min(weight.shape), generator=gen, dtype=torch.float64))
            spectrum = 1.0 / torch.arange(1, min(weight.shape) + 1, dtype=torch.float64)
            weight.copy_(U @ torch.diag(spectrum) @ V.T)
    return model


def test_delta_matches_float64_formula(tiny_path):
    model = tinylora.apply_tiny_lora(with_known_spectrum(dense(tiny_path)), u=5, rank=2)
    set_v(model)
    v = model.base_model.tinylora_v["default"]["0"].double()
    for name, module in layers(model).items():
        W = module.get_base_layer().weight.double()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        R = torch.einsum("i,ijk->jk", v, module.tinylora_P["default"].double())  # Σ_i v_i P_i, (r, r)
        # SVD signs are arbitrary: align float64's with ours column by column before comparing.
        sign = torch.sign((U[:, :2] * module.tinylora_B["default"].double()).sum(0))
        expected = (U[:, :2] * sign) @ torch.diag(S[:2]) @ R @ (Vh[:2].T * sign).T  # U_r Σ_r R V_rᵀ
        got = tinylora.delta_weight(module).double()
        assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max().item()), name  # fp32 SVD
        x = torch.randn(3, W.shape[1])
        with torch.no_grad():
            out = module(x) - module.get_base_layer()(x)
        assert torch.allclose(out.double(), x.double() @ expected.T, atol=1e-5), name


def test_forward_never_builds_dense_delta(tiny_path, monkeypatch):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    set_v(model)

    def forbidden(*_, **__):
        raise AssertionError("forward built a dense ΔW")

    monkeypatch.setattr(peft_layer.TinyLoraLayer, "get_delta_weight", forbidden)
    monkeypatch.setattr(tinylora, "delta_weight", forbidden)
    logits(model)


@pytest.mark.parametrize(
    "tie, groups",
    [("all", 1), ("layer", 4), ("structured", 7), ("module", 28), ("groups:3", 3)],
)
def test_trainable_counts_per_tie_mode(tiny_path, tie, groups):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=6, tie=tie)
    assert tinylora.count_trainable(model) == 6 * groups
    assert len(tinylora.tiny_lora_v(model)) == groups


def test_structured_and_layer_groups_follow_their_rule(tiny_path):
    structured = tinylora.apply_tiny_lora(dense(tiny_path), u=2, tie="structured")
    for name, module in layers(structured).items():
        assert module._tinylora_v_key["default"] == str(tinylora.TARGET_MODULES.index(name.rsplit(".", 1)[1]))
    by_layer = tinylora.apply_tiny_lora(dense(tiny_path), u=2, tie="layer")
    for name, module in layers(by_layer).items():
        assert module._tinylora_v_key["default"] == name.split(".layers.")[1].split(".")[0]


def test_gradients_reach_v_only(tiny_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=8)
    set_v(model, scale=0.1)
    model(IDS, labels=IDS).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads) == 1 and next(iter(grads.values())).abs().sum() > 0
    assert tinylora.count_trainable(model) == 8


def test_nf4_path_trains_v(tiny_path):
    model = tinylora.apply_tiny_lora(nf4(tiny_path), u=8)
    assert all(isinstance(m, tinylora.TinyLoraLinear4bit) for m in layers(model).values())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = tinylora.tiny_lora_v(model)["0"]
    model.train()
    model(IDS, labels=IDS).loss.backward()
    opt.step()
    after = tinylora.tiny_lora_v(model)["0"]
    assert after.dtype == torch.float32 and not torch.equal(before, after)


def test_nf4_svd_is_of_the_dequantized_weight(tiny_path):
    model = tinylora.apply_tiny_lora(nf4(tiny_path), u=2)
    for module in layers(model).values():
        W = module.dense_weight().float()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        B = module.tinylora_B["default"]
        assert torch.allclose(B.norm(dim=0), S[:2], rtol=1e-4)


def test_truncated_svd_matches_full_svd_on_a_large_matrix():
    gen = torch.Generator().manual_seed(0)
    out_dim, in_dim = 1536, 1024
    U, _ = torch.linalg.qr(torch.randn(out_dim, in_dim, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(in_dim, in_dim, generator=gen))
    spectrum = 1.0 / torch.arange(1, in_dim + 1).float() ** 0.7  # decays like trained weights
    W = U @ torch.diag(spectrum) @ V.T
    Uf, Sf, Vhf = tinylora.truncated_svd(W, 2)
    Ue, Se, Vhe = torch.linalg.svd(W, full_matrices=False)
    sign = torch.sign((Uf * Ue[:, :2]).sum(0))
    assert (Sf - Se[:2]).abs().max() < 1e-4
    assert (Uf - Ue[:, :2] * sign).abs().max() < 1e-3
    assert (Vhf - Vhe[:2] * sign[:, None]).abs().max() < 1e-3


@pytest.mark.parametrize("loader", [dense, nf4])
def test_save_load_round_trip(tiny_path, tmp_path, loader):
    model = tinylora.apply_tiny_lora(loader(tiny_path), u=4, tie="structured")
    set_v(model)
    expected = logits(model)
    tinylora.save_tiny_lora(model, tmp_path / "adapter")
    loaded = tinylora.load_tiny_lora(loader(tiny_path), tmp_path / "adapter")
    assert torch.equal(logits(loaded), expected)
    assert tinylora.read_meta(tmp_path / "adapter")["trainable"] == 28


def test_corrupted_or_foreign_adapter_is_refused(tiny_path, tmp_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    tinylora.save_tiny_lora(model, tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(tinylora.TinyLoraError, match="corrupted"):
        tinylora.load_tiny_lora(dense(tiny_path), tmp_path / "a")
    with pytest.raises(tinylora.TinyLoraError, match="not an adapter"):
        tinylora.load_tiny_lora(dense(tiny_path), tmp_path / "nothing")


def _run_stock_peft(code: str) -> None:
    """Run `code` in a fresh interpreter that never imports tinylora: plain, unpatched PEFT."""
    prelude = "import torch, json\nfrom peft import PeftModel, TinyLoraConfig, get_peft_model\n"
    prelude += "from transformers import AutoModelForCausalLM\n"
    subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], check=True, timeout=300)


def test_our_adapter_loads_in_stock_peft(tiny_path, tmp_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    set_v(model)
    tinylora.save_tiny_lora(model, tmp_path / "ours")
    _run_stock_peft(
        f"""
        base = AutoModelForCausalLM.from_pretrained({tiny_path!r}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, {str(tmp_path / 'ours')!r}).eval()
        with torch.no_grad():
            torch.save(model(torch.tensor({IDS.tolist()})).logits, {str(tmp_path / 'stock.pt')!r})
        """
    )
    assert torch.allclose(torch.load(tmp_path / "stock.pt"), logits(model), atol=1e-5)


def test_stock_peft_adapter_loads_onto_nf4(tiny_path, tmp_path):
    _run_stock_peft(
        f"""
        base = AutoModelForCausalLM.from_pretrained({tiny_path!r}, dtype=torch.float32)
        config = TinyLoraConfig(r=2, u=6, weight_tying=1.0, init_weights="uniform", init_v_bound=0.5,
                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(base, config)
        model.save_pretrained({str(tmp_path / 'stock')!r})
        deltas = {{n: m.get_delta_weight("default") for n, m in model.get_base_model().named_modules() if hasattr(m, "tinylora_A")}}
        torch.save(deltas, {str(tmp_path / 'deltas.pt')!r})
        """
    )
    loaded = tinylora.load_tiny_lora(nf4(tiny_path), tmp_path / "stock")
    deltas = torch.load(tmp_path / "deltas.pt")
    assert deltas and set(deltas) == set(layers(loaded))
    for name, module in layers(loaded).items():
        assert torch.allclose(tinylora.delta_weight(module), deltas[name], atol=1e-6), name
    assert tinylora.count_trainable(tinylora.load_tiny_lora(nf4(tiny_path), tmp_path / "stock", trainable=True)) == 6


@pytest.mark.parametrize("loader, tol, dtype", [(dense, 1e-4, torch.float32), (nf4, 2e-2, torch.bfloat16)])
def test_merged_export_reproduces_adapted_logits(tiny_path, tmp_path, loader, tol, dtype):
    """Default dtype: the base's own (fp32 stays fp32, NF4 becomes bf16); every module's share of ΔW recorded."""
    from transformers import AutoModelForCausalLM

    model = tinylora.apply_tiny_lora(loader(tiny_path), u=4)
    set_v(model)
    tinylora.export_merged(model, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype="auto").eval()
    assert not hasattr(merged.config, "quantization_config")
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert torch.allclose(logits(merged.float()), logits(model), atol=tol)
    report = json.loads((tmp_path / "merged" / tinylora.MERGE_REPORT).read_text())
    assert set(report["kept"]) == set(layers(model)) and report["dtype"] == str(dtype).removeprefix("torch.")


def test_lossy_merge_warns_and_names_the_lora_export(tiny_path, tmp_path):
    """A small update merged into bf16 weights rounds away; fp32 keeps it. The warning must say so, the other not."""
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    set_v(model, scale=1e-4)
    with pytest.warns(UserWarning, match="export_lora"):
        tinylora.export_merged(model, tmp_path / "bf16", dtype=torch.bfloat16)
    kept = json.loads((tmp_path / "bf16" / tinylora.MERGE_REPORT).read_text())["kept"]
    assert min(kept.values()) < tinylora.MERGE_KEPT_WARN
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tinylora.export_merged(model, tmp_path / "fp32")
    assert min(json.loads((tmp_path / "fp32" / tinylora.MERGE_REPORT).read_text())["kept"].values()) > 0.99  # fp32 rounds too, far less


def test_kept_fraction_measures_the_update():
    W = torch.ones(4, 4, dtype=torch.float64)
    delta = torch.full((4, 4), 1e-4, dtype=torch.float64)
    assert tinylora.kept_fraction(W + delta, W, delta) == pytest.approx(1.0)
    assert tinylora.kept_fraction(W.clone(), W, delta) == 0.0  # rounded away
    assert tinylora.kept_fraction(W + delta / 2, W, delta) == pytest.approx(0.5)
    assert tinylora.kept_fraction(W, W, torch.zeros(4, 4)) == 1.0


def lora_of(model, tmp_path) -> tuple[dict, "torch.nn.Module"]:
    """Export `model` as a LoRA adapter; return its config and a fresh fp32 base with it loaded by stock PEFT."""
    from peft import PeftModel
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.lora import LoraModel

    assert PEFT_TYPE_TO_TUNER_MAPPING["LORA"] is LoraModel  # tinylora replaces only PEFT's TinyLoRA tuner
    tinylora.export_lora(model, tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    return config, PeftModel.from_pretrained(dense(modeling.tiny_model_dir()), str(tmp_path / "lora")).eval()


@pytest.mark.parametrize("tie", ["all", "layer"])
def test_lora_export_reproduces_logits_in_stock_peft(tiny_path, tmp_path, tie):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4, tie=tie)
    set_v(model)
    config, lora = lora_of(model, tmp_path)
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 2
    assert set(config["target_modules"]) == set(tinylora.TARGET_MODULES)
    assert torch.allclose(logits(lora), logits(model), atol=1e-4)


def test_lora_export_of_an_nf4_model_is_its_exact_update(tiny_path, tmp_path):
    """On the unquantized base the LoRA carries exactly the NF4 model's ΔW; on the NF4 base it gives its logits."""
    from peft import PeftModel

    model = tinylora.apply_tiny_lora(nf4(tiny_path), u=4, tie="layer")
    set_v(model)
    _, lora = lora_of(model, tmp_path)
    lora_layers = {n: m for n, m in lora.get_base_model().named_modules() if hasattr(m, "lora_A")}
    for name, module in layers(model).items():
        got = lora_layers[name].get_delta_weight("default")
        assert torch.allclose(got, tinylora.delta_weight(module), atol=1e-6), name
    on_nf4 = PeftModel.from_pretrained(nf4(tiny_path), str(tmp_path / "lora")).eval()
    assert torch.allclose(logits(on_nf4), logits(model), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"u": 0}, "u must be a positive integer"),
        ({"u": 2.5}, "u must be a positive integer"),
        ({"rank": 0}, "rank must be a positive integer"),
        ({"tie": "diagonal"}, "unknown tie mode"),
        ({"tie": "groups:0"}, "number of groups"),
        ({"tie": "groups:x"}, "number of groups"),
    ],
)
def test_bad_arguments_are_clear(tiny_path, kwargs, message):
    with pytest.raises(tinylora.TinyLoraError, match=message):
        tinylora.apply_tiny_lora(dense(tiny_path), **kwargs)


def test_plan_budget_hits_exact_counts():
    assert tinylora.plan_budget(13, n_modules=252, n_layers=36) == (13, "all")
    assert tinylora.plan_budget(72, n_modules=252, n_layers=36, tie="layer") == (2, "layer")
    assert tinylora.plan_budget(14, n_modules=252, n_layers=36, tie="structured") == (2, "structured")
    with pytest.raises(tinylora.TinyLoraError, match="try 36 or 72"):
        tinylora.plan_budget(50, n_modules=252, n_layers=36, tie="layer")


# ---------------------------------------------------------------------------------- the seam with PEFT itself
def test_peft_seam_is_where_we_extend_it(tiny_path):
    """Fails loudly when a PEFT upgrade moves what tinylora.py overrides; then revisit TinyLoraModel."""
    assert peft_layer.Linear._init_svd.__code__.co_varnames[:4] == ("self", "adapter_name", "r", "fan_in_fan_out")
    assert isinstance(peft_model.TinyLoraModel.__dict__["_create_new_module"], staticmethod)
    assert "_pre_injection_hook" in peft_model.TinyLoraModel.__dict__
    # Our fp32 v groups must be exactly the ones PEFT's own contiguous rule assigns.
    from peft import TinyLoraConfig

    for tying in (0.0, 0.3, 6 / 7, 1.0):
        config = TinyLoraConfig(r=2, u=2, weight_tying=tying, target_modules=list(tinylora.TARGET_MODULES))
        stock = peft_model.TinyLoraModel(dense(tiny_path), config, "default")
        names = tinylora.target_module_names(dense(tiny_path))
        keys = {n: m._tinylora_v_key["default"] for n, m in stock.model.named_modules() if hasattr(m, "_tinylora_v_key")}
        assert [keys[n] for n in names] == [str(tinylora.peft_group_index(i, len(names), tying)) for i in range(len(names))]


def test_v_group_key_seam(tiny_path):
    """tinylora._rewire and layer_v use PEFT's private `_tinylora_v_key`; PEFT's own _compute_R must follow it."""
    import peft
    from peft import TinyLoraConfig

    moved = f"PEFT {peft.__version__} moved the layer's v group key `_tinylora_v_key`: update tinylora._rewire/layer_v"
    config = TinyLoraConfig(r=2, u=3, weight_tying=0.0, target_modules=list(tinylora.TARGET_MODULES))
    stock = peft_model.TinyLoraModel(dense(tiny_path), config, "default")  # stock PEFT: one v per module
    name, layer = next((n, m) for n, m in stock.model.named_modules() if isinstance(m, peft_layer.TinyLoraLayer))
    assert isinstance(getattr(layer, "_tinylora_v_key", None), dict) and "default" in layer._tinylora_v_key, moved
    other = next(k for k in stock.tinylora_v["default"].keys() if k != layer._tinylora_v_key["default"])
    with torch.no_grad():
        stock.tinylora_v["default"][other].copy_(torch.tensor([0.5, -1.0, 2.0]))
    tinylora._rewire(SimpleNamespace(base_model=stock), {name: int(other)})  # as PeftModel.base_model
    assert tinylora.layer_v(layer) is stock.tinylora_v["default"][other], moved
    expected = torch.einsum("i,ijk->jk", stock.tinylora_v["default"][other], layer.tinylora_P["default"])
    assert torch.allclose(layer._compute_R("default"), expected), moved


def test_stock_peft_still_lacks_a_4bit_layer(tiny_path):
    """When this starts failing, PEFT gained 4-bit TinyLoRA support and our Linear4bit layer may be retired."""
    from peft import TinyLoraConfig

    config = TinyLoraConfig(r=2, u=2, weight_tying=1.0, target_modules=list(tinylora.TARGET_MODULES))
    with pytest.raises(Exception):
        peft_model.TinyLoraModel(nf4(tiny_path), config, "default")


def test_meta_records_tie_and_files(tiny_path, tmp_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=3, tie="layer")
    tinylora.save_tiny_lora(model, tmp_path / "a", extra_meta={"base_model": "tiny"})
    meta = json.loads((tmp_path / "a" / tinylora.META_FILE).read_text())
    assert meta["tie"] == "layer" and meta["trainable"] == 12 and meta["base_model"] == "tiny"
    assert "adapter_model.safetensors" in meta["files"]


def test_set_tiny_lora_v_checks_groups(tiny_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    with pytest.raises(tinylora.TinyLoraError, match="do not match"):
        tinylora.set_tiny_lora_v(model, {"7": torch.zeros(4)})


# ------------------------------------------------------------------------ every dtype a user can cast the model to
def fp32_adapted(path: str, **kwargs) -> tuple[torch.nn.Module, torch.Tensor]:
    """An adapted fp32 model with non-zero v, and its fp32 logits: the reference every cast is held to."""
    model = tinylora.apply_tiny_lora(dense(path), u=4, **kwargs)
    set_v(model)
    return model, logits(model)


def loss_reaches_v(model) -> None:
    model(IDS, labels=IDS).loss.backward()
    grads = [v.grad for v in model.base_model.tinylora_v["default"].values()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cast, dtype", [(lambda m: m.to(torch.bfloat16), torch.bfloat16),
                                         (lambda m: m.half(), torch.float16)], ids=["to_bfloat16", "half"])
def test_cast_model_runs_and_trains(tiny_path, cast, dtype):
    """PEFT's test_forward_{float16,bfloat16}_no_autocast: v, A, B, P and x all in the cast dtype."""
    model, expected = fp32_adapted(tiny_path)
    logits(model)  # fill the factor cache in fp32 first: the cast must not reuse it
    cast(model)
    v = model.base_model.tinylora_v["default"]["0"]
    assert v.dtype == dtype and next(iter(layers(model).values())).tinylora_A["default"].dtype == dtype
    assert (logits(model) - expected).abs().max() < 0.05 * expected.abs().max()  # half-precision rounding
    loss_reaches_v(model)


def test_adapter_not_autocast_on_a_bf16_base(tiny_path):
    """get_peft_model(..., autocast_adapter_dtype=False) on a bf16 base: A and B bf16, our v still fp32."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    _, expected = fp32_adapted(tiny_path)
    config = tinylora.apply_tiny_lora(dense(tiny_path), u=4).peft_config["default"]
    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.bfloat16).eval()
    model = get_peft_model(base, config, autocast_adapter_dtype=False)
    assert next(iter(layers(model).values())).tinylora_A["default"].dtype == torch.bfloat16
    set_v(model)
    assert (logits(model) - expected).abs().max() < 0.05 * expected.abs().max()
    loss_reaches_v(model)


def test_cpu_autocast_to_bf16(tiny_path):
    model, expected = fp32_adapted(tiny_path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = logits(model)
        loss_reaches_v(model)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


# -------------------------------------------------------------------- the forward: cached factors, one addmm
def reference_low_rank(module: tinylora.TinyLoraLinear, x: torch.Tensor) -> torch.Tensor:
    """The formula written out, out of place: base(x) + B (R (A x)) with R = Σ v_i P_i built from v every time."""
    v = module.tinylora_v["default"][module._tinylora_v_key["default"]]  # (u,)
    R = torch.einsum("i,ijk->jk", v, module.tinylora_P["default"])  # (r, r)
    h = (x @ module.tinylora_A["default"].to(x.dtype).T).float() @ R.T  # (batch, seq, r)
    return module.get_base_layer()(x) + h.to(x.dtype) @ module.tinylora_B["default"].to(x.dtype).T  # (batch, seq, out)


@pytest.mark.parametrize("loader", [dense, nf4])
def test_forward_equals_the_formula_in_value_and_gradient(tiny_path, loader):
    """No-grad (in-place addmm_ into the base output) and grad (out-of-place addmm) both equal the plain formula,
    and v's gradient through them equals the plain formula's."""
    model = tinylora.apply_tiny_lora(loader(tiny_path), u=4)
    set_v(model)
    v = model.base_model.tinylora_v["default"]["0"]
    name, module = next(iter(layers(model).items()))
    x = torch.randn(2, 5, module.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(module(x), reference_low_rank(module, x), atol=1e-6), name
        assert torch.allclose(module(x), reference_low_rank(module, x), atol=1e-6), name  # cached factors
    xg = x.clone().requires_grad_()
    (module(xg) ** 2).sum().backward()
    ours_v, ours_x = v.grad.clone(), xg.grad.clone()
    v.grad, xg.grad = None, None
    (reference_low_rank(module, xg) ** 2).sum().backward()
    assert torch.allclose(ours_v, v.grad, rtol=1e-5, atol=1e-6) and torch.allclose(ours_x, xg.grad, atol=1e-5)


def test_factors_are_cached_until_v_changes(tiny_path):
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    module = next(iter(layers(model).values()))
    logits(model)
    first = module._tinylora_cache["default"]
    logits(model)
    assert module._tinylora_cache["default"] is first  # no recast, no rebuild of R between writes
    set_v(model)
    logits(model)
    assert module._tinylora_cache["default"] is not first


def fresh_logits(path: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a new adapted model given `values` for v: what any cached model must agree with."""
    model = tinylora.apply_tiny_lora(dense(path), u=4)
    tinylora.set_tiny_lora_v(model, values)
    return logits(model)


def test_fused_adamw_step_invalidates_the_cache(tiny_path):
    """Fused AdamW writes v without bumping its version counter: the optimizer-step hook must still be seen."""
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    set_v(model, scale=0.1)
    v = model.base_model.tinylora_v["default"]["0"]
    optimizer = torch.optim.AdamW([v], lr=0.5, fused=True)
    before = logits(model)  # no-grad forward: R cached from the current v
    version = v._version
    model(IDS, labels=IDS).loss.backward()
    optimizer.step()
    assert v._version == version  # the hazard this test exists for: nothing but the hook tells the cache
    after = logits(model)
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.allclose(after, fresh_logits(tiny_path, tinylora.tiny_lora_v(model)), atol=1e-6)


def test_every_replacement_of_a_factor_reaches_the_forward(tiny_path):
    """The cache is checked through counters of the tensors it was built from, never PEFT's dicts: a factor
    replaced rather than written (the adapter deleted and added again, `.data =`, a layer pointed at another v)
    must still be seen. Each change comes right after a cached forward."""
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4, tie="layer")
    set_v(model)
    name, module = next(iter(layers(model).items()))
    x = torch.randn(2, 3, module.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_out = module.get_base_layer()(x)
        assert not torch.allclose(module(x), base_out, atol=1e-4)  # factors cached
        config = model.peft_config["default"]
        model.delete_adapter("default")
        model.add_adapter("default", config)  # fresh A, B, P and a zero v, in new objects under the same names
        model.set_adapter("default")
        assert module.active_adapters == ["default"] and torch.equal(module(x), base_out)
        set_v(model)
        module(x)
        module.tinylora_B["default"].data = module.tinylora_B["default"].data * 2  # new storage, same version
        assert torch.allclose(module(x), reference_low_rank(module, x), atol=1e-6)
        other = next(k for k in model.base_model.tinylora_v["default"] if k != module._tinylora_v_key["default"])
        tinylora._rewire(model, {name: int(other)})  # another layer's v
        assert torch.allclose(module(x), reference_low_rank(module, x), atol=1e-6)


def test_writes_without_an_optimizer_reach_generation(tiny_path, tmp_path):
    """Evaluation with no optimizer: set_tiny_lora_v, load_state_dict and save/load all change what is computed."""
    model = tinylora.apply_tiny_lora(dense(tiny_path), u=4)
    logits(model)
    set_v(model, seed=2)
    assert torch.allclose(logits(model), fresh_logits(tiny_path, tinylora.tiny_lora_v(model)), atol=1e-6)
    state = {k: torch.full_like(t, 0.3) for k, t in model.state_dict().items() if "tinylora_v" in k}
    model.load_state_dict(state, strict=False)
    assert torch.allclose(logits(model), fresh_logits(tiny_path, tinylora.tiny_lora_v(model)), atol=1e-6)


@pytest.mark.parametrize("loader", [dense, nf4])
def test_the_adapter_compiles_in_one_graph_and_follows_v(tiny_path, loader):
    """`torch.compile` of an adapted model, dense or NF4: no graph break in our layers (the cache's counters cannot be
    traced, so a compiled forward builds the factors itself), the eager model's logits and v-gradient, and a later
    write to v seen by the compiled model."""
    model = tinylora.apply_tiny_lora(loader(tiny_path), u=4)
    set_v(model, scale=0.1)
    with torch.no_grad():
        assert torch._dynamo.explain(model)(IDS).graph_break_count == 0
    compiled = torch.compile(model, backend="aot_eager")  # Dynamo's graph and AOTAutograd's, minus Inductor's codegen
    with torch.no_grad():
        assert torch.allclose(compiled(IDS).logits, logits(model), atol=1e-5)
    v = model.base_model.tinylora_v["default"]["0"]
    compiled(IDS, labels=IDS).loss.backward()
    compiled_grad, v.grad = v.grad.clone(), None
    model(IDS, labels=IDS).loss.backward()
    assert v.grad.abs().max() > 0 and torch.allclose(compiled_grad, v.grad, rtol=1e-4, atol=1e-7)
    before = logits(model)
    set_v(model, seed=2, scale=0.1)  # written in place, as an optimizer does
    after = logits(model)
    assert not torch.allclose(after, before, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(compiled(IDS).logits, after, atol=1e-5)
