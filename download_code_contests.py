"""Convert deepmind/code_contests into problem records: data/code_contests/{train,valid,test}.jsonl.

    python download_code_contests.py                                 # hub, all splits, seed's easy filter
    python download_code_contests.py --local_dir ~/code_contests     # local parquet in the hub's schema
    python download_code_contests.py --config configs/data_code_contests.yaml
    python download_code_contests.py --splits train --difficulties A-V --max_cf_rating 1100   # easy, by rating

Hub rows and local parquet rows go through the same `convert` function. Before train is converted, the statements
of every valid and test row (kept or skipped, whatever --splits says) are read, and a training row with one of
those statements is dropped and counted.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import conversion
import arguments
import data
import errors

HUB_NAME = "deepmind/code_contests"
# The enums of deepmind/code_contests' contest_problem.proto, by name. The hub's columns are plain int64 holding
# these numbers (the repository's converter writes `p.source`, `p.difficulty` as they are); the numbering has
# gaps (source 5 and difficulty 18 are unused, so ATCODER = 6, L = 19, V = 29), which the hub's dataset card
# lists densely. A stream whose features carry class labels is read by those names instead.
SOURCES = {0: "UNKNOWN", 1: "CODECHEF", 2: "CODEFORCES", 3: "HACKEREARTH", 4: "CODEJAM", 6: "ATCODER", 7: "AIZU"}
DIFFICULTIES = {0: "UNKNOWN", 1: "EASY", 2: "MEDIUM", 3: "HARD", 4: "HARDER", 5: "HARDEST", 6: "EXTERNAL",
                **{7 + i: chr(ord("A") + i) for i in range(11)},  # 7 A ... 17 K
                **{19 + i: chr(ord("L") + i) for i in range(11)}}  # 19 L ... 29 V
LANGUAGES = {0: "UNKNOWN", 1: "PYTHON", 2: "CPP", 3: "PYTHON3", 4: "JAVA"}
HELD_OUT_SPLITS = ("valid", "test")
SPLIT_ORDER = ("test", "valid", "train")


def expand_difficulties(items: list[str]) -> set[str]:
    """Difficulty names, with letter windows such as "A-C" expanded, validated against the hub's labels."""
    names = set()
    for item in items:
        item = item.upper()
        if re.fullmatch(r"[A-V]-[A-V]", item):
            names.update(chr(c) for c in range(ord(item[0]), ord(item[2]) + 1))
        elif item in DIFFICULTIES.values():
            names.add(item)
        else:
            raise ValueError(f"unknown difficulty {item!r}; use {', '.join(list(DIFFICULTIES.values())[:7])} "
                             "or letters A-V")
    return names


def test_list(group: dict | None) -> list[dict]:
    """Hub struct-of-lists {input: [...], output: [...]} -> [{input, output}, ...]."""
    group = group or {}
    return [{"input": i, "output": o} for i, o in zip(group.get("input") or [], group.get("output") or [])]


def enum_names(rows, column: str, proto: dict[int, str]) -> dict[int, str]:
    """Number -> name for an enum column: the stream's own class labels when it has them, else the proto's."""
    from datasets import ClassLabel

    feature = (getattr(rows, "features", None) or {}).get(column)
    if isinstance(feature, ClassLabel):
        return {i: name.removesuffix("_SOURCE").removesuffix("_DIFFICULTY") for i, name in enumerate(feature.names)}
    return proto


def enum_label(names: dict[int, str], number: object, column: str, notes: Counter) -> str:
    """The name of an enum number; a number the definition lacks is UNKNOWN and counted, never an IndexError."""
    if isinstance(number, int) and number in names:
        return names[number]
    notes[f"unknown_{column}_number"] += 1
    return "UNKNOWN"


def make_converter(split: str, args: argparse.Namespace, difficulties: set[str], rows, notes: Counter):
    """The row -> (problem, dropped tests) function for one split; raises conversion.Skip with the reason.
    `notes` counts unknown enum numbers and Codeforces rows whose difficulty letter disagrees with cf_index."""
    sources = {s.upper() for s in args.sources}
    source_names, difficulty_names = enum_names(rows, "source", SOURCES), enum_names(rows, "difficulty", DIFFICULTIES)
    checkers = conversion.load_checkers(args.checkers)

    def convert(row: dict, index: int) -> tuple[dict, int]:
        source = enum_label(source_names, row.get("source"), "source", notes)
        difficulty = enum_label(difficulty_names, row.get("difficulty"), "difficulty", notes)
        cf_index = row.get("cf_index") or ""
        if source == "CODEFORCES" and len(difficulty) == 1 and cf_index[:1].isalpha() and cf_index[0] != difficulty:
            notes["difficulty_disagrees_with_cf_index"] += 1
        if source not in sources:
            raise conversion.Skip("source")
        if difficulty not in difficulties:
            raise conversion.Skip("difficulty")
        if args.max_cf_rating is not None and not 0 < (row.get("cf_rating") or 0) <= args.max_cf_rating:
            raise conversion.Skip("cf_rating")
        if row.get("input_file") or row.get("output_file"):
            raise conversion.Skip("file_io")
        name = row.get("name") or f"problem {index}"
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name.split(". ")[0]).strip("_") or str(index)
        problem_id = f"code_contests/{split}/{slug}"
        judging = conversion.judge_fields(row.get("description"), checkers.get(conversion.checker_key(problem_id)))
        tests, dropped = {}, 0
        budget = args.max_tests
        for group in data.TEST_GROUPS:
            tests[group], n = conversion.cap_tests(test_list(row.get(f"{group}_tests")), budget, args.max_test_bytes)
            budget, dropped = budget - len(tests[group]), dropped + n
        if not any(tests.values()):
            raise conversion.Skip("no_tests" if not dropped else "tests_too_large")
        solutions = row.get("solutions") or {}
        cpp = [s for lang, s in zip(solutions.get("language") or [], solutions.get("solution") or [])
               if LANGUAGES.get(lang) == "CPP" and s and len(s.encode()) <= args.max_solution_bytes]
        time_limit = row.get("time_limit") or {}
        seconds = (time_limit.get("seconds") or 0) + (time_limit.get("nanos") or 0) / 1e9
        memory = row.get("memory_limit_bytes") or 0
        problem = data.make_problem(
            problem_id, "code_contests", split, name, row["description"], tests,
            time_limit_s=seconds or None, memory_limit_mb=memory // 1_000_000 or None, source=source,
            difficulty=difficulty, tags=row.get("cf_tags") or [], **judging,
            weakly_tested=not (tests["private"] or tests["generated"]),  # the statement's examples only
            reference_solutions=cpp[:args.max_reference_solutions])
        return problem, dropped

    return convert


