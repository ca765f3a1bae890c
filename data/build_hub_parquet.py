"""Write the real rows of ../shared/realdata as the hubs' parquet files, for the downloaders' --local_dir.

    python data/build_hub_parquet.py --out /tmp/hub                     # reads ../shared/realdata
    python download_deepcoder.py --local_dir /tmp/hub/deepcoder --splits test --first 64 --output_dir data/lcb_heldout
    python download_code_contests.py --local_dir /tmp/hub/code_contests --splits train --difficulties A-V \\
        --max_cf_rating 1100 --output_dir data/code_contests_easy

The downloaders then read these files through `load_dataset("parquet", ...)` and the same `convert` as a hub
download, so what they write is what `load_dataset(HUB_NAME, ...)` would give for the same rows. Nothing is
invented: a column the copy lacks is left empty (null, "", [] or "{}"), never filled with a guess.

    deepcoder/lcbv5/test        rllm's 279 LiveCodeBench rows: problem, starter_code, tests -> the JSON string
                                [{input, output, testtype}] of agentica-org/DeepCoder-Preview-Dataset, metadata "{}"
    deepcoder/codeforces/test   rllm's 408 Codeforces rows: tests [{input, output}] as a JSON string
    code_contests/train         the 30 deepmind/code_contests train rows (cf_rating <= 1100) under their hub names;
                                their publisher dropped solutions and private/generated tests
    code_contests/test          rllm's 165 test rows: the statement's "Time Limit: {...} / Memory Limit: N Bytes"
                                trailer back to time_limit / memory_limit_bytes, the merged tests as private tests,
                                source CODEFORCES, difficulty UNKNOWN, name "<row>. code_contests test"
    code_contests/valid         empty: the copy has none, and the train conversion needs the file to exist
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import errors  # noqa: E402  (repo root on the path first)

LCB = "lcb_deepcoder/rllm_livecodebench_test_279.json"
CODEFORCES = "lcb_deepcoder/rllm_codeforces_test_408.json"
CODE_CONTESTS_TRAIN = "code_contests/formalizewithtest_code_contests_sample_train_short.jsonl"
CODE_CONTESTS_TEST = "code_contests/rllm_code_contests_test.json"

# deepmind/code_contests' columns (enums as int64, see download_code_contests.py) and
# agentica-org/DeepCoder-Preview-Dataset's (tests and metadata are JSON strings).
TESTS = pa.struct([("input", pa.list_(pa.string())), ("output", pa.list_(pa.string()))])
SOLUTIONS = pa.struct([("language", pa.list_(pa.int64())), ("solution", pa.list_(pa.string()))])
CODE_CONTESTS_SCHEMA = pa.schema([
    ("name", pa.string()), ("description", pa.string()), ("public_tests", TESTS), ("private_tests", TESTS),
    ("generated_tests", TESTS), ("source", pa.int64()), ("difficulty", pa.int64()), ("solutions", SOLUTIONS),
    ("incorrect_solutions", SOLUTIONS), ("cf_contest_id", pa.int64()), ("cf_index", pa.string()),
    ("cf_points", pa.float64()), ("cf_rating", pa.int64()), ("cf_tags", pa.list_(pa.string())),
    ("is_description_translated", pa.bool_()), ("untranslated_description", pa.string()),
    ("time_limit", pa.struct([("seconds", pa.int64()), ("nanos", pa.int64())])),
    ("memory_limit_bytes", pa.int64()), ("input_file", pa.string()), ("output_file", pa.string())])
DEEPCODER_SCHEMA = pa.schema([("problem", pa.string()), ("tests", pa.string()), ("starter_code", pa.string()),
                              ("metadata", pa.string())])
TRAILER_RE = re.compile(r"\n*Time Limit: (\{.*?\})\nMemory Limit: (\d+) Bytes\s*$")


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    """Rows in a hub schema, as one `<split>-00000-of-00001.parquet` file (a file with no rows is still written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def deepcoder_row(row: dict) -> dict:
    """An rllm row ({problem, tests: list, starter_code?}) in DeepCoder's columns."""
    return {"problem": row["problem"], "tests": json.dumps(row["tests"], ensure_ascii=False),
            "starter_code": row.get("starter_code") or "", "metadata": "{}"}


def code_contests_test_row(index: int, row: dict) -> dict:
    """An rllm code_contests test row back in the hub's schema (see the module docstring)."""
    trailer = TRAILER_RE.search(row["problem"])
    if trailer is None:
        raise ValueError(f"{CODE_CONTESTS_TEST} row {index}: no 'Time Limit / Memory Limit' trailer")
    limit = ast.literal_eval(trailer.group(1))
    empty = {"input": [], "output": []}
    return {name: None for name in CODE_CONTESTS_SCHEMA.names} | {
        "name": f"{index}. code_contests test", "description": row["problem"][:trailer.start()],
        "public_tests": empty, "private_tests": {"input": row["tests"]["inputs"], "output": row["tests"]["outputs"]},
        "generated_tests": empty, "source": 2, "difficulty": 0, "time_limit": limit,
        "memory_limit_bytes": int(trailer.group(2))}


def build(realdata: Path, out: Path) -> dict[str, int]:
    """Write every file of the module docstring under `out`; returns the rows written per file."""
    def read(name: str) -> list[dict]:
        with open(realdata / name, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()] if name.endswith(".jsonl") else json.load(f)

    files = {
        "deepcoder/lcbv5/test": ([deepcoder_row(r) for r in read(LCB)], DEEPCODER_SCHEMA),
        "deepcoder/codeforces/test": ([deepcoder_row(r) for r in read(CODEFORCES)], DEEPCODER_SCHEMA),
        "code_contests/train": ([{n: r.get(n) for n in CODE_CONTESTS_SCHEMA.names} for r in read(CODE_CONTESTS_TRAIN)],
                                CODE_CONTESTS_SCHEMA),
        "code_contests/test": ([code_contests_test_row(i, r) for i, r in enumerate(read(CODE_CONTESTS_TEST))],
                               CODE_CONTESTS_SCHEMA),
        "code_contests/valid": ([], CODE_CONTESTS_SCHEMA),
    }
    for name, (rows, schema) in files.items():
        write_parquet(out / f"{name}-00000-of-00001.parquet", rows, schema)
    return {name: len(rows) for name, (rows, _) in files.items()}


def main(argv: list[str] | None = None) -> None:
    p = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = next((d / "shared" / "realdata" for d in ROOT.parents if (d / "shared" / "realdata").is_dir()),
                  ROOT.parent / "shared" / "realdata")
    p.add_argument("--realdata", default=str(shared),
                   help="the folder described by its SOURCES.md (default: ../shared/realdata)")
    p.add_argument("--out", required=True, help="folder to write code_contests/ and deepcoder/ into")
    args = p.parse_args(argv)
    if not Path(args.realdata).is_dir():
        errors.cli_error(f"--realdata {args.realdata} is not a folder")
    try:
        counts = build(Path(args.realdata), Path(args.out))
    except (OSError, ValueError, KeyError) as e:
        errors.cli_error(f"{args.realdata}: {e}")
    for name, n in counts.items():
        print(f"{Path(args.out) / name}-00000-of-00001.parquet: {n} rows")


if __name__ == "__main__":
    main()
