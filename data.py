"""One problem record for every script: loading it and prompting with it, plus the command-line plumbing the
scripts share. Converting a dataset's rows into records is conversion.py's; writing files is paths.py's.

A problem is a plain dict (one per jsonl line); see docs/data.md for the schema. Training, validation and testing
all go through `load_problems`, so a dataset is filtered, shuffled and sampled the same way everywhere.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NoReturn


DATA_DIR = Path(__file__).resolve().parent / "data"
DATASETS = ("sample", "code_contests", "deepcoder")
SPLITS = {"sample": ("train", "test"), "code_contests": ("train", "valid", "test"), "deepcoder": ("train", "test")}
DOWNLOAD_COMMANDS = {
    "sample": "git checkout -- data/sample   (the shipped set is part of the repository)",
    "code_contests": "python download_code_contests.py",
    "deepcoder": "python download_deepcoder.py",
}
TEST_GROUPS = ("public", "private", "generated")
REQUIRED_KEYS = ("id", "dataset", "split", "name", "statement", "tests")

DEFAULT_SYSTEM_PROMPT = (
    "You are an expert competitive programmer. You write correct, efficient C++17 programs "
    "that read from standard input and write to standard output."
)
DEFAULT_INSTRUCTION = (
    "Solve the following competitive programming problem in C++17. Reason briefly about the approach, then give "
    "your answer as exactly one ```cpp code block containing a complete program that reads the input from stdin "
    "and writes the answer to stdout."
)


class UsageError(ValueError):
    """A mistake the user can mend (a flag, a file, a setting), with a message that says what to do. Modules raise
    it and never end the process; a script's main (see `script_main`) prints it as one line and exits 2, while a
    notebook, a sweep or a test can catch it."""


class DataMissingError(UsageError):
    """A dataset file is absent; the message names the command that creates it."""


# ----------------------------------------------------------------------------------------------------------------
# Loading and prompting


def dataset_file(name: str, split: str) -> Path:
    """Where `name`'s `split` lives on disk (data/<name>/<split>.jsonl)."""
    if split not in SPLITS[name]:
        raise UsageError(f"dataset {name!r} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
    return DATA_DIR / name / f"{split}.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """Read problem records, refusing any without tests: a silent test-less problem gives reward 0 forever. A file
    that cannot be read as problems raises UsageError with the line at fault."""
    problems = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                problem = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}:{lineno}: not a JSON problem record ({err.msg})") from None
            missing = [k for k in REQUIRED_KEYS if k not in problem]
            if missing:
                raise UsageError(f"{path}:{lineno}: problem record lacks {', '.join(missing)}")
            if not all_tests(problem):
                raise UsageError(f"{path}:{lineno}: problem {problem['id']} has no tests")
            problems.append(problem)
    return problems


def load_problems(name_or_path: str, split: str = "train", max_samples: int | None = None,
                  seed: int = 42) -> list[dict]:
    """Problems of a dataset split ("sample" | "code_contests" | "deepcoder") or a .jsonl file, shuffled with
    `seed` and cut to `max_samples`, so every script sees the same subset for the same arguments. Whatever keeps
    them from loading (an unknown name or split, a missing or malformed file) is a UsageError naming the mend."""
    if name_or_path in DATASETS:
        path = dataset_file(name_or_path, split)
        if not path.exists():
            raise DataMissingError(
                f"{path} not found; create it with: {DOWNLOAD_COMMANDS[name_or_path]}")
    else:
        path = Path(name_or_path)
        if path.suffix != ".jsonl":
            raise UsageError(f"unknown dataset {name_or_path!r}: use one of {', '.join(DATASETS)} or a .jsonl path")
        if not path.exists():
            raise DataMissingError(f"{path} not found")
    problems = read_jsonl(path)
    random.Random(seed).shuffle(problems)
    return problems if max_samples is None else problems[:max_samples]


def rows_fingerprint(rows) -> str:
    """sha256 of exactly what is trained on (each row's id, prompt and tests), for checkpoint manifests."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["id"], row["prompt"], row["tests"]], sort_keys=True).encode())
    return digest.hexdigest()


def all_tests(problem: dict) -> list[dict]:
    """Every test of a problem, public first (the judge's "first" selection then starts with the examples)."""
    return [t for group in TEST_GROUPS for t in problem["tests"].get(group, [])]


def make_problem(problem_id: str, dataset: str, split: str, name: str, statement: str,
                 tests: dict[str, list[dict]], *,
                 time_limit_s: float | None = None, memory_limit_mb: int | None = None, source: str = "unknown",
                 difficulty: str = "unknown", weakly_tested: bool = False, tags: Iterable[str] = (),
                 compare: str = "tokens", checker: str | None = None, **extra) -> dict:
    """The record every loader and script expects, with all keys present (extra optional fields appended)."""
    return {"id": problem_id, "dataset": dataset, "split": split, "name": name, "statement": statement,
            "tests": {g: tests.get(g, []) for g in TEST_GROUPS}, "time_limit_s": time_limit_s,
            "memory_limit_mb": memory_limit_mb, "source": source, "difficulty": difficulty,
            "weakly_tested": weakly_tested, "tags": list(dict.fromkeys(tags)), "compare": compare, "checker": checker,
            **extra}


def validation_split(dataset: str) -> str:
    """The split to validate on: "valid" when the dataset has one, else "test" (a .jsonl file has no splits)."""
    return "valid" if "valid" in SPLITS.get(dataset, ()) else "test"


@dataclass(frozen=True)
class PromptSettings:
    """What the model is asked. Training saves it in the adapter's metadata and every evaluation of that adapter
    renders the same prompt from it: an adapter measured on a prompt it was not trained on is measured wrong."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    instruction: str = DEFAULT_INSTRUCTION
    show_examples: bool = False

    def messages(self, problem: dict) -> list[dict]:
        return build_messages(problem, self.show_examples, self.system_prompt, self.instruction)

    def overridden(self, flags) -> PromptSettings:
        """A copy in which the prompt flags a user gave (`flags.system_prompt` etc. that are not None) replace ours."""
        given = {f.name: getattr(flags, f.name, None) for f in fields(self)}
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> PromptSettings:
        """The prompt an adapter was trained with (its metadata's "prompt"); the defaults for adapters saved
        before the prompt travelled with them, which were all trained on the defaults unless told otherwise."""
        saved = meta.get("prompt") or {}
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


def build_messages(problem: dict, show_examples: bool = False, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                   instruction: str = DEFAULT_INSTRUCTION) -> list[dict]:
    """Chat messages asking for one C++17 program; only public tests may appear (as samples), never solutions."""
    user = f"{instruction}\n\n{problem['statement'].strip()}"
    if show_examples:
        for i, test in enumerate(problem["tests"].get("public", []), 1):
            given, expected = test["input"].rstrip("\n"), test["output"].rstrip("\n")
            user += f"\n\nSample input {i}:\n```\n{given}\n```\nSample output {i}:\n```\n{expected}\n```"
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def render_prompt(messages: list[dict], tokenizer) -> tuple[str, list[int]]:
    """The exact text a model continues (the chat template with the assistant turn opened) and its token ids."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_solutions(problem: dict) -> list[str]:
    """Accepted C++ for a problem: code_contests keeps them in the record, the shipped set in solutions/<name>.cpp.

    For SFT baselines and warm starts only: they never go into a prompt."""
    if problem.get("reference_solutions"):
        return list(problem["reference_solutions"])
    if problem.get("dataset") == "sample":
        path = DATA_DIR / "sample" / "solutions" / f"{problem['id'].split('/', 1)[1]}.cpp"
        return [path.read_text(encoding="utf-8")] if path.exists() else []
    return []


def answer_text(solution: str, language: str = "cpp") -> str:
    """A completion in the format DEFAULT_INSTRUCTION asks for: one fenced code block."""
    return f"```{language}\n{solution.strip()}\n```"


# ----------------------------------------------------------------------------------------------------------------
# Command-line plumbing shared by the scripts


def cli_error(message: str) -> NoReturn:
    """One line on stderr and exit code 2: the user gets the cause, not a traceback. For scripts only."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# bitsandbytes logs this when it is imported on a CPU with AVX512-bf16 and the optional hub kernel is absent (it
# falls back to its own); PEFT imports bitsandbytes whenever it is installed, so even a run without NF4 printed it.
BITSANDBYTES_KERNEL_NOTE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def _not_bitsandbytes_kernel_note(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(BITSANDBYTES_KERNEL_NOTE)


def script_main(main: Callable) -> Callable:
    """Decorates a script's main(): a UsageError from the modules becomes `error: <message>` on stderr and exit
    code 2, as argparse does for a bad flag (the one place that turns an error into an exit), and bitsandbytes'
    kernel note above is not printed (that message alone)."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_bitsandbytes_kernel_note)
        try:
            return main(*args, **kwargs)
        except UsageError as err:
            cli_error(str(err))

    return run


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
    """YAML keys (flag names) with each retired spelling of a `known` flag renamed to that flag; a UsageError when
    `source` gives one flag under two names."""
    known, renamed, given = set(known), {}, {}
    for key, value in values.items():
        name = RETIRED_FLAGS[key] if RETIRED_FLAGS.get(key) in known else key
        if name in renamed:
            raise UsageError(f"{source} gives {name} twice, as {given[name]} and as {key}")
        renamed[name], given[name] = value, key
    return renamed


def canonical_flags(argv: list[str]) -> list[str]:
    """`argv` with each retired flag spelled as the flag it became (`--max_samples 8` -> `--num_problems 8`)."""
    return [f"--{RETIRED_FLAGS[word[2:]]}" if word.startswith("--") and word[2:] in RETIRED_FLAGS else word
            for word in argv]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, like every other user error here."""

    def error(self, message: str) -> NoReturn:
        cli_error(message)


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
            raise UsageError(f"cannot read config {args.config}: {e}") from e
        values = canonical_keys(values, vars(args), args.config)
        unknown = sorted(set(values) - set(vars(args)))
        if unknown:
            raise UsageError(f"unknown keys in {args.config}: {', '.join(unknown)}")
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args