def rows_for(split: str, local_dir: str | None, columns: list[str] | None = None):
    """Stream one split (only `columns` if given) from the hub or from local parquet named like the hub's
    (data/<split>-*.parquet); None when local_dir has no file for the split."""
    if local_dir:
        files = sorted(str(f) for f in Path(local_dir).rglob(f"{split}-*.parquet"))
        return conversion.local_parquet_rows(files, columns) if files else None
    from datasets import load_dataset

    return load_dataset(HUB_NAME, split=split, streaming=True, columns=columns)


def held_out_statements(local_dir: str | None) -> set[str]:
    """Statement keys of every valid and test row, read (description column only) whatever --splits converts."""
    keys: set[str] = set()
    for split in HELD_OUT_SPLITS:
        rows = rows_for(split, local_dir, columns=["description"])
        if rows is None:
            raise errors.UsageError(f"--local_dir {local_dir} has no {split}-*.parquet, so training rows cannot be "
                                  f"checked against the {split} split; put the hub's {split} parquet files there too")
        try:
            keys |= conversion.held_out_keys((row.get("description") for row in rows), f"held-out {split} statements")
        except OSError as e:  # hub unreachable
            raise errors.UsageError(f"{split} statements: {e}")
    return keys


@errors.script_main
def main(argv: list[str] | None = None) -> None:
    p = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", nargs="+", default=["train", "valid", "test"], choices=SPLIT_ORDER)
    p.add_argument("--local_dir", help="folder with <split>-*.parquet files in the hub's schema (instead of the hub)")
    p.add_argument("--output_dir", default=str(data.DATA_DIR / "code_contests"))
    p.add_argument("--sources", nargs="+", default=["CODEFORCES", "ATCODER", "CODECHEF", "HACKEREARTH"],
                   help=f"keep these sources ({', '.join(SOURCES.values())})")
    p.add_argument("--difficulties", nargs="+", default=["A-B", "EASY"],
                   help="keep these difficulty labels; letter windows like A-C allowed (default: A-B EASY)")
    p.add_argument("--max_cf_rating", type=int, metavar="R", help="keep only Codeforces-rated rows with "
                   "0 < cf_rating <= R (unrated rows, cf_rating 0, are skipped)")
    p.add_argument("--checkers", metavar="DIR", help="C++ checkers named <split>_<slug>.cpp (train_1575_A.cpp): a "
                   "problem with several valid answers is kept, judged by its checker, instead of skipped")
    p.add_argument("--max_tests", type=int, default=50, help="tests kept per problem (public first)")
    p.add_argument("--max_test_bytes", type=int, default=1 << 20, help="drop tests with larger input+output")
    p.add_argument("--max_reference_solutions", type=int, default=5, help="C++ solutions kept (for SFT, never prompts)")
    p.add_argument("--max_solution_bytes", type=int, default=20_000)
    args = arguments.parse_with_config(p, argv)
    try:
        difficulties = expand_difficulties(args.difficulties)
    except ValueError as e:
        raise errors.UsageError(str(e))
    if unknown := {s.upper() for s in args.sources} - set(SOURCES.values()):
        raise errors.UsageError(f"unknown sources {sorted(unknown)}; use {', '.join(SOURCES.values())}")
    for folder in ("local_dir", "checkers"):
        if getattr(args, folder) and not Path(getattr(args, folder)).is_dir():
            raise errors.UsageError(f"--{folder} {getattr(args, folder)} is not a folder")

    held_out = held_out_statements(args.local_dir) if "train" in args.splits else set()
    for split in [s for s in SPLIT_ORDER if s in args.splits]:
        out = Path(args.output_dir) / f"{split}.jsonl"
        rows = rows_for(split, args.local_dir)
        if rows is None:
            print(f"code_contests/{split}: no {split}-*.parquet under {args.local_dir}; skipped")
            continue
        stats = conversion.ConvertStats()
        convert = make_converter(split, args, difficulties, rows, stats.notes)
        conversion.convert_split(rows, convert, out, split, held_out, f"code_contests/{split}", stats)


if __name__ == "__main__":
    main()
