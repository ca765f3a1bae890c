"""data.py, conversion.py, both downloaders (on parquet fixtures in the hubs' exact schemas) and the shipped problem
set."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import conversion
import data
import errors
import download_code_contests
import download_deepcoder
import utils
from conftest import ROOT, SHARED_REALDATA

# --------------------------------------------------------------------------------------------------------------
# Fixtures in the hubs' schemas

def load_script(path):
    """A script outside the import path (data/ is not a package: `import data` is data.py) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_hub_parquet = load_script(ROOT / "data" / "build_hub_parquet.py")
CODE_CONTESTS_SCHEMA, DEEPCODER_SCHEMA = build_hub_parquet.CODE_CONTESTS_SCHEMA, build_hub_parquet.DEEPCODER_SCHEMA
write_parquet = build_hub_parquet.write_parquet  # a file with no rows is still written (the downloaders accept it)
HUGE = "9" * (2 << 20)  # one 2 MiB test input: over the default 1 MiB cap


def cc_row(name: str, description: str, public=(("1 2\n",), ("3\n",)), private=((), ()), generated=((), ()),
           source: int = 2, difficulty: int = 7, input_file: str = "", solutions=((2, 1), ("int main(){}", "pass"))):
    """A deepmind/code_contests row; defaults make a kept Codeforces A problem."""
    tests = lambda pair: {"input": list(pair[0]), "output": list(pair[1])}  # noqa: E731
    return {"name": name, "description": description, "public_tests": tests(public), "private_tests": tests(private),
            "generated_tests": tests(generated), "source": source, "difficulty": difficulty,
            "solutions": {"language": list(solutions[0]), "solution": list(solutions[1])},
            "incorrect_solutions": {"language": [], "solution": []}, "cf_contest_id": 1,
            "cf_index": name.split(". ")[0].split("_")[-1],
            "cf_points": 500.0, "cf_rating": 800, "cf_tags": ["math", "math"], "is_description_translated": False,
            "untranslated_description": "", "time_limit": {"seconds": 2, "nanos": 500_000_000},
            "memory_limit_bytes": 256_000_000, "input_file": input_file, "output_file": ""}


def read_out(path) -> dict[str, dict]:
    return {p["name"]: p for p in data.read_jsonl(path)} if path.exists() else {}


