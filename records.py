"""What a run leaves behind to be read later: what every checkpoint and adapter records of the run that made it
(`run_info`), the run's metrics.jsonl, and experiment records a rerun can resume from: a CSV appended one flushed row
at a time, the settings a directory was made with (refusing to mix others into it).

sweep.py (one row per cell) and loss_surface.py (one row per grid point) both resume this way; a script never
imports another, so what they share lives here.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import data
import errors

ROOT = Path(__file__).resolve().parent
METRICS_FILE = "metrics.jsonl"  # every log of a training run, one JSON object per line, written as it happens


def git_commit() -> str:
    """The checkout's commit, so a saved adapter names the code that trained it ("unknown" outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run_info(concerns: tuple, trainer_args, prompt: data.PromptSettings, data_digest: str, **extra) -> dict:
    """What every checkpoint manifest and saved adapter records: every flag of every concern (one flat "config",
    as sweep.py and older adapters read it), TRL's config, commit, seeds, data and the prompt (test.py and
    validate.py ask the adapter with that prompt by default)."""
    kind = "grpo" if "GRPO" in type(trainer_args).__name__ else "sft"
    config = {key: value for concern in concerns for key, value in dataclasses.asdict(concern).items()}
    return {**extra, "config": {**config, kind: trainer_args.to_dict()}, "commit": git_commit(),
            "seeds": {"seed": trainer_args.seed, "projection_seed": trainer_args.seed}, "data_hash": data_digest,
            "prompt": prompt.to_dict()}


def append_metrics(output_dir: Path, entry: dict) -> None:
    """One line of OUTPUT_DIR/metrics.jsonl (the main process's logs and validations, in the order they happen)."""
    with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV; a half-written last line (a kill during the append) is ignored."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if None not in row.values() and None not in row]


def append_row(path: Path, row: dict, fields: list[str]) -> None:
    """Append one row (writing the header first in a new file), flushed to disk: the row is the resume record."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in fields})
        f.flush()
        os.fsync(f.fileno())


def check_settings(path: Path, settings: dict, what: str, upgrade: Callable[[dict], dict] = dict) -> None:
    """Record `settings` in `path`, or raise errors.UsageError when an earlier run in the same directory used other ones:
    resuming must never mix results made under different settings. `upgrade` reads a record in today's terms (one
    written before a rename must still match the same settings)."""
    if path.exists():
        old = upgrade(json.loads(path.read_text()))
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise errors.UsageError(f"{path.parent} holds a {what} made with other {', '.join(changed)}; "
                                  f"pass another --output_dir or restore the settings")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))
