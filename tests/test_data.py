"""data.py, both downloaders (on parquet fixtures in the hubs' exact schemas) and the shipped problem set."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import data
import download_code_contests
import download_deepcoder
from conftest import ROOT, SHARED_REALDATA

# --------------------------------------------------------------------------------------------------------------
# Fixtures in the hubs' schemas

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
HUGE = "9" * (2 << 20)  # one 2 MiB test input: over the default 1 MiB cap


def cc_row(name: str, description: str, public=(("1 2\n",), ("3\n",)), private=((), ()), generated=((), ()),
           source: int = 2, difficulty: int = 7, input_file: str = "", solutions=((2, 1), ("int main(){}", "pass"))):
    """A deepmind/code_contests row; defaults make a kept Codeforces A problem."""
    tests = lambda pair: {"input": list(pair[0]), "output": list(pair[1])}  # noqa: E731
    return {"name": name, "description": description, "public_tests": tests(public), "private_tests": tests(private),
            "generated_tests": tests(generated), "source": source, "difficulty": difficulty,
            "solutions": {"language": list(solutions[0]), "solution": list(solutions[1])},
            "incorrect_solutions": {"language": [], "solution": []}, "cf_contest_id": 1, "cf_index": "A",
            "cf_points": 500.0, "cf_rating": 800, "cf_tags": ["math", "math"], "is_description_translated": False,
            "untranslated_description": "", "time_limit": {"seconds": 2, "nanos": 500_000_000},
            "memory_limit_bytes": 256_000_000, "input_file": input_file, "output_file": ""}


def write_parquet(path, rows, schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


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
        cc_row("7_A. Aizu", "From Aizu.", source=6),
        cc_row("8_A. Huge", "One huge test.", public=((HUGE, "1 1\n"), ("x\n", "2\n"))),
        cc_row("9_A. Only huge", "Nothing small.", public=((HUGE,), ("x\n",))),
        cc_row("10_A. Leaked", "Also in the test split."),
    ]
    write_parquet(root / "hub" / "data" / "train-00000-of-00001.parquet", train, CODE_CONTESTS_SCHEMA)
    write_parquet(root / "hub" / "data" / "test-00000-of-00001.parquet",
                  [cc_row("99_A. Test", "Also in the test split.")], CODE_CONTESTS_SCHEMA)
    out = root / "out"
    proc = subprocess.run([sys.executable, "download_code_contests.py", "--local_dir", str(root / "hub"),
                           "--output_dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_code_contests_keeps_and_skips_by_reason(code_contests_run):
    out, stdout = code_contests_run
    kept = read_out(out / "train.jsonl")
    assert sorted(kept) == ["1_A. Kept", "8_A. Huge"]
    assert ("kept 2, skipped 8 (difficulty=1, file_io=1, in_held_out_split=1, interactive=1, multiple_answers=1, "
            "no_tests=1, source=1, tests_too_large=1), tests dropped 1") in stdout
    assert "code_contests/valid: no valid-*.parquet" in stdout
    assert [p["name"] for p in data.read_jsonl(out / "test.jsonl")] == ["99_A. Test"]


def test_code_contests_record(code_contests_run):
    problem = read_out(code_contests_run[0] / "train.jsonl")["1_A. Kept"]
    assert problem["id"] == "code_contests/train/1_A"
    assert problem["tests"] == {"public": [{"input": "1 2\n", "output": "3\n"}],
                                "private": [{"input": "2 2\n", "output": "4\n"}],
                                "generated": [{"input": "0 0\n", "output": "0\n"}]}
    assert (problem["source"], problem["difficulty"], problem["tags"]) == ("CODEFORCES", "A", ["math"])
    assert (problem["time_limit_s"], problem["memory_limit_mb"], problem["weakly_tested"]) == (2.5, 256, False)
    assert problem["reference_solutions"] == ["int main(){}"]  # C++ only, Python dropped
    huge = read_out(code_contests_run[0] / "train.jsonl")["8_A. Huge"]
    assert huge["tests"]["public"] == [{"input": "1 1\n", "output": "2\n"}]


def test_code_contests_yaml_config_and_flags(tmp_path):
    write_parquet(tmp_path / "hub" / "train-00000-of-00001.parquet",
                  [cc_row("6_C. Hard", "A hard one.", difficulty=9), cc_row("4_A. Any", "Print any answer.")],
                  CODE_CONTESTS_SCHEMA)
    config = tmp_path / "cc.yaml"
    config.write_text(yaml.safe_dump({"difficulties": ["A-C"], "keep": ["multiple_answers"]}))
    download_code_contests.main(["--config", str(config), "--local_dir", str(tmp_path / "hub"), "--splits", "train",
                                 "--output_dir", str(tmp_path / "out")])
    assert sorted(read_out(tmp_path / "out" / "train.jsonl")) == ["4_A. Any", "6_C. Hard"]
    download_code_contests.main(["--config", str(config), "--difficulties", "A", "--local_dir",
                                 str(tmp_path / "hub"), "--splits", "train", "--output_dir", str(tmp_path / "out")])
    assert sorted(read_out(tmp_path / "out" / "train.jsonl")) == ["4_A. Any"]  # the flag beats the YAML


def test_difficulty_windows():
    assert download_code_contests.expand_difficulties(["A-C", "easy"]) == {"A", "B", "C", "EASY"}
    assert download_code_contests.DIFFICULTIES[7] == "A" and download_code_contests.DIFFICULTIES[28] == "V"
    with pytest.raises(ValueError):
        download_code_contests.expand_difficulties(["Z"])


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
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "primeintellect" / "train-00000-of-00001.parquet", [
        dc_row("PI stdin", [{"type": "stdin_stdout", "input": "4\n", "output": "16\n"}]),
        dc_row("PI call", [{"type": "function_call", "input": [4], "output": [16], "fn_name": "sq"}]),
    ], DEEPCODER_SCHEMA)
    write_parquet(hub / "codeforces" / "test-00000-of-00001.parquet",
                  [dc_row("CF examples", [{"input": "1\n", "output": "2\n"}])], DEEPCODER_SCHEMA)
    out = root / "out"
    proc = subprocess.run([sys.executable, "download_deepcoder.py", "--local_dir", str(hub), "--output_dir", str(out),
                           "--configs", "lcbv5", "taco", "primeintellect", "codeforces"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_deepcoder_keeps_and_skips_by_reason(deepcoder_run):
    out, stdout = deepcoder_run
    assert sorted(read_out(out / "train.jsonl")) == ["LCB huge", "LCB mixed", "LCB stdin", "PI stdin", "TACO stdin"]
    assert ("kept 5, skipped 7 (function_call=3, in_held_out_split=1, malformed_tests=1, multiple_answers=1, "
            "no_tests=1), tests dropped 2") in stdout
    assert sorted(read_out(out / "test.jsonl")) == ["CF examples", "LCB test only", "Shared statement"]


def test_deepcoder_test_rows_never_reach_training(deepcoder_run):
    out, _ = deepcoder_run
    train = data.read_jsonl(out / "train.jsonl")
    test_keys = {data.statement_key(p["statement"]) for p in data.read_jsonl(out / "test.jsonl")}
    assert all(p["split"] == "train" and data.statement_key(p["statement"]) not in test_keys for p in train)


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
    cf = test["CF examples"]
    assert cf["weakly_tested"] and cf["tests"]["public"] == [{"input": "1\n", "output": "2\n"}]


@pytest.mark.parametrize("raw, shape", [
    ('[{"input": "1", "output": "1", "testtype": "stdin"}]', "lcbv5"),
    ('{"inputs": ["1"], "outputs": ["1"]}', "taco"),
    ('[{"type": "stdin_stdout", "input": "1", "output": "1"}]', "primeintellect"),
    ("[{'input': '1', 'output': '1'}]", "python-literal codeforces dump"),
])
def test_stdin_test_shapes(raw, shape):
    assert download_deepcoder.stdin_tests(raw) == ([{"input": "1", "output": "1"}], 0), shape


def test_statement_filters():
    assert data.statement_skip_reason("This is an interactive problem.") == "interactive"
    assert data.statement_skip_reason("Input\n\n...\n\nInteraction\n\nAfter printing, flush") == "interactive"
    assert data.statement_skip_reason("If there are multiple answers, print any of them.") == "multiple_answers"
    assert data.statement_skip_reason("You may output any valid table.") == "multiple_answers"
    assert data.statement_skip_reason("If there are multiple answers, print the smallest.") is None
    assert data.statement_skip_reason("Print YES if any of them is zero.") is None


# --------------------------------------------------------------------------------------------------------------
# Command-line behaviour


@pytest.mark.parametrize("argv", [
    ["download_code_contests.py", "--local_dir", "/nonexistent"],
    ["download_deepcoder.py", "--local_dir", "/nonexistent"],
    ["download_code_contests.py", "--difficulties", "Z"],
    ["download_code_contests.py", "--config", "/nonexistent.yaml"],
])
def test_scripts_fail_in_one_line(argv):
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["download_code_contests.py", "download_deepcoder.py", "data/build_sample.py"])
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
    with pytest.raises(FileNotFoundError, match="python download_deepcoder.py"):
        data.load_problems("deepcoder", "test")
    with pytest.raises(ValueError, match="no split"):
        data.load_problems("deepcoder", "valid")


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


@realdata
@pytest.mark.realdata
def test_real_code_contests_rows(tmp_path):
    """30 real train rows (some columns dropped by their publisher) written back as hub-schema parquet."""
    rows = [json.loads(line) for line in
            (SHARED_REALDATA / "code_contests" / "formalizewithtest_code_contests_sample_train_short.jsonl").open()]
    full = [{name: row.get(name) for name in CODE_CONTESTS_SCHEMA.names} for row in rows]
    write_parquet(tmp_path / "hub" / "train-00000-of-00001.parquet", full, CODE_CONTESTS_SCHEMA)
    download_code_contests.main(["--local_dir", str(tmp_path / "hub"), "--splits", "train",
                                 "--output_dir", str(tmp_path / "out")])
    kept = read_out(tmp_path / "out" / "train.jsonl")
    assert "361_A. Levko and Table" not in kept  # "Print any beautiful table."
    assert len(kept) >= 20
    shovel = kept["732_A. Buy a Shovel"]
    assert shovel["difficulty"] == "A" and shovel["time_limit_s"] == 1.0 and len(shovel["tests"]["public"]) == 3


@realdata
@pytest.mark.realdata
def test_real_livecodebench_and_codeforces_tests(tmp_path):
    """rllm's LCB rows (stdin and functional) and Codeforces rows (Python-literal tests) in DeepCoder's columns."""
    lcb = json.loads((SHARED_REALDATA / "lcb_deepcoder" / "rllm_livecodebench_test_279.json").read_text())
    cf = json.loads((SHARED_REALDATA / "lcb_deepcoder" / "rllm_codeforces_test_408.json").read_text())[:50]
    hub = tmp_path / "hub"
    write_parquet(hub / "lcbv5" / "test-00000-of-00001.parquet",
                  [dc_row(r["problem"], r["tests"], starter_code=r["starter_code"]) for r in lcb], DEEPCODER_SCHEMA)
    write_parquet(hub / "codeforces" / "test-00000-of-00001.parquet",
                  [dc_row(r["problem"], r["tests"]) for r in cf], DEEPCODER_SCHEMA)
    download_deepcoder.main(["--local_dir", str(hub), "--configs", "lcbv5", "codeforces", "--splits", "test",
                             "--output_dir", str(tmp_path / "out")])
    problems = data.read_jsonl(tmp_path / "out" / "test.jsonl")
    stdin = {r["problem"]: [t for t in r["tests"] if t["testtype"] == "stdin"] for r in lcb if not r["starter_code"]}
    lcb_kept = [p for p in problems if p["config"] == "lcbv5"]
    assert 100 < len(lcb_kept) <= len(stdin) < len(lcb)  # LeetCode-style (starter code) rows are all skipped
    for p in lcb_kept:  # only the stdin-typed tests survive
        assert data.all_tests(p) == [{"input": t["input"], "output": t["output"]} for t in stdin[p["statement"]]]
    cf_kept = [p for p in problems if p["config"] == "codeforces"]
    assert cf_kept and all(p["weakly_tested"] for p in cf_kept)
