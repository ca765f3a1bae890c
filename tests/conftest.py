"""Shared pytest configuration: markers and paths every test module may use."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# ../shared/realdata next to the checkout, or next to a parent folder (worktrees live one level deeper)
SHARED_REALDATA = next((p / "shared" / "realdata" for p in ROOT.parents if (p / "shared" / "realdata").is_dir()),
                       ROOT.parent / "shared" / "realdata")
sys.path.insert(0, str(ROOT))


def saved_v(adapter: Path):
    """The trained vector v of a saved TinyLoRA adapter (final/, best/ or a checkpoint)."""
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))["base_model.tinylora_v.0"]


def logged_metrics(output_dir: Path) -> list[dict]:
    """A training run's OUTPUT_DIR/metrics.jsonl, one dict per log."""
    import json

    import records

    return [json.loads(line) for line in (output_dir / records.METRICS_FILE).read_text().splitlines()]


def is_png(path: Path) -> bool:
    """A drawn picture: PNG's signature and more bytes than an empty frame (the scripts' PNGs are 20-90 kB)."""
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: takes over a minute on 2 CPU cores")
    config.addinivalue_line("markers", "realdata: reads ../shared/realdata (skipped when absent)")


def pytest_sessionstart(session) -> None:
    """One torch thread: on 2 cores shared with the judge's compilers, more threads make tiny models 20x slower."""
    import torch

    torch.set_num_threads(1)


def pytest_addoption(parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (CI runs them separately)")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--runslow"):
        return
    import pytest

    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def load_script(name: str):
    """test.py / validate.py as modules (the name `test` would clash with the standard library's package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model is too small to share between threads: on 2 busy cores, two torch threads make generation
    20x slower than one (they spin waiting for each other). Use with pytestmark = usefixtures("one_torch_thread")."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