@pytest.fixture(scope="module")
def code_contests_run(tmp_path_factory):
    """Convert a fixture train/test split through download_code_contests.main; returns (out dir, stdout)."""
    root = tmp_path_factory.mktemp("cc")
    train = [
        cc_row("1_A. Kept", "Print a+b.", private=(("2 2\n",), ("4\n",)), generated=(("0 0\n",), ("0\n",))),
        cc_row("2_A. Interactive", "This is an interactive problem. Flush the output after each query."),
        cc_row("3_A. File", "Read from input.txt.", input_file="input.txt"),
        cc_row("4_A. Any", "Find a pair. If there are multiple answers, print any of them."),
        cc_row("5_A. No tests", "Nothing to check.", public=((), ())),
        cc_row("6_C. Hard", "A hard one.", difficulty=9),
        cc_row("7_A. Aizu", "From Aizu.", source=7),
        cc_row("8_A. Huge", "One huge test.", public=((HUGE, "1 1\n"), ("x\n", "2\n"))),
        cc_row("9_A. Only huge", "Nothing small.", public=((HUGE,), ("x\n",))),
        cc_row("10_A. Leaked", "Also in  the TEST split."),  # spacing and case differ from the test row
        cc_row("11_A. Leaked when skipped", "A C problem in test."),
        cc_row("12_A. No description", None),
        cc_row("13_A. Unknown difficulty number", "Numbered 18, which the proto leaves unused.", difficulty=18),
        cc_row("14_L. Letter L", "Proto number 19 is L.", difficulty=19),
        cc_row("15_A. Broken test", "A test whose input is null.", public=((None,), ("1\n",))),
        cc_row("16_A. Real numbers", "Print x. Your answer is considered correct if its absolute or relative error "
                                    "does not exceed 10^{-6}."),
    ]
    write_parquet(root / "hub" / "data" / "train-00000-of-00001.parquet", train, CODE_CONTESTS_SCHEMA)
    write_parquet(root / "hub" / "data" / "test-00000-of-00001.parquet",
                  [cc_row("99_A. Test", "Also in the test split."),
                   cc_row("98_C. Skipped in test", "A C problem in test.", difficulty=9)], CODE_CONTESTS_SCHEMA)
    write_parquet(root / "hub" / "data" / "valid-00000-of-00001.parquet", [], CODE_CONTESTS_SCHEMA)
    out = root / "out"
    proc = subprocess.run([sys.executable, "download_code_contests.py", "--local_dir", str(root / "hub"),
                           "--output_dir", str(out), "--difficulties", "A-B", "EASY", "L"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_code_contests_keeps_and_skips_by_reason(code_contests_run):
    out, stdout = code_contests_run
    kept = read_out(out / "train.jsonl")
    assert sorted(kept) == ["14_L. Letter L", "16_A. Real numbers", "1_A. Kept", "8_A. Huge"]
    assert ("kept 4, skipped 12 (difficulty=2, file_io=1, in_held_out_split=2, interactive=1, malformed_row=1, "
            "multiple_answers=1, no_statement=1, no_tests=1, source=1, tests_too_large=1), tests dropped 1, "
            "1 unknown_difficulty_number") in stdout
    assert "code_contests/valid -> " in stdout and "kept 0, skipped 0" in stdout  # an empty split file is fine
    assert [p["name"] for p in data.read_jsonl(out / "test.jsonl")] == ["99_A. Test"]


def test_code_contests_held_out_from_a_train_only_run(code_contests_run, tmp_path):
    """Test statements are read even when only train is converted, including those skipped from test.jsonl."""
    hub = code_contests_run[0].parent / "hub"
    download_code_contests.main(["--local_dir", str(hub), "--splits", "train", "--output_dir", str(tmp_path)])
    kept = read_out(tmp_path / "train.jsonl")
    assert "1_A. Kept" in kept and not {"10_A. Leaked", "11_A. Leaked when skipped"} & set(kept)


def test_code_contests_refuses_without_held_out_splits(tmp_path):
    write_parquet(tmp_path / "hub" / "train-00000-of-00001.parquet", [cc_row("1_A. Kept", "Print a+b.")],
                  CODE_CONTESTS_SCHEMA)
    proc = subprocess.run([sys.executable, "download_code_contests.py", "--local_dir", str(tmp_path / "hub"),
                           "--splits", "train", "--output_dir", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "no valid-*.parquet" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_code_contests_record(code_contests_run):
    problem = read_out(code_contests_run[0] / "train.jsonl")["1_A. Kept"]
    assert problem["id"] == "code_contests/train/1_A"
    assert problem["tests"] == {"public": [{"input": "1 2\n", "output": "3\n"}],
                                "private": [{"input": "2 2\n", "output": "4\n"}],
                                "generated": [{"input": "0 0\n", "output": "0\n"}]}
    assert (problem["source"], problem["difficulty"], problem["tags"]) == ("CODEFORCES", "A", ["math"])
    assert (problem["time_limit_s"], problem["memory_limit_mb"], problem["weakly_tested"]) == (2.5, 256, False)
    assert problem["reference_solutions"] == ["int main(){}"]  # C++ only, Python dropped
    assert (problem["compare"], problem["checker"]) == ("tokens", None)
    kept = read_out(code_contests_run[0] / "train.jsonl")
    assert kept["8_A. Huge"]["tests"]["public"] == [{"input": "1 1\n", "output": "2\n"}]
    assert kept["14_L. Letter L"]["difficulty"] == "L"
    assert kept["16_A. Real numbers"]["compare"] == "float:1e-06"


def test_code_contests_yaml_config_and_flags(tmp_path):
    write_parquet(tmp_path / "hub" / "train-00000-of-00001.parquet",
                  [cc_row("6_C. Hard", "A hard one.", difficulty=9), cc_row("4_A. Any", "Print any answer.")],
                  CODE_CONTESTS_SCHEMA)
    for split in ("valid", "test"):
        write_parquet(tmp_path / "hub" / f"{split}-00000-of-00001.parquet", [], CODE_CONTESTS_SCHEMA)
    checkers = tmp_path / "checkers"
    checkers.mkdir()
    (checkers / "train_4_A.cpp").write_text("int main() { return 0; }\n")  # accepts anything
    config = tmp_path / "cc.yaml"
    config.write_text(yaml.safe_dump({"difficulties": ["A-C"], "checkers": str(checkers)}))
    download_code_contests.main(["--config", str(config), "--local_dir", str(tmp_path / "hub"), "--splits", "train",
                                 "--output_dir", str(tmp_path / "out")])
    kept = read_out(tmp_path / "out" / "train.jsonl")
    assert sorted(kept) == ["4_A. Any", "6_C. Hard"]  # several answers, kept because a checker decides them
    assert kept["4_A. Any"]["checker"] == "int main() { return 0; }\n" and kept["6_C. Hard"]["checker"] is None
    download_code_contests.main(["--config", str(config), "--difficulties", "A", "--local_dir",
                                 str(tmp_path / "hub"), "--splits", "train", "--output_dir", str(tmp_path / "out")])
    assert sorted(read_out(tmp_path / "out" / "train.jsonl")) == ["4_A. Any"]  # the flag beats the YAML


def test_difficulty_windows_and_proto_numbers():
    assert download_code_contests.expand_difficulties(["A-C", "easy"]) == {"A", "B", "C", "EASY"}
    names = download_code_contests.DIFFICULTIES  # contest_problem.proto: K = 17, 18 unused, L = 19 ... V = 29
    assert (names[7], names[17], names[19], names[29]) == ("A", "K", "L", "V") and 18 not in names
    assert download_code_contests.SOURCES[6] == "ATCODER" and 5 not in download_code_contests.SOURCES
    with pytest.raises(ValueError):
        download_code_contests.expand_difficulties(["Z"])


def test_enum_numbers_outside_the_definition_are_unknown_and_counted():
    from collections import Counter

    notes = Counter()
    names = download_code_contests.DIFFICULTIES
    assert [download_code_contests.enum_label(names, n, "difficulty", notes) for n in (18, 30, None, 7)] == [
        "UNKNOWN", "UNKNOWN", "UNKNOWN", "A"]
    assert notes == {"unknown_difficulty_number": 3}


def dc_row(problem: str, tests, metadata: dict | None = None, starter_code: str = "") -> dict:
    return {"problem": problem, "tests": tests if isinstance(tests, str) else json.dumps(tests),
            "starter_code": starter_code, "metadata": json.dumps(metadata or {})}


@pytest.fixture(scope="module")
def deepcoder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dc")
    hub = root / "hub"
    stdin = lambda i, o: {"input": i, "output": o, "testtype": "stdin"}  # noqa: E731
    write_parquet(hub / "lcbv5" / "train-00000-of-00001.parquet", [
        dc_row("LCB stdin\nRead n.", [stdin("1\n", "1\n"), stdin("2\n", "2\n")], {"difficulty": "easy"}),
        dc_row("LCB functional", [{"input": "[1]", "output": "1", "testtype": "functional"}],
               {"func_name": "solve"}, "class Solution:\n    def solve(self, a): ..."),
        dc_row("LCB malformed", "[{'input': '1\\n', 'output"),
        dc_row("LCB empty", []),
        dc_row("LCB huge", [stdin(HUGE, "1\n"), stdin("3\n", "3\n")]),
        dc_row("LCB mixed", [stdin("4\n", "4\n"), {"input": '"4"', "output": "4", "testtype": "functional"}]),
        dc_row("Shared statement", [stdin("5\n", "5\n")]),
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "lcbv5" / "test-00000-of-00001.parquet", [
        dc_row("Shared statement", [stdin("5\n", "5\n")]),
        dc_row("LCB test only", [stdin("7\n", "7\n")]),
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "taco" / "train-00000-of-00001.parquet", [
        dc_row("TACO stdin", {"inputs": ["1 2\n"], "outputs": ["3\n"]}),
        dc_row("TACO fn", {"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}),
        dc_row("TACO any: if there are several answers, output any of them.", {"inputs": ["1\n"], "outputs": ["1\n"]}),
        dc_row("cf interactive, SKIPPED in test. Tags: ['interactive']", {"inputs": ["1\n"], "outputs": ["2\n"]}),
        dc_row("TACO yes/no: print YES or NO. You can print the letters in any case.",
               {"inputs": ["1\n"], "outputs": ["YES\n"]}),
        dc_row("   \n", {"inputs": ["1\n"], "outputs": ["1\n"]}),
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "primeintellect" / "train-00000-of-00001.parquet", [
        dc_row("PI stdin", [{"type": "stdin_stdout", "input": "4\n", "output": "16\n"}]),
        dc_row("PI call", [{"type": "function_call", "input": [4], "output": [16], "fn_name": "sq"}]),
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "codeforces" / "test-00000-of-00001.parquet", [
        dc_row("CF examples\n\nTime Limit: 3000 ms\nMemory Limit: 512 MB",
               [{"input": "1\n", "output": "2\n"}]),
        dc_row("CF interactive, skipped in test.\n\nTags:\n['interactive']", [{"input": "1\n", "output": "2\n"}]),
        dc_row(None, [{"input": "1\n", "output": "2\n"}]),
    ], DEEPCODER_SCHEMA)
    out = root / "out"
    proc = subprocess.run([sys.executable, "download_deepcoder.py", "--local_dir", str(hub), "--output_dir", str(out),
                           "--subsets", "lcbv5", "taco", "primeintellect", "codeforces"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_deepcoder_keeps_and_skips_by_reason(deepcoder_run):
    out, stdout = deepcoder_run
    assert sorted(read_out(out / "train.jsonl")) == [
        "LCB huge", "LCB mixed", "LCB stdin", "PI stdin", "TACO stdin", "TACO yes/no: print YES or NO. You can print"
        " the letters in any case."]
    assert ("kept 6, skipped 9 (function_call=3, in_held_out_split=2, malformed_tests=1, multiple_answers=1, "
            "no_statement=1, no_tests=1), tests dropped 2") in stdout
    assert sorted(read_out(out / "test.jsonl")) == ["CF examples", "LCB test only", "Shared statement"]
    assert "kept 3, skipped 2 (interactive=1, no_statement=1)" in stdout


def test_deepcoder_lcbv5_test_never_reaches_train_whatever_the_subsets(deepcoder_run, tmp_path):
    """A train-only run of taco alone still reads every test split's statements (lcbv5 and codeforces)."""
    hub = deepcoder_run[0].parent / "hub"
    write_parquet(hub / "taco" / "train-00000-of-00001.parquet", [
        dc_row("LCB TEST ONLY", {"inputs": ["7\n"], "outputs": ["7\n"]}),  # case differs from the lcbv5 test row
        dc_row("TACO stdin", {"inputs": ["1 2\n"], "outputs": ["3\n"]}),
    ], DEEPCODER_SCHEMA)
    download_deepcoder.main(["--local_dir", str(hub), "--subsets", "taco", "--splits", "train",
                             "--output_dir", str(tmp_path)])
    assert sorted(read_out(tmp_path / "train.jsonl")) == ["TACO stdin"]


def test_deepcoder_test_rows_never_reach_training(deepcoder_run):
    out, _ = deepcoder_run
    train = data.read_jsonl(out / "train.jsonl")
    test_keys = {conversion.statement_key(p["statement"]) for p in data.read_jsonl(out / "test.jsonl")}
    assert all(p["split"] == "train" and conversion.statement_key(p["statement"]) not in test_keys for p in train)


def test_deepcoder_records(deepcoder_run):
    out, _ = deepcoder_run
    train, test = read_out(out / "train.jsonl"), read_out(out / "test.jsonl")
    lcb = train["LCB stdin"]
    assert lcb["tests"]["private"] == [{"input": "1\n", "output": "1\n"}, {"input": "2\n", "output": "2\n"}]
    assert (lcb["source"], lcb["difficulty"], lcb["config"], lcb["weakly_tested"]) == (
        "LIVECODEBENCH", "easy", "lcbv5", False)
    assert data.all_tests(train["LCB huge"]) == [{"input": "3\n", "output": "3\n"}]
    assert data.all_tests(train["LCB mixed"]) == [{"input": "4\n", "output": "4\n"}]
    assert data.all_tests(train["TACO stdin"]) == [{"input": "1 2\n", "output": "3\n"}]
    cf = test["CF examples\n\nTime Limit: 3000 ms\nMemory Limit: 512 MB".splitlines()[0]]
    assert cf["weakly_tested"] and cf["tests"]["public"] == [{"input": "1\n", "output": "2\n"}]
    assert (cf["time_limit_s"], cf["memory_limit_mb"]) == (3.0, 512) and lcb["time_limit_s"] is None
    assert train["TACO yes/no: print YES or NO. You can print the letters in any case."]["compare"] == "tokens_nocase"


@pytest.mark.parametrize("raw, shape", [
    ('[{"input": "1", "output": "1", "testtype": "stdin"}]', "lcbv5"),
    ('{"inputs": ["1"], "outputs": ["1"]}', "taco"),
    ('[{"type": "stdin_stdout", "input": "1", "output": "1"}]', "primeintellect"),
    ("[{'input': '1', 'output': '1'}]", "python-literal codeforces dump"),
])
def test_stdin_test_shapes(raw, shape):
    assert download_deepcoder.stdin_tests(raw) == ([{"input": "1", "output": "1"}], 0), shape


@pytest.mark.parametrize("statement, check", [
    ("This is an interactive problem.", ("interactive", "tokens")),
    ("Input\n\n...\n\nInteraction\n\nAfter printing, flush", ("interactive", "tokens")),
    ("Find the mole.\n\nOutput Format:\n\nTags:\n['binary search', 'interactive']", ("interactive", "tokens")),
    ("If there are multiple answers, print any of them.", ("multiple_answers", "tokens")),
    ("If there are several ways to achieve it, find any of them.", ("multiple_answers", "tokens")),
    ("You may output any valid table.", ("multiple_answers", "tokens")),
    ("You can print the pairs in any order.", ("multiple_answers", "tokens")),
    ("The number of operations does not need to be minimized.", ("multiple_answers", "tokens")),
    ("Find an array a. It can be shown that an answer always exists.", ("multiple_answers", "tokens")),
    # unlabelled real rows the labelled wording missed (LiveCodeBench 66, Codeforces 17 and 171)
    ("If there are multiple ways to satisfy the conditions, any of them will be accepted.",
     ("multiple_answers", "tokens")),
    ("Find the permutation q. If there exist multiple such permutations, you can pick any of them.",
     ("multiple_answers", "tokens")),
    ("Output a string of length k — the binary representation of any suitable number x, or -1.",
     ("multiple_answers", "tokens")),
    ("If the values on them are equal, you can choose any of them.", (None, "tokens")),  # an operation's choice
    ("Print the maximum number of draws, or -1 if the scores aren't consistent with any valid set of games.",
     (None, "tokens")),
    ("You can print each letter in any case. Any of yEs, YES will be accepted as positive.", (None, "tokens_nocase")),
    ("If there are multiple answers, print the smallest.", (None, "tokens")),
    ("Print YES if any of them is zero.", (None, "tokens")),
    ("Casimir can choose any of two possible actions. Print the number of turns.", (None, "tokens")),
    ("If there are several identical minima, Yelisey can choose any of them.", (None, "tokens")),
    ("Find the smallest n. We can show that an answer always exists.", (None, "tokens")),
    ("Answers with an absolute or relative error of at most 10^{-9} will be accepted.", (None, "float:1e-09")),
    ("The absolute difference between your solution and the main solution shouldn't exceed 10^-6;",
     (None, "float:1e-06")),
    ("Accepted if the relative or absolute error does not exceed $10^{-6}$.", (None, "float:1e-06")),
    ('Print "YES" or "NO". You can output the answer in any case (upper or lower).', (None, "tokens_nocase")),
    ("Print YES or NO. You can print each letter in any register.", (None, "tokens_nocase")),
    ("In any case, print the minimum.", (None, "tokens")),  # no yes/no answer to relax
])
def test_statement_classification(statement, check):
    result = conversion.classify_statement(statement)
    assert (result.skip, result.compare) == check


def test_judge_fields_skip_or_describe():
    with pytest.raises(conversion.Skip, match="no_statement"):
        conversion.judge_fields(None)
    with pytest.raises(conversion.Skip, match="multiple_answers"):
        conversion.judge_fields("Print any of them.")
    assert conversion.judge_fields("Print any of them.", checker="int main(){}") == {
        "compare": "tokens", "checker": "int main(){}"}
    with pytest.raises(conversion.Skip, match="interactive"):
        conversion.judge_fields("This is an interactive problem.", checker="int main(){}")


def test_only_examples():
    statement = "Print the sum.\n\nSample Input 1\n\n3\n1 2 3\n\nSample Output 1\n\n6\n"
    assert conversion.only_examples(statement, [{"input": "3\n1 2 3\n", "output": "6\n"}])
    assert not conversion.only_examples(statement, [{"input": "3\n1 2 3\n", "output": "6\n"},
                                              {"input": "2\n5 5\n", "output": "10\n"}])
    assert not conversion.only_examples(statement, [{"input": "1 2\n", "output": "3\n"}])  # not a whole line there
    assert not conversion.only_examples(statement, [])


def test_first_by_fingerprint_depends_on_statements_only(tmp_path):
    problems = [data.make_problem(f"x/{i}", "sample", "test", f"p{i}", f"Statement number {i}.",
                                  {"public": [{"input": "1\n", "output": "1\n"}]}) for i in range(10)]
    chosen = []
    for name, order in (("a", problems), ("b", problems[::-1])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in order))
        assert "the first 3 of 10 problems" in conversion.first_by_fingerprint(path, 3)
        chosen.append([p["id"] for p in data.read_jsonl(path)])
    assert chosen[0] == chosen[1] and len(chosen[0]) == 3
    assert chosen[0] == [p["id"] for p in sorted(problems, key=lambda p: conversion.statement_key(p["statement"]))][:3]


def test_code_contests_max_cf_rating(tmp_path):
    rows = [{**cc_row("1_A. Easy", "Print a+b."), "cf_rating": 800},
            {**cc_row("2_A. Rated higher", "Print a-b."), "cf_rating": 1500},
            {**cc_row("3_A. Unrated", "Print a*b."), "cf_rating": 0}]
    write_parquet(tmp_path / "hub" / "train-00000-of-00001.parquet", rows, CODE_CONTESTS_SCHEMA)
    for split in ("valid", "test"):
        write_parquet(tmp_path / "hub" / f"{split}-00000-of-00001.parquet", [], CODE_CONTESTS_SCHEMA)
    proc = subprocess.run([sys.executable, "download_code_contests.py", "--local_dir", str(tmp_path / "hub"),
                           "--splits", "train", "--max_cf_rating", "1100", "--output_dir", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "kept 1, skipped 2 (cf_rating=2)" in proc.stdout
    kept = read_out(tmp_path / "out" / "train.jsonl")
    assert list(kept) == ["1_A. Easy"] and kept["1_A. Easy"]["weakly_tested"]  # public tests only


def test_statement_limits():
    assert conversion.statement_limits("...\nTime Limit: 2000 ms\nMemory Limit: 256 MB\n") == (2.0, 256)
    assert conversion.statement_limits("time limit per test: 1.5 seconds\nmemory limit per test: 1 GB") == (1.5, 1024)
    assert conversion.statement_limits("Print the sum of the time limits.") == (None, None)


# --------------------------------------------------------------------------------------------------------------
# Command-line behaviour


@pytest.mark.parametrize("argv", [
    ["download_code_contests.py", "--local_dir", "/nonexistent"],
    ["download_deepcoder.py", "--local_dir", "/nonexistent"],
    ["download_code_contests.py", "--difficulties", "Z"],
    ["download_code_contests.py", "--config", "/nonexistent.yaml"],
    ["download_code_contests.py", "--checkers", "/nonexistent"],
    ["download_deepcoder.py", "--subsets", "nosuch"],
    ["download_deepcoder.py", "--first", "0"],
    ["data/build_hub_parquet.py", "--realdata", "/nonexistent", "--out", "/tmp/never-written"],
])
def test_scripts_fail_in_one_line(argv):
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["download_code_contests.py", "download_deepcoder.py", "data/build_sample.py",
                                    "data/build_hub_parquet.py"])
def test_scripts_have_help(script):
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "usage:" in proc.stdout


# --------------------------------------------------------------------------------------------------------------
# Loading and prompts


def test_load_problems_is_deterministic():
    first = data.load_problems("sample", "train", max_samples=10, seed=1)
    assert [p["id"] for p in first] == [p["id"] for p in data.load_problems("sample", "train", 10, seed=1)]
    assert [p["id"] for p in first] != [p["id"] for p in data.load_problems("sample", "train", 10, seed=2)]
    assert len(data.load_problems("sample", "train")) == 29 and len(data.load_problems("sample", "test")) == 13


def test_load_problems_from_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    problems = data.load_problems("sample", "test")
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    assert {p["id"] for p in data.load_problems(str(path), max_samples=None)} == {p["id"] for p in problems}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**problems[0], "tests": {"public": [], "private": [], "generated": []}}) + "\n")
    with pytest.raises(ValueError, match="has no tests"):
        data.load_problems(str(bad))


def test_missing_data_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(data.DataMissingError, match="python download_code_contests.py"):
        data.load_problems("code_contests", "valid")
    with pytest.raises(errors.UsageError, match="python download_deepcoder.py"):  # a script's one error line
        data.load_problems("deepcoder", "test")
    with pytest.raises(errors.UsageError, match="no split"):
        data.load_problems("deepcoder", "valid")
    with pytest.raises(errors.UsageError, match="unknown dataset"):
        data.load_problems("nosuch", "test")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(errors.UsageError, match=r"broken.jsonl:1: not a JSON problem record"):
        data.load_problems(str(broken))


class WordTokenizer:
    """The messages joined as the chat template and one token per word: enough to give prompts lengths."""

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return "\n".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens):
        return {"input_ids": list(range(len(text.split())))}


def test_training_problems_by_count_or_by_id():
    shuffled = data.load_problems("sample", "train", None, 3)
    assert data.training_problems("sample", 5, None, 3) == shuffled[:5]
    wanted = [shuffled[7]["id"], shuffled[2]["id"], shuffled[4]["id"]]
    chosen = data.training_problems("sample", 2, ",".join(wanted), 3)
    assert [p["id"] for p in chosen] == [shuffled[2]["id"], shuffled[4]["id"]]  # the shuffled order, cut to 2
    with pytest.raises(errors.UsageError, match="--problem_ids not in the training split: sample/nope"):
        data.training_problems("sample", None, f"{wanted[0]},sample/nope", 3)


def test_grpo_rows_carry_the_rewards_columns_and_drop_long_prompts():
    problems, prompt, tokenizer = data.load_problems("sample", "train"), data.PromptSettings(), WordTokenizer()
    lengths = {p["id"]: len(data.render_prompt(prompt.messages(p), tokenizer)[1]) for p in problems}
    limit = sorted(lengths.values())[len(lengths) // 2]
    reward = utils.CodeReward(utils.JudgeConfig(max_tests=2, test_selection="longest"))
    rows = data.grpo_rows(problems, prompt, tokenizer, limit, reward.columns)
    kept = [p for p in problems if lengths[p["id"]] <= limit]
    assert rows.problems == kept and rows.too_long == len(problems) - len(kept) > 0
    assert [row["id"] for row in rows.dataset] == [p["id"] for p in kept]
    for row, problem in zip(rows.dataset, kept):
        assert row["prompt"] == prompt.messages(problem)
        assert row["tests"] == utils.select_tests(data.all_tests(problem), 2, "longest") and len(row["tests"]) <= 2
        assert all(row[k] == problem.get(k) for k in utils.PROBLEM_JUDGE_FIELDS)
        assert (row["source"], row["difficulty"]) == (problem["source"], problem["difficulty"])
    with pytest.raises(errors.UsageError, match="no training problems left"):
        data.grpo_rows(problems, prompt, tokenizer, 0, reward.columns)


def test_build_messages_shows_only_public_tests():
    problem = next(p for p in data.load_problems("sample", "train") if p["name"] == "Sum of Two")
    system, user = data.build_messages(problem)
    assert system["role"] == "system" and "C++17" in system["content"] and "competitive programmer" in system["content"]
    assert user["role"] == "user" and "```cpp" in user["content"] and problem["statement"].strip() in user["content"]
    assert "Sample input" not in user["content"]
    _, user = data.build_messages(problem, show_examples=True)
    assert "Sample input 1:\n```\n1 2\n```\nSample output 1:\n```\n3\n```" in user["content"]
    assert "1000000000 1000000000" not in user["content"]  # a private test
    assert "cout" not in user["content"]  # the reference solution never reaches a prompt


# --------------------------------------------------------------------------------------------------------------
# The shipped set


SAMPLE = ROOT / "data" / "sample"


def test_sample_set_shape():
    problems = data.load_problems("sample", "train") + data.load_problems("sample", "test")
    specs = yaml.safe_load((SAMPLE / "problems.yaml").read_text())
    assert len(problems) == len(specs) >= 36
    assert len({p["id"] for p in problems}) == len(problems)
    by_id = {p["id"]: p for p in problems}
    for spec in specs:  # the committed jsonl is what build_sample.py makes of problems.yaml
        problem = by_id[f"sample/{spec['name']}"]
        assert [t["input"] for t in data.all_tests(problem)] == spec["tests"] and len(spec["tests"]) >= 5
        assert problem["statement"] == spec["statement"] and problem["split"] == spec["split"]
        assert all((SAMPLE / kind / f"{spec['name']}.cpp").exists() for kind in ("solutions", "wrong"))


def test_sample_references_pass_and_wrong_variants_fail():
    from utils import JudgeConfig, Verdict, judge_batch, problem_judge_config

    problems = data.load_problems("sample", "train") + data.load_problems("sample", "test")
    names = [p["id"].split("/")[1] for p in problems]
    items = [((SAMPLE / kind / f"{n}.cpp").read_text(), data.all_tests(p),
              problem_judge_config(p, JudgeConfig(max_tests=100)))  # its limits and, where it has one, its checker
             for kind in ("solutions", "wrong") for n, p in zip(names, problems)]
    results = judge_batch(items)
    reference, wrong = results[:len(names)], results[len(names):]
    assert {n: r.verdict for n, r in zip(names, reference) if r.verdict != Verdict.OK} == {}
    assert all(r.passed == r.total == len(data.all_tests(p)) for r, p in zip(reference, problems))
    assert [n for n, r in zip(names, wrong) if r.verdict == Verdict.OK or not r.compiled] == []


# --------------------------------------------------------------------------------------------------------------
# Real rows (../shared/realdata), converted through the same path


realdata = pytest.mark.skipif(not SHARED_REALDATA.exists(), reason="needs ../shared/realdata")
REAL_CODE_CONTESTS_TEST = "code_contests/rllm_code_contests_test.json"
REAL_LCB = "lcb_deepcoder/rllm_livecodebench_test_279.json"
REAL_CODEFORCES = "lcb_deepcoder/rllm_codeforces_test_408.json"


def real_rows(name: str) -> list[dict]:
    return json.loads((SHARED_REALDATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory):
    """../shared/realdata in the hubs' parquet schemas, written by data/build_hub_parquet.py: code_contests train (30
    rows, some columns dropped by their publisher), test (165) and an empty valid; DeepCoder lcbv5 test (279 LCB rows)
    and codeforces test (408 rows)."""
    root = tmp_path_factory.mktemp("real")
    build_hub_parquet.build(SHARED_REALDATA, root)
    return root


@realdata
@pytest.mark.realdata
def test_real_code_contests_rows(real_hub, tmp_path):
    download_code_contests.main(["--local_dir", str(real_hub / "code_contests"), "--splits", "train", "test",
                                 "--difficulties", "A-B", "EASY", "UNKNOWN", "--output_dir", str(tmp_path)])
    kept = read_out(tmp_path / "train.jsonl")
    assert "361_A. Levko and Table" not in kept  # "Print any beautiful table."
    assert len(kept) >= 20
    shovel = kept["732_A. Buy a Shovel"]
    assert shovel["difficulty"] == "A" and shovel["time_limit_s"] == 1.0 and len(shovel["tests"]["public"]) == 3
    test = data.read_jsonl(tmp_path / "test.jsonl")
    assert 100 < len(test) < 165 and {p["memory_limit_mb"] for p in test} >= {256, 512}
    assert {p["time_limit_s"] for p in test} >= {1.0, 2.0}


@realdata
@pytest.mark.realdata
def test_real_livecodebench_and_codeforces_tests(real_hub, tmp_path):
    """rllm's LCB rows (stdin and functional) and Codeforces rows (Python-literal tests) in DeepCoder's columns."""
    download_deepcoder.main(["--local_dir", str(real_hub / "deepcoder"), "--subsets", "lcbv5", "codeforces",
                             "--splits", "test", "--output_dir", str(tmp_path)])
    problems = data.read_jsonl(tmp_path / "test.jsonl")
    lcb = real_rows(REAL_LCB)
    stdin = {r["problem"]: [t for t in r["tests"] if t["testtype"] == "stdin"] for r in lcb if not r["starter_code"]}
    lcb_kept = [p for p in problems if p["config"] == "lcbv5"]
    assert 100 < len(lcb_kept) <= len(stdin) < len(lcb)  # LeetCode-style (starter code) rows are all skipped
    for p in lcb_kept:  # only the stdin-typed tests survive
        assert data.all_tests(p) == [{"input": t["input"], "output": t["output"]} for t in stdin[p["statement"]]]
    assert all(p["weakly_tested"] for p in lcb_kept)  # rllm's copy kept only the examples as stdin tests
    cf_kept = [p for p in problems if p["config"] == "codeforces"]
    assert cf_kept and all(p["weakly_tested"] for p in cf_kept)
    assert all(p["time_limit_s"] and p["memory_limit_mb"] for p in cf_kept)  # from "Time Limit: N ms" lines
    assert sum(p["time_limit_s"] >= 3 for p in cf_kept) > 50
    compares = {p["compare"] for p in problems}
    assert {"tokens", "tokens_nocase", "float:1e-06"} <= compares


@realdata
@pytest.mark.realdata
def test_real_test_rows_never_reach_a_train_only_run(real_hub, tmp_path):
    """Every real LCB and Codeforces test row, offered again as lcbv5 train rows: none is written to train.jsonl,
    including the test rows that test.jsonl itself skips (interactive, several answers)."""
    hub = tmp_path / "hub"
    shutil.copytree(real_hub / "deepcoder", hub)
    leaked = [dc_row(r["problem"], r["tests"]) for r in real_rows(REAL_LCB) + real_rows(REAL_CODEFORCES)]
    write_parquet(hub / "lcbv5" / "train-00000-of-00001.parquet", leaked, DEEPCODER_SCHEMA)
    download_deepcoder.main(["--local_dir", str(hub), "--splits", "train", "--output_dir", str(tmp_path / "out")])
    assert read_out(tmp_path / "out" / "train.jsonl") == {}


# The held-out set and the extra easy training rows of docs/data.md: the committed files and their commands' flags
HELD_OUT = ROOT / "data" / "lcb_heldout" / "test.jsonl"
HELD_OUT_FLAGS = ["--splits", "test", "--first", "64"]
EASY_TRAIN = ROOT / "data" / "code_contests_easy" / "train.jsonl"
EASY_TRAIN_FLAGS = ["--splits", "train", "--difficulties", "A-V", "--max_cf_rating", "1100"]


@realdata
@pytest.mark.realdata
def test_real_held_out_set_is_the_committed_one(real_hub, tmp_path):
    """The documented command on the real LCB rows writes data/lcb_heldout/test.jsonl, and the choice depends on the
    statements alone: the same rows in another order (as the hub may hold them) choose the same problems."""
    download_deepcoder.main(["--local_dir", str(real_hub / "deepcoder"), *HELD_OUT_FLAGS,
                             "--output_dir", str(tmp_path / "a")])
    chosen = data.read_jsonl(tmp_path / "a" / "test.jsonl")
    assert chosen == data.read_jsonl(HELD_OUT)
    assert len(chosen) == 64 and {p["config"] for p in chosen} == {"lcbv5"}
    assert all(conversion.classify_statement(p["statement"]).skip is None and p["checker"] is None for p in chosen)
    rows = real_rows(REAL_LCB)
    random.Random(0).shuffle(rows)
    write_parquet(tmp_path / "shuffled" / "lcbv5" / "test-00000-of-00001.parquet",
                  [build_hub_parquet.deepcoder_row(r) for r in rows], DEEPCODER_SCHEMA)
    download_deepcoder.main(["--local_dir", str(tmp_path / "shuffled"), *HELD_OUT_FLAGS,
                             "--output_dir", str(tmp_path / "b")])
    again = data.read_jsonl(tmp_path / "b" / "test.jsonl")
    assert [p["statement"] for p in again] == [p["statement"] for p in chosen]
    assert [p["id"] for p in again] != [p["id"] for p in chosen]  # row numbers moved; the choice did not


@realdata
@pytest.mark.realdata
def test_real_easy_training_rows_are_the_committed_ones(real_hub, tmp_path):
    download_code_contests.main(["--local_dir", str(real_hub / "code_contests"), *EASY_TRAIN_FLAGS,
                                 "--output_dir", str(tmp_path)])
    easy = data.read_jsonl(tmp_path / "train.jsonl")
    assert easy == data.read_jsonl(EASY_TRAIN)
    with open(SHARED_REALDATA / build_hub_parquet.CODE_CONTESTS_TRAIN, encoding="utf-8") as f:
        ratings = {row["name"]: row["cf_rating"] for row in map(json.loads, f)}
    assert len(easy) >= 25 and all(0 < ratings[p["name"]] <= 1100 for p in easy)
    assert "1490_C. Sum of Cubes" in {p["name"] for p in easy}  # a C rated 1100: the rating decides, not the letter
    assert all(p["weakly_tested"] and data.all_tests(p) for p in easy)  # their publisher kept only the examples


def shingles(text: str, k: int = 8) -> set[str]:
    words = re.findall(r"[0-9a-z]+", text.lower())
    return {" ".join(words[i:i + k]) for i in range(max(len(words) - k + 1, 1))}


def test_held_out_statements_never_in_training():
    """No held-out statement (the LCB set, the shipped test split) is a training statement (the shipped train split,
    the easy code_contests rows), by fingerprint or by shared 8-word runs (a reworded copy of the same problem)."""
    held_out = data.read_jsonl(HELD_OUT) + data.load_problems("sample", "test")
    training = data.load_problems("sample", "train") + data.read_jsonl(EASY_TRAIN)
    assert len(held_out) == 64 + 13 and len(training) >= 29 + 25
    keys = {conversion.statement_key(p["statement"]) for p in training}
    assert [p["id"] for p in held_out if conversion.statement_key(p["statement"]) in keys] == []
    close = []
    for h in held_out:
        for t in training:
            if h["dataset"] == t["dataset"] == "sample":
                continue  # the shipped set's one-line statements share their phrasing by design (sum vs product)
            a, b = shingles(h["statement"]), shingles(t["statement"])
            if len(a & b) / min(len(a), len(b)) > 0.3:
                close.append((h["id"], t["id"]))
    assert close == []


STATEMENT_LABELS = ROOT / "tests" / "fixtures" / "statement_labels.json"
SKIP_KINDS = {"interactive", "multiple_answers"}


def label_predictions() -> list[tuple[dict, conversion.StatementCheck]]:
    """Each hand label of tests/fixtures/statement_labels.json with what classify_statement says."""
    files: dict[str, list[dict]] = {}
    pairs = []
    for label in json.loads(STATEMENT_LABELS.read_text()):
        rows = files.setdefault(label["file"], real_rows(label["file"]))
        statement = rows[label["index"]]["problem"]
        assert hashlib.sha1(statement.encode()).hexdigest()[:12] == label["statement_sha1"], label
        pairs.append((label, conversion.classify_statement(statement)))
    return pairs


def precision_recall(pairs, is_true, is_predicted) -> tuple[float, float, int]:
    """(precision, recall, positives) of one decision over the labelled statements."""
    tp = sum(is_true(label) and is_predicted(check) for label, check in pairs)
    predicted = sum(is_predicted(check) for _, check in pairs)
    positives = sum(is_true(label) for label, _ in pairs)
    return tp / max(predicted, 1), tp / max(positives, 1), positives


def decision_table(pairs) -> dict[str, tuple[float, float, int]]:
    """The table in docs/data.md: precision and recall of every decision the statement filters make."""
    def expected_compare(label: dict) -> str:
        if label["kind"] == "float_tolerance":
            return f"float:{label['epsilon']:g}"
        return "tokens_nocase" if label["kind"] == "yes_no_any_case" else "tokens"

    kept = [(label, check) for label, check in pairs if label["kind"] not in SKIP_KINDS]
    return {
        "skip as unjudgeable": precision_recall(pairs, lambda l: l["kind"] in SKIP_KINDS, lambda c: c.skip is not None),
        "interactive": precision_recall(pairs, lambda l: l["kind"] == "interactive", lambda c: c.skip == "interactive"),
        "multiple_answers": precision_recall(pairs, lambda l: l["kind"] == "multiple_answers",
                                             lambda c: c.skip == "multiple_answers"),
        "float tolerance (eps right)": precision_recall(
            kept, lambda l: l["kind"] == "float_tolerance",
            lambda c: c.skip is None and c.compare.startswith("float:")),
        "YES/NO in any case": precision_recall(kept, lambda l: l["kind"] == "yes_no_any_case",
                                               lambda c: c.compare == "tokens_nocase"),
        "compare rule of kept problems (accuracy)": (
            sum(c.compare == expected_compare(l) for l, c in kept) / len(kept),) * 2 + (len(kept),),
    }


@realdata
@pytest.mark.realdata
def test_statement_filters_on_hand_labelled_real_statements():
    pairs = label_predictions()
    assert len(pairs) >= 100 and len({label["file"] for label, _ in pairs}) == 3
    table = decision_table(pairs)
    precision, recall, _ = table["skip as unjudgeable"]
    assert precision >= 0.95 and recall >= 0.90, table
    for label, check in pairs:  # a float problem kept is compared with the epsilon its statement states
        if label["kind"] == "float_tolerance" and check.compare.startswith("float:"):
            assert check.compare == f"float:{label['epsilon']:g}", label
    assert table["compare rule of kept problems (accuracy)"][0] >= 0.95, table
    kept, single_answer = kept_single_answer(pairs)
    assert single_answer / kept >= 0.95, (kept, single_answer)  # what a held-out pass rate is computed over
    labelled_single = sum(label["kind"] not in SKIP_KINDS for label, _ in pairs)
    assert single_answer >= 0.98 * labelled_single, (single_answer, labelled_single)  # not bought by skipping


def kept_single_answer(pairs) -> tuple[int, int]:
    """(statements the filters keep, those of them whose answer one expected output decides)."""
    kept = [label for label, check in pairs if check.skip is None]
    return len(kept), sum(label["kind"] not in SKIP_KINDS for label in kept)
