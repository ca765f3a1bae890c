"""One problem record for every script: loading it and prompting with it. Converting a dataset's rows into records is conversion.py's; writing files is paths.py's; the
command line (flags, their parsing and one-line errors) is arguments.py's.

A problem is a plain dict (one per jsonl line); see docs/data.md for the schema. Training, validation and testing
all go through `load_problems`, so a dataset is filtered, shuffled and sampled the same way everywhere.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import errors

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


class DataMissingError(errors.UsageError):
    """A dataset file is absent; the message names the command that creates it."""


# ----------------------------------------------------------------------------------------------------------------
# Loading and prompting


def dataset_file(name: str, split: str) -> Path:
    """Where `name`'s `split` lives on disk (data/<name>/<split>.jsonl)."""
    if split not in SPLITS[name]:
        raise errors.UsageError(f"dataset {name!r} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
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
                raise errors.UsageError(f"{path}:{lineno}: not a JSON problem record ({err.msg})") from None
            missing = [k for k in REQUIRED_KEYS if k not in problem]
            if missing:
                raise errors.UsageError(f"{path}:{lineno}: problem record lacks {', '.join(missing)}")
            if not all_tests(problem):
                raise errors.UsageError(f"{path}:{lineno}: problem {problem['id']} has no tests")
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
            raise errors.UsageError(f"unknown dataset {name_or_path!r}: use one of {', '.join(DATASETS)} or a .jsonl path")
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


def training_problems(name_or_path: str, num_problems: int | None, problem_ids: str | None, seed: int) -> list[dict]:
    """The train split as load_problems shuffles it, cut to `num_problems`; with `problem_ids` (comma-separated) only
    those problems, in that shuffled order (an id the split lacks is a UsageError)."""
    problems = load_problems(name_or_path, "train", None if problem_ids else num_problems, seed)
    if not problem_ids:
        return problems
    wanted = problem_ids.split(",")
    missing = sorted(set(wanted) - {p["id"] for p in problems})
    if missing:
        raise errors.UsageError(f"--problem_ids not in the training split: {', '.join(missing)}")
    return [p for p in problems if p["id"] in wanted][:num_problems]


class GrpoRows(NamedTuple):
    """GRPO's dataset, the problems it holds, and how many were dropped for a prompt over the length limit."""

    dataset: object  # datasets.Dataset
    problems: list[dict]
    too_long: int


def grpo_rows(problems: list[dict], prompt: PromptSettings, tokenizer, max_prompt_length: int,
              reward_columns: Callable[[list[dict], dict], dict]) -> GrpoRows:
    """Each problem as a GRPO row: its chat prompt, its id, source and difficulty (the seed's multipliers), and the
    columns the reward reads (`reward_columns(all tests, problem)`: utils.CodeReward.columns). A problem whose
    prompt is over `max_prompt_length` tokens, or that keeps no test, is dropped; none left is a UsageError."""
    from datasets import Dataset

    rows, too_long = [], 0
    for problem in problems:
        messages = prompt.messages(problem)
        if len(render_prompt(messages, tokenizer)[1]) > max_prompt_length:
            too_long += 1
            continue
        columns = reward_columns(all_tests(problem), problem)
        if columns["tests"]:
            rows.append({"prompt": messages, "id": problem["id"], "source": problem.get("source", ""),
                         "difficulty": problem.get("difficulty", ""), **columns})
    if not rows:
        raise errors.UsageError("no training problems left; raise --max_prompt_length or check the dataset")
    kept = {row["id"] for row in rows}
    return GrpoRows(Dataset.from_list(rows), [p for p in problems if p["id"] in kept], too_long)


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
