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
