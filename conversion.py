"""Conversion of a dataset's rows into problem records, shared by download_code_contests.py and download_deepcoder.py.

What the judge can check is read from each statement (interactive, several answers, float or case-insensitive
compare, limits); rows are streamed through a converter into a split's .jsonl, written atomically; a training split
drops every row whose statement is in a held-out split. The record itself (its keys, making and loading it) is
data.py's.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import data
import errors
from paths import replaced_atomically

# What the judge can check is read from the statement. Measured on hand-labelled real statements
# (tests/fixtures/statement_labels.json, table in docs/data.md): "any" alone is not a signal ("choose any index"
# describes an operation), so several-answers wording must tie "any" to the output, to the answers, to "you" choosing
# among several, or to what "will be accepted". Each rule is a wording family, checked on the unlabelled real rows too.
_FLAGS = re.IGNORECASE | re.MULTILINE
INTERACTIVE_RE = re.compile(
    r"\binteractive (problem|task)\b|\bthis (problem|task) is interactive\b|^\s*interaction( format)?:?\s*$|"
    r"\bflush the output\b|\binteractor\b|^tags:\s*\[[^\]]*'interactive'", _FLAGS)
MULTI_ANSWER_RE = re.compile(
    r"\b(print|output|find|construct|reconstruct|report|restore) any\b|"
    r"\bif there (are|is|exist) (multiple|several|many|more than one)\b[^.]{0,120}?"
    r"\b(print|output|find|give|return|you (can|may) (pick|choose|select|take))\b[^.]{0,20}?\b(any|arbitrary)\b|"
    r"\bany\b(?! (case|register|letter))[^.]{0,40}?\b(will|would) be (accepted|considered correct)\b"
    r"(?! as (a )?(positive|negative|yes|no)\b)|"
    r"\b(print|output)\b[^.]{0,160}?\bany (suitable|appropriate|acceptable)\b|"
    r"\b(find|construct|build) an? [^.]{0,200}\.\s*(it can be (shown|proven|proved)|we can show) that "
    r"(an answer|a solution) always exists\b|"
    r"\b(multiple|several|many|more than one) (possible |correct |valid |optimal |suitable )?"
    r"(answers|solutions)\b[^.]{0,80}?\bany\b|"
    r"\b(print|output)[^.]{0,80}?\bin any order\b|"
    r"\b(does not|doesn't|do not|don't|need not) (need to )?(be )?minimi[sz]e|"
    r"\binstead of \$?1\$? [^.]{0,60}recognized", _FLAGS)
# "absolute or relative error ... 10^{-6}", "absolute difference ... shouldn't exceed 10^-6"
FLOAT_RE = re.compile(
    r"\b(absolute|relative)( or (absolute|relative))? (error|difference)\b[^.]{0,160}?"
    r"(?:10\s*\^\s*\{?\s*[-−](\d+)\s*\}?|1e-(\d+))", _FLAGS)
NOCASE_RE = re.compile(
    r"\bin any (case|register)\b|\b(upper|lower)[- ]?case\b[^.]{0,60}\b(recogni[sz]ed|accepted|allowed)\b|"
    r"\bwill be (recogni[sz]ed|accepted) as (a )?positive", _FLAGS)
YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class StatementCheck:
    """How the judge can check answers to a statement: `skip` names why it cannot ("interactive",
    "multiple_answers") or is None; `compare` is the judge's compare rule for the record
    ("tokens" | "tokens_nocase" | "float:<eps>")."""
    skip: str | None
    compare: str = "tokens"


def classify_statement(statement: str) -> StatementCheck:
    """Read from a statement whether one expected output decides correctness, and how outputs compare."""
    if INTERACTIVE_RE.search(statement):
        return StatementCheck("interactive")
    if MULTI_ANSWER_RE.search(statement):
        return StatementCheck("multiple_answers")
    if match := FLOAT_RE.search(statement):
        return StatementCheck(None, f"float:{10.0 ** -int(match.group(5) or match.group(6)):g}")
    if NOCASE_RE.search(statement) and YES_NO_RE.search(statement):
        return StatementCheck(None, "tokens_nocase")
    return StatementCheck(None)


def judge_fields(statement: str | None, checker: str | None = None) -> dict:
    """The record's `compare` and `checker` fields, or Skip when the judge cannot check answers to `statement`:
    no statement, interactive, or several valid answers without a checker to decide them."""
    if not isinstance(statement, str) or not statement.strip():
        raise Skip("no_statement")
    check = classify_statement(statement)
    if check.skip == "interactive" or (check.skip == "multiple_answers" and checker is None):
        raise Skip(check.skip)
    return {"compare": check.compare, "checker": checker}


TIME_LIMIT_RE = re.compile(r"^\s*time limit(?: per test)?\s*:\s*([\d.]+)\s*(ms|milliseconds?|s|sec|seconds?)\b", _FLAGS)
MEMORY_LIMIT_RE = re.compile(r"^\s*memory limit(?: per test)?\s*:\s*([\d.]+)\s*(mb|megabytes?|mib|gb|kb)\b", _FLAGS)


def statement_limits(statement: str) -> tuple[float | None, int | None]:
    """(time_limit_s, memory_limit_mb) from "Time Limit: 2000 ms" / "Memory Limit: 256 MB" lines (Codeforces rows
    carry their limits only there); None where the statement does not say."""
    seconds = megabytes = None
    if match := TIME_LIMIT_RE.search(statement):
        seconds = float(match.group(1)) / (1000 if match.group(2).lower().startswith("m") else 1)
    if match := MEMORY_LIMIT_RE.search(statement):
        scale = {"g": 1024, "k": 1 / 1024}.get(match.group(2)[0].lower(), 1)
        megabytes = int(float(match.group(1)) * scale)
    return seconds, megabytes


def load_checkers(folder: str | None) -> dict[str, str]:
    """C++ checkers supplied by the user, keyed by file stem (see `checker_key`): they let a problem with several
    valid answers be kept and judged by its checker instead of being skipped."""
    if not folder:
        return {}
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(Path(folder).glob("*.cpp"))}


def checker_key(problem_id: str) -> str:
    """A checker's file stem for a problem id: the id without its dataset, "/" -> "_" (code_contests/train/1575_A
    -> train_1575_A, deepcoder/lcbv5/test/17 -> lcbv5_test_17)."""
    return problem_id.split("/", 1)[1].replace("/", "_")


def statement_key(statement: str) -> str:
    """Fingerprint of a statement's letters and digits only (case, spacing, LaTeX `$`, punctuation ignored), used to
    keep test-split statements out of training files."""
    return hashlib.sha1(re.sub(r"[^0-9a-z]+", "", statement.lower()).encode()).hexdigest()


def held_out_keys(statements: Iterable[str | None], desc: str) -> set[str]:
    """Statement keys of every row of held-out splits, kept or skipped alike: a test problem skipped from test.jsonl
    (interactive, several answers, no tests) must not reach train.jsonl either."""
    return {statement_key(s) for s in tqdm(statements, desc=desc, unit="row") if isinstance(s, str) and s.strip()}


def only_examples(statement: str, tests: list[dict]) -> bool:
    """Whether every test's input is a block of lines of the statement, i.e. the tests are only its examples (the
    rllm copy of LiveCodeBench kept just these as stdin tests): such a problem is weakly tested."""
    lines = "\n" + "\n".join(line.strip() for line in statement.splitlines()) + "\n"
    return bool(tests) and all(
        "\n" + "\n".join(line.strip() for line in t["input"].strip().splitlines()) + "\n" in lines for t in tests)


def first_by_fingerprint(path: Path, n: int) -> str:
    """Rewrite a converted split with only the first `n` problems ordered by statement fingerprint (statement_key):
    a selection made by the statements alone, so the hub and a local copy whose rows come in another order choose
    the same problems, and nothing a model did can move a problem in or out. Returns the line to print."""
    problems = data.read_jsonl(path)
    chosen = sorted(problems, key=lambda p: statement_key(p["statement"]))[:n]
    with replaced_atomically(path) as tmp:
        tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in chosen), encoding="utf-8")
    return f"{path}: the first {len(chosen)} of {len(problems)} problems by statement fingerprint"


def cap_tests(tests: list[dict], max_tests: int, max_test_bytes: int) -> tuple[list[dict], int]:
    """Keep at most `max_tests` tests whose input+output fit in `max_test_bytes` (a huge test is dropped, never
    truncated: a cut input has a different answer). Returns the kept tests and how many were dropped."""
    kept = [t for t in tests if len(t["input"].encode()) + len(t["output"].encode()) <= max_test_bytes]
    return kept[:max_tests], len(tests) - min(len(kept), max_tests)


@dataclass
class ConvertStats:
    """What a conversion kept and skipped (by reason), printed at the end of every download."""
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped_tests: int = 0  # from kept problems: over a cap, or (DeepCoder) not stdin tests
    notes: Counter = field(default_factory=Counter)  # things a converter saw but did not skip for

    def report(self, label: str) -> str:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items())) or "none"
        notes = "".join(f", {n} {note}" for note, n in sorted(self.notes.items()))
        return (f"{label}: kept {self.kept}, skipped {sum(self.skipped.values())} ({reasons}), "
                f"tests dropped {self.dropped_tests}{notes}")


class Skip(Exception):
    """Raised by a row converter to skip a row; the message is the reason counted in ConvertStats."""


def convert_rows(rows: Iterable, convert: Callable[[object, int], tuple[dict, int]], out_path: Path, desc: str,
                 exclude_keys: set[str] = frozenset(), stats: ConvertStats | None = None) -> ConvertStats:
    """Stream rows through `convert` (row, index) -> (problem, tests dropped) into `out_path`, via a temp
    file so a failed run leaves no half-written file.
    Rows whose statement is in `exclude_keys` (a held-out split) are skipped as "in_held_out_split"; a row the
    converter cannot read (a field of the wrong type) is skipped as "malformed_row" and the split goes on."""
    stats, seen_ids = stats or ConvertStats(), set()
    with replaced_atomically(out_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for index, row in enumerate(tqdm(rows, desc=desc, unit="row")):
            try:
                problem, dropped = convert(row, index)
            except Skip as reason:
                stats.skipped[str(reason)] += 1
                continue
            except (TypeError, ValueError, KeyError, AttributeError):
                stats.skipped["malformed_row"] += 1
                continue
            if statement_key(problem["statement"]) in exclude_keys:
                stats.skipped["in_held_out_split"] += 1
                continue
            if problem["id"] in seen_ids:
                problem["id"] += f"#{index}"
            seen_ids.add(problem["id"])
            stats.kept += 1
            stats.dropped_tests += dropped
            f.write(json.dumps(problem, ensure_ascii=False) + "\n")
    return stats


def convert_split(rows: Iterable, convert: Callable[[object, int], tuple[dict, int]], out_path: Path, split: str,
                  held_out: set[str], label: str, stats: ConvertStats | None = None) -> None:
    """Convert one split and print its kept/skipped report. The train split drops rows whose statement is in
    `held_out` (every statement of the dataset's held-out splits), so no test problem reaches training."""
    try:
        stats = convert_rows(rows, convert, out_path, desc=label.split(" ")[0],
                             exclude_keys=held_out if split == "train" else frozenset(), stats=stats)
    except OSError as e:  # missing files, hub unreachable
        raise errors.UsageError(f"{split}: {e}") from e
    print(stats.report(f"{label} -> {out_path}"))


def parse_test_string(raw: str) -> object:
    """Decode a tests column: JSON, or the Python-literal form some DeepCoder-era dumps use; Skip if neither."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise Skip("malformed_tests") from None


def local_parquet_rows(files: list[str], columns: list[str] | None = None) -> Iterator[dict]:
    """Stream rows of local parquet files through `datasets`: the same row dicts the hub gives, so fixtures and
    pre-downloaded data exercise the hub code path. `columns` reads only those columns (held-out statements).
    Files without rows are left out: `datasets` fails on them ("BatchSize must be greater than 0")."""
    import pyarrow.parquet as pq
    from datasets import load_dataset

    files = [f for f in files if pq.ParquetFile(f).metadata.num_rows]
    if not files:
        return iter(())
    return load_dataset("parquet", data_files={"rows": files}, split="rows", streaming=True, columns=columns)
