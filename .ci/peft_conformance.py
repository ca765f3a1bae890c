"""PEFT's own TinyLoRA tests, on stock PEFT and with tinylora.py's tuner registered: ours may fail none that stock passes.

    python .ci/peft_conformance.py            # what .ci/run calls; about 2 minutes on 2 cores

`import tinylora` replaces PEFT's TinyLoRA tuner process-wide, so every PEFT user in the process gets our layers.
PEFT's test suite, which no one here wrote, is the strongest check that they are a faithful drop-in. This script
downloads the sdist of exactly the installed peft version (its tests are not copied into this repository), runs
the TinyLoRA cases of TEST_FILES twice in parallel (stock; then with this file as a pytest `-p` plugin that
imports tinylora and checks it took over the tuner) and exits 1 listing every case that passed on stock and did
not pass on ours. Cases that fail on stock too (those needing the Hugging Face Hub, which is offline here) are
counted, not judged. When the sdist cannot be downloaded it prints SKIPPED with the reason and exits 0.
The PEFT tests import `diffusers` and `scipy`: .ci/conformance-requirements.txt installs them.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = ("tests/test_custom_models.py", "tests/test_initialization.py", "tests/test_config.py",
              "tests/test_low_level_api.py")  # every file of PEFT's suite with TinyLoRA cases that runs offline
SELECT = "tinylora"  # pytest -k, case-insensitive: TinyLoRA, TinyLora, TinyLoraConfig


# ---------------------------------------------------------------------- the plugin side (pytest -p peft_conformance)
def pytest_configure(config) -> None:
    """Register our tuner before PEFT's tests import anything, and prove it is the one PEFT will build with."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import PeftType

    import tinylora

    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.TINYLORA] is tinylora.TinyLoraModel, "tinylora did not register"


# ------------------------------------------------------------------------------------------------- the script side
def fetch_tests(version: str, into: Path) -> Path | str:
    """The unpacked peft-`version` sdist (a directory), or a one-line reason why it could not be had."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                               f"peft=={version}", "-d", str(into)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"pip download peft=={version} timed out"
    archives = sorted(into.glob(f"peft-{version}.tar.gz"))
    if done.returncode or not archives:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"pip download peft=={version} failed: {lines[-1] if lines else done.returncode}"
    with tarfile.open(archives[0]) as tar:
        tar.extractall(into, filter="data")
    source = into / f"peft-{version}"
    if not all((source / name).exists() for name in TEST_FILES):
        return f"the peft {version} sdist lacks {', '.join(n for n in TEST_FILES if not (source / n).exists())}"
    (source / "tests" / "__init__.py").touch()  # its tests import each other as the `tests` package
    return source


def start(source: Path, ours: bool, report: Path) -> subprocess.Popen:
    """One pytest run of the TinyLoRA cases (stock, or with our tuner registered): a JUnit report and a log beside it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", *TEST_FILES, "-k", SELECT, "-q", "-o", "addopts=",
               "-p", "no:cacheprovider", f"--junitxml={report}", f"--basetemp={report.with_suffix('.tmp')}"]
    if ours:
        command += ["-p", Path(__file__).stem]
    with report.with_suffix(".log").open("w") as log:
        return subprocess.Popen(command, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)


def outcomes(report: Path) -> dict[str, str]:
    """Case id -> passed / failed / skipped, from a JUnit XML report."""
    result = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        result[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return result


def count(results: dict[str, str]) -> str:
    return ", ".join(f"{sum(v == kind for v in results.values())} {kind}" for kind in ("passed", "failed", "skipped"))


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    version = importlib.metadata.version("peft")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peft-conformance-") as tmp:
        source = fetch_tests(version, Path(tmp))
        if isinstance(source, str):
            print(f"PEFT conformance SKIPPED: {source}")
            return 0
        reports = {name: Path(tmp) / f"{name}.xml" for name in ("stock", "ours")}
        runs = [start(source, name == "ours", report) for name, report in reports.items()]  # in parallel
        for run in runs:
            run.wait()
        for name, report in reports.items():
            if not report.exists():  # pytest itself failed (an import error): show why
                print(report.with_suffix(".log").read_text()[-3000:])
                print(f"PEFT conformance FAILED: pytest produced no report for the {name} run")
                return 1
        stock, ours = outcomes(reports["stock"]), outcomes(reports["ours"])
    regressions = sorted(case for case, outcome in stock.items() if outcome == "passed" and ours.get(case) != "passed")
    print(f"PEFT {version} TinyLoRA tests ({', '.join(TEST_FILES)}; -k {SELECT}), "
          f"{time.perf_counter() - started:.0f} s\n  stock PEFT: {count(stock)}\n  our tuner:  {count(ours)}")
    for case in regressions:
        print(f"  REGRESSION (passes on stock, {ours.get(case, 'missing')} on ours): {case}")
    print("PEFT conformance " + ("FAILED" if regressions else "OK"))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
