"""Convert agentica-org/DeepCoder-Preview-Dataset into problem records: data/deepcoder/{train,test}.jsonl.

    python download_deepcoder.py                                   # lcbv5 train and test from the hub
    python download_deepcoder.py --subsets lcbv5 taco primeintellect codeforces
    python download_deepcoder.py --local_dir ~/DeepCoder           # <dir>/<config>/<split>-*.parquet
    python download_deepcoder.py --splits test --first 64 --output_dir data/lcb_heldout   # the held-out set

Rows are streamed one at a time (lcbv5 is ~5 GB for ~600 rows) and tests are capped as they are read. Before train
is converted, the statements of every test split of the dataset (lcbv5 and codeforces, whatever --subsets and
--splits say; the statement column only) are read, and a training row with one of them is dropped and counted
("in_held_out_split").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import conversion
import arguments
import data
import errors

HUB_NAME = "agentica-org/DeepCoder-Preview-Dataset"
CONFIG_SPLITS = {"lcbv5": ("train", "test"), "primeintellect": ("train",), "taco": ("train",), "codeforces": ("test",)}
HELD_OUT = [(config, "test") for config, splits in CONFIG_SPLITS.items() if "test" in splits]
SOURCES = {"lcbv5": "LIVECODEBENCH", "primeintellect": "PRIMEINTELLECT", "taco": "TACO", "codeforces": "CODEFORCES"}
FUNCTION_KINDS = {"functional", "function_call"}


def parse_metadata(raw: object) -> dict:
    """`metadata` is a JSON string in most configs; anything unreadable counts as empty."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def stdin_tests(raw: str) -> tuple[list[dict], int]:
    """The four shapes of the `tests` string -> ([{input, output}], tests dropped); conversion.Skip for function-call
    or malformed tests. lcbv5 [{input, output, testtype}], taco {inputs, outputs, fn_name?},
    primeintellect [{type, input, output, fn_name?}], codeforces [{input, output}]. Tests labelled functional
    inside a stdin problem are dropped: in real LCB dumps their inputs do not follow the statement's format."""
    parsed = conversion.parse_test_string(raw)
    if isinstance(parsed, dict):
        if parsed.get("fn_name"):
            raise conversion.Skip("function_call")
        inputs, outputs = parsed.get("inputs"), parsed.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise conversion.Skip("malformed_tests")
        pairs = list(zip(inputs, outputs))
    elif isinstance(parsed, list) and all(isinstance(t, dict) for t in parsed):
        stdin = [t for t in parsed if t.get("testtype", t.get("type")) not in FUNCTION_KINDS]
        if any(t.get("fn_name") for t in parsed) or (parsed and not stdin):
            raise conversion.Skip("function_call")
        pairs = [(t.get("input"), t.get("output")) for t in stdin]
    else:
        raise conversion.Skip("malformed_tests")
    if not all(isinstance(i, str) and isinstance(o, str) for i, o in pairs):
        raise conversion.Skip("malformed_tests")
    return [{"input": i, "output": o} for i, o in pairs], len(parsed) - len(pairs) if isinstance(parsed, list) else 0


def make_converter(split: str, args: argparse.Namespace, notes):
    """The (config, index, row) -> (problem, dropped tests) function for one split; raises conversion.Skip. `notes`
    counts kept problems whose tests are only the statement's examples."""

    checkers = conversion.load_checkers(args.checkers)

    def convert(item: tuple[str, int, dict], _: int) -> tuple[dict, int]:
        config, index, row = item
        statement = row.get("problem")
        if not isinstance(statement, str) or not statement.strip():
            raise conversion.Skip("no_statement")
        metadata = parse_metadata(row.get("metadata"))
        if metadata.get("func_name") or (row.get("starter_code") or "").strip():
            raise conversion.Skip("function_call")
        tests, not_stdin = stdin_tests(row.get("tests") or "[]")
        if not tests:
            raise conversion.Skip("no_tests")
        problem_id = f"deepcoder/{config}/{split}/{index}"
        judging = conversion.judge_fields(statement, checkers.get(conversion.checker_key(problem_id)))
        kept, dropped = conversion.cap_tests(tests, args.max_tests, args.max_test_bytes)
        if not kept:
            raise conversion.Skip("tests_too_large")
        # codeforces rows carry only the statement's examples: they are public tests, and weak ones.
        group = "public" if config == "codeforces" else "private"
        weak = config == "codeforces" or conversion.only_examples(statement, kept)
        if weak:
            notes["only_statement_examples"] += 1
        name = next(line.strip() for line in statement.splitlines() if line.strip())[:80]
        time_limit_s, memory_limit_mb = conversion.statement_limits(statement)
        problem = data.make_problem(
            problem_id, "deepcoder", split, metadata.get("title") or name, statement,
            {group: kept}, time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb, source=SOURCES[config],
            difficulty=str(metadata.get("difficulty") or "unknown"), weakly_tested=weak,
            config=config, **judging)
        return problem, dropped + not_stdin

    return convert


