"""Experiment records a rerun can resume from: a CSV appended one flushed row at a time, the settings a
directory was made with (refusing to mix others into it).

sweep.py (one row per cell) and loss_surface.py (one row per grid point) both resume this way; a script never
imports another, so what they share lives here.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import data


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
    """Record `settings` in `path`, or raise data.UsageError when an earlier run in the same directory used other ones:
    resuming must never mix results made under different settings. `upgrade` reads a record in today's terms (one
    written before a rename must still match the same settings)."""
    if path.exists():
        old = upgrade(json.loads(path.read_text()))
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise data.UsageError(f"{path.parent} holds a {what} made with other {', '.join(changed)}; "
                                  f"pass another --output_dir or restore the settings")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))
