"""The sampling copy: v folded in, int8 layers close to the exact policy, rebuilt only when v moves, one prefill per
distinct prompt drawing what plain generate draws, and GRPO drawing its completions from it."""
from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

import data
import evaluation
import modeling
import sampling
import tinylora


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return modeling.load_model("tiny", quant=False)


def adapted(model, scale: float = 0.5):
    peft = tinylora.apply_tiny_lora(model, u=8, tie="all").eval()
    tinylora.set_tiny_lora_v(peft, {"0": torch.linspace(-scale, scale, 8)})
    return peft


def batch(tokenizer, copies: int = 3):
    """Three distinct prompts of different lengths (so left padding), each `copies` times side by side."""
    problems = data.load_problems("sample", "test")[:3]
    texts = [evaluation.prompt_text(p, tokenizer) for p in problems]
    return tokenizer([t for t in texts for _ in range(copies)], return_tensors="pt", padding=True,
                     add_special_tokens=False)


def test_int8_copy_folds_v_and_tracks_the_exact_adapted_model(tiny):
    model, tokenizer = tiny
    enc = batch(tokenizer, copies=1)
    with torch.no_grad():
        base = model(**enc).logits
    peft = adapted(model)
    try:
        with torch.no_grad():
            exact = peft(**enc).logits  # (rows, seq, vocab)
            drawn = sampling.int8_copy(peft)(**enc).logits
        assert not any(isinstance(m, tinylora.TinyLoraLinear) for m in sampling.int8_copy(peft).modules())
        mask = enc.attention_mask.bool()
        error, moved = (drawn - exact)[mask].abs().mean(), (exact - base)[mask].abs().mean()
        assert error < 0.2 * moved, f"int8 copy off by {error:.4f}, v moved the logits by {moved:.4f}"
        assert not any(p.requires_grad for p in sampling.int8_copy(peft).parameters())
    finally:
        peft.unload()


def test_int8_copy_folds_a_lora_contrast(tiny):
    """The LoRA contrast (--adapter lora) samples from its own policy too: B A folded in, the copy rebuilt when the
    factors move."""
    model, tokenizer = tiny
    enc = batch(tokenizer, copies=1)
    with torch.no_grad():
        base = model(**enc).logits
    peft = tinylora.apply_lora(model, rank=1).eval()
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)  # (out, 1): B = 0 at the start, as if trained
            exact = peft(**enc).logits  # (rows, seq, vocab)
        sampler = sampling.Sampler(sampling.SamplerSettings("int8"))
        copy = sampler.model_for(peft)
        with torch.no_grad():
            drawn = copy(**enc).logits
        mask = enc.attention_mask.bool()
        error, moved = (drawn - exact)[mask].abs().mean(), (exact - base)[mask].abs().mean()
        assert error < 0.2 * moved, f"int8 copy off by {error:.4f}, LoRA moved the logits by {moved:.4f}"
        with torch.no_grad():
            next(p for n, p in peft.named_parameters() if "lora_A" in n).add_(0.1)  # an optimizer step
        assert sampler.model_for(peft) is not copy
    finally:
        peft.unload()


def test_the_copy_is_rebuilt_when_v_moves_and_only_then(tiny):
    model, _ = tiny
    peft = adapted(model)
    try:
        sampler = sampling.Sampler(sampling.SamplerSettings("int8"))
        first = sampler.model_for(peft)
        assert sampler.model_for(peft) is first
        tinylora.set_tiny_lora_v(peft, {"0": torch.linspace(-0.4, 0.6, 8)})  # as an optimizer step moves v
        assert sampler.model_for(peft) is not first
        assert sampling.Sampler(sampling.SamplerSettings("exact")).model_for(peft) is peft
    finally:
        peft.unload()


@pytest.mark.parametrize("bias", [True, False])
def test_int8_layers_are_the_ones_from_float_makes(bias):
    """The copy's layers skip from_float's random init and placeholder packing, not its observer or rounding:
    the same int8 weights and bit-identical outputs, so copies built before and after pair sample by sample."""
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    torch.manual_seed(0)
    weight, b = torch.randn(48, 40) * 0.05, torch.randn(48) if bias else None
    plain = torch.nn.Linear(40, 48, bias=bias)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias:
            plain.bias.copy_(b)
    plain.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = DynamicLinear.from_float(plain)
    layer = sampling._quantized_linear(weight, b)
    x = torch.randn(5, 40)
    assert torch.equal(layer.weight().int_repr(), reference.weight().int_repr())
    assert torch.equal(layer(x), reference(x)) and (layer.in_features, layer.out_features) == (40, 48)


def test_outlier_channels_take_the_fp32_path():
    """An input with one massive channel (as Qwen2's down_proj sees): split int8 stays close to fp32, plain int8
    loses every ordinary channel to the outlier's scale."""
    torch.manual_seed(0)
    weight, bias = torch.randn(16, 64) / 8, torch.randn(16)  # (out, in), (out,)
    x = torch.randn(3, 5, 64)  # (batch, seq, in)
    x[1, 2, 7] = 900.0
    exact = torch.nn.functional.linear(x, weight, bias)  # (batch, seq, out)
    split = sampling.OutlierSplitLinear(weight, bias)(x)
    plain = sampling._quantized_linear(weight, bias)(x)
    split_err, plain_err = (split - exact).abs().max(), (plain - exact).abs().max()
    assert split_err < 0.1 and plain_err > 10 * split_err
    assert torch.allclose(sampling.OutlierSplitLinear(weight, bias)(x / 1000), sampling._quantized_linear(
        weight, bias)(x / 1000))  # no outlier: exactly the int8 layer