def local_files(local_dir: str, config: str, split: str) -> list[str]:
    return sorted(str(f) for f in (Path(local_dir) / config).glob(f"{split}-*.parquet"))


def stream(config: str, split: str, local_dir: str | None, columns: list[str] | None = None):
    """One config's split (only `columns` if given), from the hub or local parquet laid out like the hub."""
    if local_dir:
        return conversion.local_parquet_rows(local_files(local_dir, config, split), columns)
    from datasets import load_dataset

    return load_dataset(HUB_NAME, config, split=split, streaming=True, columns=columns)


def rows_for(config: str, split: str, local_dir: str | None):
    """Stream (config, index, row) for one config's split."""
    return ((config, i, row) for i, row in enumerate(stream(config, split, local_dir)))


def held_out_statements(local_dir: str | None) -> set[str]:
    """Statement keys of every test row of every config (the `problem` column only), whatever this run converts:
    lcbv5 test rows never reach train.jsonl, even from a train-only or taco-only run."""
    keys: set[str] = set()
    for config, split in HELD_OUT:
        if local_dir and not local_files(local_dir, config, split):
            raise errors.UsageError(f"--local_dir {local_dir} has no {config}/{split}-*.parquet, so training rows "
                                  f"cannot be checked against it; put the hub's {config} {split} parquet files there too")
        try:
            rows = stream(config, split, local_dir, columns=["problem"])
            keys |= conversion.held_out_keys((row.get("problem") for row in rows),
                                             f"held-out {config}/{split} statements")
        except OSError as e:  # hub unreachable
            raise errors.UsageError(f"{config}/{split} statements: {e}")
    return keys


@errors.script_main
def main(argv: list[str] | None = None) -> None:
    p = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subsets", "--configs", dest="subsets", metavar="SUBSET", nargs="+", default=["lcbv5"],
                   choices=sorted(CONFIG_SPLITS),
                   help="the hub's subsets (its `name` argument); --configs is the old spelling, not --config (YAML)")
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--local_dir", help="folder with <subset>/<split>-*.parquet files (instead of the hub)")
    p.add_argument("--output_dir", default=str(data.DATA_DIR / "deepcoder"))
    p.add_argument("--checkers", metavar="DIR", help="C++ checkers named <subset>_<split>_<row>.cpp "
                   "(lcbv5_test_17.cpp): a problem with several valid answers is kept, judged by its checker")
    p.add_argument("--max_tests", type=int, default=20, help="tests kept per problem")
    p.add_argument("--max_test_bytes", type=int, default=1 << 20, help="drop tests with larger input+output")
    p.add_argument("--first", type=int, metavar="N", help="write only the first N kept problems of each split, "
                   "ordered by statement fingerprint (a selection fixed by the statements, e.g. a held-out set)")
    args = arguments.parse_with_config(p, argv)
    if args.first is not None and args.first < 1:
        raise errors.UsageError(f"--first must be at least 1, not {args.first}")
    for folder in ("local_dir", "checkers"):
        if getattr(args, folder) and not Path(getattr(args, folder)).is_dir():
            raise errors.UsageError(f"--{folder} {getattr(args, folder)} is not a folder")

    held_out = held_out_statements(args.local_dir) if "train" in args.splits else set()
    for split in [s for s in ("test", "train") if s in args.splits]:
        configs = [c for c in args.subsets if split in CONFIG_SPLITS[c]
                   and (not args.local_dir or local_files(args.local_dir, c, split))]
        if not configs:
            print(f"deepcoder/{split}: no {split} split among {args.subsets}"
                  + (f" under {args.local_dir}" if args.local_dir else "") + "; skipped")
            continue
        rows = (item for config in configs for item in rows_for(config, split, args.local_dir))
        out = Path(args.output_dir) / f"{split}.jsonl"
        stats = conversion.ConvertStats()
        conversion.convert_split(rows, make_converter(split, args, stats.notes), out, split, held_out,
                           f"deepcoder/{split} ({', '.join(configs)})", stats)
        if args.first:
            print(conversion.first_by_fingerprint(out, args.first))


if __name__ == "__main__":
    main()
