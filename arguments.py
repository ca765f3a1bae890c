"""Every script's own flags, one dataclass per concern (train_rl.py and train_sft.py parse them beside TRL's config
with TRL's parser) and the evaluation scripts' argparse flags.

Light on purpose: it imports neither torch nor TRL, so `--help` answers in well under 2 s, and modules that only
need a flag's vocabulary (the sampler kinds, the default model) import it from here.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple, NoReturn, get_type_hints

import errors

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-3B-Instruct"
SAMPLER_WEIGHTS = ("int8", "exact")
ADAPTERS = ("tinylora", "lora")
COMPARE_SPLITS = ("train", "test")
TEST_SELECTIONS = ("first", "longest")
# data.DATASETS by name (this module stays below data.py; tests/test_flags.py checks that the two agree)
DATASET_HELP = "sample | code_contests | deepcoder | a problems .jsonl file"
MODEL_HELP = "hub id, local dir, FILE.gguf, or an offline alias: qwen2.5-coder-0.5b/-1.5b, smollm2, tiny, tiny-coder"


@dataclass
class ModelArguments:
    """Which base model, and in which precision."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": MODEL_HELP})
    no_quant: bool = field(default=False, metadata={"help": "bf16 (fp32 on CPU) base instead of NF4 4-bit"})


@dataclass
class AdapterArguments:
    """What is trained: TinyLoRA's u numbers, or the LoRA contrast."""

    u: int = field(default=32, metadata={"help": "numbers in each trainable vector v (positional U)"})
    adapter: str = field(default="tinylora", metadata={
        "help": "tinylora (u numbers) | lora: the contrast, a stock PEFT LoRA of --rank on the same projections"})
    rank: int = field(default=2, metadata={"help": "SVD rank r of the frozen factors (the LoRA rank with --adapter lora)"})
    tie: str = field(default="all", metadata={"help": "v sharing: all | layer | structured | module | groups:G"})


@dataclass
class DataArguments:
    """Which problems are trained on."""

    dataset: str = field(default="code_contests",
                         metadata={"help": DATASET_HELP})
    train_data: str | None = field(default=None, metadata={"help": "the seed's spelling of --dataset FILE.jsonl"})
    num_problems: int = field(default=2000, metadata={"help": "training problems to sample (positional MAX_SAMPLES)"})


@dataclass
class PromptArguments:
    """How a problem is asked (saved with the adapter: evaluation asks it the same way)."""

    show_examples: bool = field(default=False, metadata={"help": "put the public tests in the prompt"})
    system_prompt: str | None = field(default=None, metadata={"help": "override data.DEFAULT_SYSTEM_PROMPT"})
    instruction: str | None = field(default=None, metadata={"help": "override data.DEFAULT_INSTRUCTION"})


@dataclass
class RolloutArguments:
    """Which training problems GRPO samples: a chosen few, and none whose prompt is too long."""

    problem_ids: str | None = field(default=None, metadata={"help": "train only on these problem ids (comma list)"})
    max_prompt_length: int = field(default=1024, metadata={"help": "prompts longer than this (tokens) are dropped"})


@dataclass
class RewardArguments:
    """How a completion is judged and scored during training."""

    max_tests: int = field(default=10, metadata={"help": "tests judged per completion"})
    test_selection: str = field(default="first", metadata={"help": "first | longest tests when capping"})
    reward_scheme: str = field(default="seed", metadata={"help": "seed (partial credit) | binary"})
    no_code_penalty: float = field(default=0.0, metadata={"help": "reward for a completion with no code"})


@dataclass
class ValidationArguments:
    """Greedy validation on held-out problems during training."""

    do_validate: bool = field(default=False, metadata={"help": "greedy validation every --val_steps"})
    val_steps: int = field(default=100, metadata={"help": "steps between validations"})
    val_num_problems: int = field(default=10, metadata={"help": "held-out problems per validation"})
    val_max_completion_length: int = field(default=1024, metadata={
        "help": "completion length cap during validation (in training: TRL's --max_completion_length)"})


