"""Build the shipped problem set: data/sample/problems.yaml -> data/sample/{train,test}.jsonl.

    python data/build_sample.py

Expected outputs are computed by compiling and running the reference solution solutions/<name>.cpp (our own,
trusted code; generated programs only ever run through utils.judge_program). The build refuses to write if a
reference crashes or if the deliberately wrong variant wrong/<name>.cpp passes every test, i.e. the tests would
not catch its bug. A problem with several right answers names a checker (checkers/<name>.cpp, stored in the record's
`checker` field) that decides instead of token comparison.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from tqdm import tqdm

SAMPLE = Path(__file__).resolve().parent / "sample"
sys.path.insert(0, str(SAMPLE.parent.parent))
import errors  # noqa: E402  (repo root on the path first)
import data  # noqa: E402

MIN_TESTS = 5


def compile_and_run(source: Path, inputs: list[str], workdir: Path, cxx: str) -> list[str | None]:
    """Outputs of `source` on each input (None where it crashed or ran over 5 s)."""
    binary = workdir / source.parent.name / source.stem
    binary.parent.mkdir(exist_ok=True)
    build = subprocess.run([cxx, "-O2", "-std=c++17", "-o", str(binary), str(source)], capture_output=True, text=True)
    if build.returncode != 0:
        raise ValueError(f"{source} does not compile: {build.stderr.strip().splitlines()[:1]}")
    outputs = []
    for stdin in inputs:
        try:
            run = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, timeout=5)
            outputs.append(run.stdout if run.returncode == 0 else None)
        except subprocess.TimeoutExpired:
            outputs.append(None)
    return outputs


def checker_accepts(checker: Path, inputs: list[str], outputs: list[str | None], answers: list[str],
                    workdir: Path, cxx: str) -> list[bool]:
    """Whether the (trusted, shipped) checker accepts each output, testlib style: checker input output answer."""
    binary = workdir / "checkers" / checker.stem
    binary.parent.mkdir(exist_ok=True)
    build = subprocess.run([cxx, "-O2", "-std=c++17", "-o", str(binary), str(checker)], capture_output=True, text=True)
    if build.returncode != 0:
        raise ValueError(f"{checker} does not compile: {build.stderr.strip().splitlines()[:1]}")
    verdicts = []
    for k, (stdin, output, answer) in enumerate(zip(inputs, outputs, answers)):
        files = [workdir / f"{checker.stem}.{k}.{part}" for part in ("in", "out", "ans")]
        for path, text in zip(files, (stdin, output or "", answer)):
            path.write_text(text)
        verdicts.append(output is not None and subprocess.run([str(binary), *map(str, files)], timeout=5).returncode == 0)
    return verdicts


def build_problem(spec: dict, workdir: Path, cxx: str) -> dict:
    """One record from a problems.yaml entry, after checking the reference and the wrong variant (with the
    problem's checker when it has one: the checker must accept the reference and reject the wrong variant)."""
    name, inputs = spec["name"], spec["tests"]
    if len(inputs) < MIN_TESTS:
        raise ValueError(f"{name}: {len(inputs)} tests, need at least {MIN_TESTS}")
    expected = compile_and_run(SAMPLE / "solutions" / f"{name}.cpp", inputs, workdir, cxx)
    if None in expected:
        raise ValueError(f"{name}: reference solution failed on test {expected.index(None) + 1}")
    wrong = compile_and_run(SAMPLE / "wrong" / f"{name}.cpp", inputs, workdir, cxx)
    extra = {}
    if "checker" in spec:
        checker = SAMPLE / spec["checker"]
        if not all(checker_accepts(checker, inputs, expected, expected, workdir, cxx)):
            raise ValueError(f"{name}: {spec['checker']} rejects the reference solution's own output")
        wrong_passes = all(checker_accepts(checker, inputs, wrong, expected, workdir, cxx))
        extra["checker"] = checker.read_text()
    else:
        wrong_passes = all(w is not None and w.split() == e.split() for w, e in zip(wrong, expected))
    if wrong_passes:
        raise ValueError(f"{name}: wrong/{name}.cpp passes every test; add a test that catches it")
    tests = [{"input": i, "output": o} for i, o in zip(inputs, expected)]
    n_public = spec.get("public", 2)
    return data.make_problem(
        f"sample/{name}", "sample", spec["split"], spec["title"], spec["statement"],
        {"public": tests[:n_public], "private": tests[n_public:]}, time_limit_s=1.0, memory_limit_mb=256,
        source="sample", difficulty=spec["difficulty"], tags=spec["tags"], **extra)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default=str(SAMPLE))
    p.add_argument("--cxx", default="g++")
    args = p.parse_args(argv)
    specs = yaml.safe_load((SAMPLE / "problems.yaml").read_text())
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        errors.cli_error("duplicate problem names in problems.yaml")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor() as pool:
        futures = [pool.submit(build_problem, s, Path(tmp), args.cxx) for s in specs]
        problems, failures = [], []
        for future in tqdm(futures, desc="sample problems"):
            try:
                problems.append(future.result())
            except (ValueError, OSError) as e:
                failures.append(str(e))
    if failures:
        errors.cli_error("; ".join(failures))
    for split in data.SPLITS["sample"]:
        rows = [p for p in problems if p["split"] == split]
        with open(Path(args.output_dir) / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in rows)
        print(f"sample/{split}: {len(rows)} problems, {sum(len(data.all_tests(p)) for p in rows)} tests")


if __name__ == "__main__":
    main()