def test_unknown_sampler_is_a_typed_error():
    with pytest.raises(sampling.SamplingError, match="int8, exact"):
        sampling.SamplerSettings("fp8")


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_one_prefill_per_prompt_draws_what_plain_generate_draws(tiny, sampled):
    model, tokenizer = tiny
    enc = batch(tokenizer)
    config = GenerationConfig(max_new_tokens=10, do_sample=sampled, temperature=1.0 if sampled else None,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=model.generation_config.eos_token_id)
    torch.manual_seed(3)
    plain = model.generate(**enc, generation_config=config)  # (9, prompt + new)
    torch.manual_seed(3)
    shared = sampling.generate_shared_prefill(model, enc.input_ids, enc.attention_mask, config)
    assert torch.equal(shared, plain)


def test_one_prefill_per_prompt_really_prefills_once(tiny, monkeypatch):
    model, tokenizer = tiny
    enc = batch(tokenizer)
    rows_prefilled = []
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            rows_prefilled.append(ids.shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)  # a counter around the model, not the code under test
    config = GenerationConfig(max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    sampling.generate_shared_prefill(model, enc.input_ids, enc.attention_mask, config)
    assert rows_prefilled == [3]  # three distinct prompts, not nine rows


def test_inverse_cdf_draw_follows_the_softmax():
    scores = torch.tensor([2.0, 0.0, float("-inf"), 1.0, -1.0, 0.5]).expand(40_000, -1)  # (rows, vocab)
    torch.manual_seed(0)
    out = sampling.InverseCdfDraw()(None, scores)  # (rows, vocab): 0 at the drawn token, -inf elsewhere
    assert torch.equal((out == 0).sum(1), torch.ones(len(scores), dtype=torch.long))
    freq = torch.bincount(out.argmax(1), minlength=6).double() / len(scores)
    p = scores[0].double().softmax(0)
    assert freq[2] == 0  # a token the warpers removed is never drawn
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / len(scores)).sqrt() + 1e-9)


def test_sampling_copy_draws_the_models_next_token_distribution(tiny):
    """The copy's generate (shared prefill, inverse-CDF draw at T = 0.7 with top-k 5) against the exact softmax of
    the same copy: the first new token of 3,000 samples of one prompt."""
    model, tokenizer = tiny
    enc = batch(tokenizer, copies=1)
    ids, mask = enc.input_ids[:1].expand(3000, -1), enc.attention_mask[:1].expand(3000, -1)
    copy = sampling.Sampler(sampling.SamplerSettings("int8")).model_for(model)
    config = GenerationConfig(max_new_tokens=1, do_sample=True, temperature=0.7, top_k=5,
                              pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    first = copy.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, -1]  # (3000,)
    with torch.no_grad():
        logits = copy(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1].double() / 0.7  # (vocab,)
    top = logits.topk(5).indices
    p = torch.zeros_like(logits)  # (vocab,): the softmax over the top 5, 0 elsewhere
    p[top] = logits[top].softmax(0)
    freq = torch.bincount(first, minlength=len(p)).double() / len(first)
    assert set(first.unique().tolist()) <= set(top.tolist())
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / len(first)).sqrt() + 1e-9)
    torch.manual_seed(1)
    again = copy.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, -1]
    assert torch.equal(first, again)  # the same seed draws the same tokens


def test_configs_with_other_warpers_or_greedy_are_left_to_generate():
    greedy = GenerationConfig(do_sample=False)
    assert sampling.inverse_cdf_config(greedy) == (greedy, None)
    typical = GenerationConfig(do_sample=True, typical_p=0.9)
    assert sampling.inverse_cdf_config(typical) == (typical, None)
    config, processors = sampling.inverse_cdf_config(GenerationConfig(do_sample=True, temperature=0.8, top_p=0.9))
    assert not config.do_sample and [type(p).__name__ for p in processors] == [
        "TemperatureLogitsWarper", "TopPLogitsWarper", "InverseCdfDraw"]


def test_logprob_drift_is_zero_against_itself_and_positive_against_int8(tiny):
    model, tokenizer = tiny
    enc = batch(tokenizer, copies=1)
    start = enc.input_ids.shape[1] - 4
    assert sampling.logprob_drift(model, model, enc.input_ids, start)["kl_nats_per_token"] == pytest.approx(0, abs=1e-6)
    drift = sampling.logprob_drift(model, sampling.int8_copy(model), enc.input_ids, start)
    assert 0 < drift["kl_nats_per_token"] < 0.5 and drift["greedy_agreement"] > 0.5


def test_evaluation_records_and_uses_the_sampler(tiny, monkeypatch):
    model, tokenizer = tiny
    problems = data.load_problems("sample", "test")[:2]
    built = []
    monkeypatch.setattr(sampling, "int8_copy", lambda m, real=sampling.int8_copy: built.append(1) or real(m))
    settings = evaluation.GenerationSettings(max_new_tokens=4, batch_size=2, sampler="int8")
    _, summary = evaluation.evaluate(model, tokenizer, problems, settings, progress=False)
    assert built == [1] and summary["run"]["generation"]["sampler"] == "int8"
    assert summary["run"]["draw"] == "inverse_cdf"