@dataclass
class RunArguments:
    """How a GRPO run goes: resuming, sampling, memory, the before/after comparison and the exports."""

    resume: bool = field(default=False, metadata={"help": "continue from the newest complete checkpoint"})
    sampler: str | None = field(
        default=None, metadata={"help": "weights that draw completions: int8 (v folded in, int8 layers; CPU fast path) "
                                        "| exact (default: int8 on CPU, exact on GPU)"})
    recompute_scoring: bool = field(
        default=False, metadata={"help": "recompute each prompt group's scoring forward during the backward: the "
                                         "peak memory of one group's activations, one more forward per step"})
    compare_before_after: bool = field(
        default=False, metadata={"help": "sample the training problems before and after training and compare"})
    n: int = field(default=16, metadata={"help": "samples per problem for --compare_before_after"})
    compare_split: str = field(
        default="train", metadata={"help": "what --compare_before_after samples: train (the training problems) | test "
                                           "(the dataset's test split, held out, judged on all tests as test.py does)"})
    export_lora: bool = field(
        default=False, metadata={"help": "also write the final adapter as a standard PEFT LoRA to OUTPUT_DIR/final_lora"})


@dataclass
class SftArguments:
    """What only the SFT baseline needs."""

    solutions_per_problem: int = field(default=1, metadata={"help": "reference solutions used per problem"})
    loss_samples: int = field(default=64, metadata={"help": "examples whose loss is reported before and after"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest complete checkpoint"})


GRPO_CONCERNS = (ModelArguments, AdapterArguments, DataArguments, PromptArguments, RolloutArguments, RewardArguments,
                 ValidationArguments, RunArguments)
SFT_CONCERNS = (ModelArguments, AdapterArguments, DataArguments, PromptArguments, SftArguments)


def trl_parser(dataclass_types: tuple, prog: str, usage: str | None = None):
    """TRL's parser over our concerns and TRL's config (TRL is imported here, not with this module), spelling flags
    as every other script does: a bool of our own concerns is a plain switch (`--no_quant`), where TRL's parser
    makes it take an optional value (`--no_quant [NO_QUANT]`, which swallows the word after it), and retired
    spellings (RETIRED_FLAGS) parse, as flags and as YAML keys, as the flags they became. TRL's own bools keep
    TRL's convention (`--bf16 false`), and a YAML key (`no_quant: true`) sets either kind."""
    from trl import TrlParser

    class Parser(TrlParser):
        def _add_dataclass_arguments(self, dtype) -> None:
            if dtype.__module__ != __name__:
                return super()._add_dataclass_arguments(dtype)
            hints = get_type_hints(dtype)
            for f in fields(dtype):
                if hints[f.name] is bool and f.default is False:
                    self.add_argument(*dict.fromkeys((f"--{f.name}", f"--{f.name.replace('_', '-')}")),
                                      action="store_true", help=f.metadata["help"])
                else:
                    f.type = hints[f.name]  # resolved, as TrlParser does before handing a field on
                    self._parse_dataclass_field(self, f)

        def set_defaults_with_config(self, **values) -> list[str]:
            known = {action.dest for action in self._actions}
            return super().set_defaults_with_config(**canonical_keys(values, known, "the --config file"))

    parser = Parser(dataclass_types, prog=prog, usage=usage)
    add_retired_flags(parser, hyphens=True)
    return parser


def parse_with_trl(dataclass_types: tuple, argv: list[str], prog: str, usage: str | None = None,
                   defaults: dict | None = None):
    """Our concerns and TRL's config from flags and YAML (`trl_parser`): a missing --config file or a value TRL
    refuses raises errors.UsageError. `--train_data PATH` becomes `--dataset PATH`."""
    parser = trl_parser(dataclass_types, prog, usage)
    parser.set_defaults(**(defaults or {}))
    config = argv[argv.index("--config") + 1:][:1] if "--config" in argv else []
    if "--config" in argv and not (config and Path(config[0]).is_file()):
        raise errors.UsageError(f"config file {config[0] if config else '(none given)'} not found")
    try:
        with warnings.catch_warnings():  # TRL's configs still set the old name transformers 5 deprecated, not the user
            warnings.filterwarnings("ignore", message=r"`gradient_checkpointing` is deprecated", category=FutureWarning)
            parsed = parser.parse_args_and_config(argv)
    except ValueError as err:  # TRL/transformers validate their own fields
        raise errors.UsageError(str(err).splitlines()[0])
    for chosen in parsed:
        if isinstance(chosen, DataArguments) and chosen.train_data:
            chosen.dataset, chosen.train_data = chosen.train_data, None
    return parsed


# ----------------------------------------------------------------------------------------------------------------
# The training scripts' flags: our concerns beside TRL's config
ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"  # the GPU recipe
CPU_CONFIG = ROOT / "configs" / "tiny_cpu.yaml"  # the default where no GPU is found: short, offline-sized runs
GRPO_USAGE = "train_rl.py [U] [MAX_SAMPLES] [flags]"


class GrpoFlags(NamedTuple):
    """train_rl.py's flags by concern, and TRL's config: main() hands each function only the concerns it needs."""

    model: ModelArguments
    adapter: AdapterArguments
    data: DataArguments
    prompt: PromptArguments
    rollout: RolloutArguments
    reward: RewardArguments
    validation: ValidationArguments
    run: RunArguments
    grpo: object  # trl.GRPOConfig (TRL is imported when parsing, not with this module)

    def concerns(self) -> tuple:
        """Our dataclasses, without TRL's config: what run_info records flag by flag."""
        return tuple(self)[:-1]


def split_positionals(argv: list[str], default_config: Path | None = None) -> list[str]:
    """`32 2000 --flags` -> `--u 32 --num_problems 2000 --flags`; adds the default config unless one is named
    (configs/default.yaml with a GPU, configs/tiny_cpu.yaml without)."""
    import torch

    names, rest = ["--u", "--num_problems"], list(argv)
    flags: list[str] = []
    while rest and names and not rest[0].startswith("-"):
        flags += [names.pop(0), rest.pop(0)]
    if "--config" not in rest and not any(a in ("-h", "--help") for a in rest):
        flags += ["--config", str(default_config or (DEFAULT_CONFIG if torch.cuda.is_available() else CPU_CONFIG))]
    return flags + rest


def parse_grpo_args(argv: list[str] | None = None) -> GrpoFlags:
    """train_rl.py's flags by concern and TRL's GRPOConfig, from `U MAX_SAMPLES`, flags and YAML; contradictions
    raise errors.UsageError."""
    from trl import GRPOConfig

    argv = split_positionals(sys.argv[1:] if argv is None else argv)
    flags = GrpoFlags(*parse_with_trl((*GRPO_CONCERNS, GRPOConfig), argv, "train_rl.py", GRPO_USAGE))
    adapter, dataset, validation, run = flags.adapter, flags.data.dataset, flags.validation, flags.run
    if adapter.u < 1 or flags.data.num_problems < 1 or adapter.rank < 1:
        raise errors.UsageError("U, MAX_SAMPLES and --rank must be positive integers")
    if validation.do_validate and (validation.val_num_problems < 1 or validation.val_steps < 1):
        raise errors.UsageError("--do_validate needs --val_num_problems >= 1 and --val_steps >= 1")
    if validation.do_validate and dataset.endswith(".jsonl"):
        raise errors.UsageError("--do_validate needs a named --dataset to hold problems out of, not a .jsonl file")
    if flags.reward.test_selection not in TEST_SELECTIONS:
        raise errors.UsageError(f"--test_selection is {'|'.join(TEST_SELECTIONS)}")
    if run.sampler not in (None, *SAMPLER_WEIGHTS):
        raise errors.UsageError(f"--sampler is {'|'.join(SAMPLER_WEIGHTS)}")
    if adapter.adapter not in ADAPTERS:
        raise errors.UsageError(f"--adapter is {'|'.join(ADAPTERS)}")
    if adapter.adapter == "lora" and run.export_lora:
        raise errors.UsageError("--export_lora writes TinyLoRA as a LoRA; --adapter lora already saves one")
    if run.compare_split not in COMPARE_SPLITS:
        raise errors.UsageError(f"--compare_split is {'|'.join(COMPARE_SPLITS)}")
    if run.compare_split == "test" and dataset.endswith(".jsonl"):
        raise errors.UsageError("--compare_split test needs a named --dataset with a test split, not a .jsonl file")
    return flags


# SFTConfig defaults we change: the GRPO recipe's batch and learning rate (configs/default.yaml), one epoch, so the
# two runs differ in the objective only; no TRL checkpoints (the final adapter is saved atomically instead).
SFT_DEFAULTS = dict(output_dir="output/train_sft", learning_rate=1e-5, per_device_train_batch_size=4,
                    gradient_accumulation_steps=8, num_train_epochs=1, logging_steps=1, save_strategy="no",
                    report_to="none", gradient_checkpointing=False, seed=42)


class SftFlags(NamedTuple):
    """train_sft.py's flags by concern (train_rl.py's model, adapter, data and prompt concerns plus SFT's own) and
    TRL's SFTConfig."""

    model: ModelArguments
    adapter: AdapterArguments
    data: DataArguments
    prompt: PromptArguments
    sft: SftArguments
    config: object  # trl.SFTConfig

    def concerns(self) -> tuple:
        return tuple(self)[:-1]


def parse_sft_args(argv: list[str] | None = None) -> SftFlags:
    """train_sft.py's flags and TRL's SFTConfig from flags and YAML; bad values raise errors.UsageError."""
    import torch
    from trl import SFTConfig

    # SFTConfig defaults to bf16, which it refuses on a CPU before configure_device could switch it off.
    flags = SftFlags(*parse_with_trl((*SFT_CONCERNS, SFTConfig),
                                               sys.argv[1:] if argv is None else argv, "train_sft.py",
                                               defaults={**SFT_DEFAULTS, "bf16": torch.cuda.is_available()}))
    adapter, own = flags.adapter, flags.sft
    if min(adapter.u, flags.data.num_problems, adapter.rank, own.solutions_per_problem, own.loss_samples) < 1:
        raise errors.UsageError("--u, --num_problems, --rank, --solutions_per_problem and --loss_samples must be "
                              "positive")
    if adapter.adapter != "tinylora":
        raise errors.UsageError("train_sft.py trains TinyLoRA's v (the SFT side of the RL-against-SFT contrast); "
                              "--adapter lora is train_rl.py's")
    return flags

def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def exit_with_help(concerns: tuple[type, ...], prog: str, usage: str, trl_config: str,
                   description: str | None) -> NoReturn:
    """Our flags by concern, read from the dataclasses alone, and where TRL's own flags are listed: building TRL's
    parser means importing torch and TRL, about 10 s on a busy 2-core machine, for a help text."""
    parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=(
        f"Every field of TRL's {trl_config} is a flag and a YAML key too (--config FILE.yaml), e.g. --learning_rate, "
        f"--max_steps, --seed, --output_dir, --num_generations; list them with: python -c \"from trl import "
        f"{trl_config}; help({trl_config})\""))
    for concern in concerns:
        group = parser.add_argument_group(concern.__name__.removesuffix("Arguments").lower(), concern.__doc__)
        for f in fields(concern):
            default = None if f.default is MISSING else f.default
            group.add_argument(f"--{f.name}", default=default, help=f"{f.metadata['help']} (default: {default})")
    parser.print_help()
    parser.exit()  # 0, as argparse's own --help


def evaluation_parser(description: str | None) -> errors.ArgumentParser:
    """Flags every evaluation script takes (the script adds how it picks the model and the problems)."""
    p = errors.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="code_contests",
                   help=f"{DATASET_HELP} (default %(default)s)")
    p.add_argument("--test_data", dest="dataset", help=argparse.SUPPRESS)  # the seed's spelling of --dataset PATH
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base model: {MODEL_HELP}")
    p.add_argument("--no_quant", action="store_true", help="bf16 (fp32 on CPU) instead of NF4 4-bit")
    p.add_argument("--seed", type=int, default=42, help="problem sampling and generation seed (default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling when temperature > 0")
    p.add_argument("--n", type=int, default=1, help="samples per problem (needs temperature > 0 when > 1)")
    p.add_argument("--k", default="1", help="comma-separated k for pass@k, each <= n (default %(default)s)")
    p.add_argument("--batch_size", type=int, default=8, help="prompts per generate call (default %(default)s)")
    p.add_argument("--max_completion_length", type=int, default=1024,
                   help="completion length cap, in tokens (default %(default)s)")
    p.add_argument("--sampler", choices=SAMPLER_WEIGHTS,
                   help="weights that draw the tokens: int8 (the adapter folded in, int8 layers: 2-4x faster on CPU; "
                        "its drift is in docs/benchmarks.md) or exact (default: int8 on CPU, exact on GPU)")
    p.add_argument("--max_prompt_tokens", type=int,
                   help="skip longer prompts (default: context - max_completion_length)")
    p.add_argument("--processes", type=int,
                   help="CPU processes that generate, each with the torch threads chosen for the run; the batches "
                        "are shared out and the completions are the same as with one (default: as many as the "
                        "cores hold, 2 of one thread on 2 cores; 1 on a GPU)")
    p.add_argument("--max_tests", type=int, default=0, help="tests judged per problem, 0 = all (default)")
    p.add_argument("--time_limit", type=float, help="seconds per test (default: the judge's, 2)")
    add_prompt_flags(p, unset="the adapter's own, else data.py's default")
    p.add_argument("--output_dir", help="where results.jsonl and summary.json go (default output/<script>/<time>-"
                                        "<label>); with --compare, where compare.png goes (default: beside B)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run in --output_dir: the batches its generations.jsonl holds are not "
                        "generated again (every batch is saved as it lands)")
    return p


# ----------------------------------------------------------------------------------------------------------------
# The scripts' command-line plumbing: prompt flags, retired spellings, YAML configs


def add_prompt_flags(parser: argparse.ArgumentParser, unset: str = "data.py's default") -> None:
    """--system_prompt, --instruction and --show_examples/--no-show_examples, each None when not given, so that
    PromptSettings.overridden replaces only what the user said (`unset` says what applies otherwise)."""
    parser.add_argument("--system_prompt", help=f"the system message (default: {unset})")
    parser.add_argument("--instruction", help=f"the text before the statement (default: {unset})")
    parser.add_argument("--show_examples", action=argparse.BooleanOptionalAction,
                        help=f"put the public tests in the prompt (default: {unset}, which is no)")


# Issue #33: one flag name per notion in every script. A retired spelling still parses (and is still read as a YAML
# key) wherever its notion's flag exists, but --help shows only the flag it became.
RETIRED_FLAGS = {"max_samples": "num_problems", "num_samples": "num_problems", "problems": "num_problems",
                 "val_samples": "val_num_problems", "eval_samples": "n", "max_new_tokens": "max_completion_length",
                 "val_max_new_tokens": "val_max_completion_length"}


def add_retired_flags(parser: argparse.ArgumentParser, hyphens: bool = False) -> None:
    """Each retired spelling of a flag `parser` has, as a hidden flag of the same destination and type; with
    `hyphens` also spelled with hyphens (`--max-samples`), as TRL's parser spells every flag too."""
    for old, new in RETIRED_FLAGS.items():
        for action in [a for a in parser._actions if f"--{new}" in a.option_strings]:
            hidden = dict.fromkeys([f"--{old}", *([f"--{old.replace('_', '-')}"] if hyphens else [])])
            parser.add_argument(*hidden, dest=action.dest, type=action.type, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def canonical_keys(values: dict, known: Iterable[str], source: str) -> dict:
    """YAML keys (flag names) with each retired spelling of a `known` flag renamed to that flag; a errors.UsageError when
    `source` gives one flag under two names."""
    known, renamed, given = set(known), {}, {}
    for key, value in values.items():
        name = RETIRED_FLAGS[key] if RETIRED_FLAGS.get(key) in known else key
        if name in renamed:
            raise errors.UsageError(f"{source} gives {name} twice, as {given[name]} and as {key}")
        renamed[name], given[name] = value, key
    return renamed


def canonical_flags(argv: list[str]) -> list[str]:
    """`argv` with each retired flag spelled as the flag it became (`--max_samples 8` -> `--num_problems 8`)."""
    return [f"--{RETIRED_FLAGS[word[2:]]}" if word.startswith("--") and word[2:] in RETIRED_FLAGS else word
            for word in argv]


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags, taking defaults from `--config FILE.yaml` (keys are flag names); explicit flags win. Retired
    spellings parse as the flags they became (`add_retired_flags`)."""
    import yaml

    parser.add_argument("--config", help="YAML file whose keys are flag names (flags given here override it)")
    add_retired_flags(parser)
    args = parser.parse_args(argv)
    if args.config:
        try:
            values = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise errors.UsageError(f"cannot read config {args.config}: {e}") from e
        values = canonical_keys(values, vars(args), args.config)
        unknown = sorted(set(values) - set(vars(args)))
        if unknown:
            raise errors.UsageError(f"unknown keys in {args.config}: {', '.join(unknown)}")
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args
