"""Sweep TinyLoRA's budget and learning rate: a grid of train_rl.py runs, each validated, resumable.

    python sweep.py --config configs/sweep_example.yaml              # the grid, its flags and output_dir in YAML
    python sweep.py configs/sweep_example.yaml --output_dir output/sweep/u --retries 0   # the YAML positionally

Every combination of the grid's u, rank, tie, learning_rate and seed is one cell: `python train_rl.py` in a child
process (a crash or an out-of-memory kill ends that cell, not the sweep), then `python validate.py` on the cell's
final adapter, which asks it with the prompt it was trained on. Results go to output/sweep/<config name> unless
the YAML or --output_dir says otherwise. A finished cell writes result.json and a row of results.csv; a rerun skips cells with an "ok" row, so an
interrupted sweep continues where it stopped. A crashed cell is retried (from its newest complete checkpoint
when it has one); a cell that still fails gets a "failed" row with the last line of its log, and is tried again
by the next run. results.md ranks the cells; pass_vs_params.png plots pass@1 and average
reward against the number of trained parameters.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

import arguments
import errors
import paths
import records

ROOT = Path(__file__).resolve().parent

GRID_KEYS = ("u", "rank", "tie", "learning_rate", "seed")
GRID_TYPES = {"u": int, "rank": int, "tie": str, "learning_rate": float, "seed": int}
METRICS = ("pass@1", "avg_reward", "compile_rate")
FIELDS = ["cell", *GRID_KEYS, "trainable", "status", "attempts", *METRICS, "train_s", "validate_s", "base_model",
          "adapter", "error"]
RESULT = "result.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid; None = not swept (train_args or train_rl's defaults decide). Its name, made of the
    swept values, is its directory and its key in results.csv."""

    u: int | None = None
    rank: int | None = None
    tie: str | None = None
    learning_rate: float | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        """e.g. "u13-r2-all-lr0.0001-s42" (a tie "groups:4" becomes "groups4")."""
        prefix = {"u": "u", "rank": "r", "tie": "", "learning_rate": "lr", "seed": "s"}
        parts = []
        for key in GRID_KEYS:
            value = getattr(self, key)
            if value is not None:
                parts.append(prefix[key] + (f"{value:g}" if key == "learning_rate" else str(value).replace(":", "")))
        return "-".join(parts)

    def train_flags(self) -> list[str]:
        return [a for k in GRID_KEYS if getattr(self, k) is not None for a in (f"--{k}", str(getattr(self, k)))]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep YAML: the grid, the flags every cell shares, and where results go."""

    grid: dict[str, list]
    train_args: list[str]
    validate_args: list[str]
    output_dir: Path

    def cells(self) -> list[Cell]:
        keys = list(self.grid)
        return [Cell(**dict(zip(keys, values))) for values in itertools.product(*(self.grid[k] for k in keys))]


# ------------------------------------------------------------------------------------------------- flags
def as_flags(options: dict | list | None) -> list[str]:
    """YAML flags to argv: {max_steps: 2, no_quant: true} -> ["--max_steps", "2", "--no_quant"] (false: left out).

    Flag and value stay separate words: train_rl.py looks for a literal "--config" word."""
    if options is None or isinstance(options, list):
        return [str(a) for a in options or []]
    flags = []
    for key, value in options.items():
        if value is True:
            flags.append(f"--{key}")
        elif value is not False and value is not None:
            flags += [f"--{key}", str(value)]
    return flags


# ---------------------------------------------------------------------------------------------- the config
def load_sweep(path: str, output_dir: str | None = None) -> Sweep:
    """Parse and check a sweep YAML (see configs/sweep_example.yaml); any problem exits 2 with one line."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise errors.UsageError(f"cannot read sweep config {path}: {str(err).splitlines()[0]}")
    unknown = sorted(set(raw) - {"grid", "train_args", "validate_args", "output_dir"})
    if unknown:
        raise errors.UsageError(f"unknown keys in {path}: {', '.join(unknown)} (expected grid, train_args, "
                              f"validate_args, output_dir)")
    grid = raw.get("grid") or {}
    bad = sorted(set(grid) - set(GRID_KEYS))
    if bad:
        raise errors.UsageError(f"grid keys {', '.join(bad)} are not sweepable; the grid takes {', '.join(GRID_KEYS)}")
    if not grid:
        raise errors.UsageError(f"{path} has no grid; give at least one of {', '.join(GRID_KEYS)} a list of values")
    values = {}
    for key in (k for k in GRID_KEYS if k in grid):
        items = grid[key] if isinstance(grid[key], list) else [grid[key]]
        try:
            values[key] = list(dict.fromkeys(GRID_TYPES[key](item) for item in items))
        except (TypeError, ValueError):
            raise errors.UsageError(f"grid.{key} must be a list of {GRID_TYPES[key].__name__} (got {items!r})")
        if not values[key]:
            raise errors.UsageError(f"grid.{key} is empty")
    numbers = values.get("u", []) + values.get("rank", []) + values.get("learning_rate", [])
    if numbers and min(numbers) <= 0:
        raise errors.UsageError("grid u, rank and learning_rate must be positive")
    train_args = as_flags(raw.get("train_args"))
    owned = [a for a in train_args if a.startswith("--") and a.split("=")[0][2:] in (*GRID_KEYS, "output_dir", "resume")]
    if owned:
        raise errors.UsageError(f"train_args may not set {', '.join(owned)}: the sweep sets them per cell")
    out = output_dir or raw.get("output_dir") or f"output/sweep/{Path(path).stem}"
    return Sweep(values, train_args, as_flags(raw.get("validate_args")), Path(out))


# ------------------------------------------------------------------------------------------------- one cell
def run_cell(cell: Cell, cell_dir: Path, sweep: Sweep, resume: bool) -> int:
    """Train and validate one cell by running train_rl.py and validate.py as a user would, each in its own process
    (a crash or an out-of-memory kill ends that cell, not the sweep) with its output in cell_dir/log.txt; writes
    result.json last (its presence means the cell finished). Returns the failing script's exit code, or 0."""
    import modeling
    import tinylora

    final = cell_dir / "train" / "final"
    with open(cell_dir / "log.txt", "ab") as log:
        def script(name: str, argv: list[str]) -> int:
            return subprocess.run([sys.executable, str(ROOT / name), *argv], stdout=log, stderr=subprocess.STDOUT).returncode

        start = time.monotonic()
        if not (final / tinylora.META_FILE).exists():  # a cell that crashed in validation keeps its trained adapter
            flags = [*sweep.train_args, *cell.train_flags(), "--output_dir", str(cell_dir / "train")]
            code = script("train_rl.py", [*flags, *(["--resume"] if resume else [])])
            if code:
                return code
        train_s = time.monotonic() - start
        meta = tinylora.read_meta(final)
        config = meta["config"]  # what the cell really trained: its flags, the config file and train_rl's defaults
        model_flags = ["--model", config["model"], "--dataset", config["dataset"], *(["--no_quant"] if config["no_quant"] else [])]
        start = time.monotonic()
        # the adapter's own prompt comes from its metadata: validate.py asks it the way it was trained
        code = script("validate.py", [*model_flags, *sweep.validate_args, "--checkpoint_path", str(final),
                                      "--output_dir", str(cell_dir / "validate")])
        if code:
            return code
    summary = json.loads((cell_dir / "validate" / "summary.json").read_text())
    effective = {"u": config["u"], "rank": config["rank"], "tie": config["tie"],
                 "learning_rate": config["grpo"]["learning_rate"], "seed": config["grpo"]["seed"]}
    result = {**effective, "cell": cell.name, "trainable": meta["trainable"],
              **{k: summary["metrics"].get(k) for k in METRICS}, "train_s": round(train_s, 1),
              "validate_s": round(time.monotonic() - start, 1), "adapter": str(final),
              # the resolved directory, so that cells trained on a rebuilt local model (e.g. tiny-coder) stand out
              "base_model": modeling.resolve_model_path(config["model"])}
    with paths.replaced_atomically(cell_dir / RESULT) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return 0


def last_log_line(cell_dir: Path) -> str:
    """The cell's last log line (a one-line "error: ..." or an exception), for the CSV's error column."""
    try:
        lines = [line.strip() for line in (cell_dir / "log.txt").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def finish_cell(cell: Cell, sweep: Sweep, retries: int, runner: Callable[..., int]) -> dict:
    """Run a cell until it writes result.json, at most 1 + `retries` times; the row for results.csv."""
    import training  # here, not at the top: --help answers without torch

    cell_dir = sweep.output_dir / cell.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    row = {**dataclasses.asdict(cell), "cell": cell.name, "status": "failed", "attempts": 0}
    for attempt in range(1, retries + 2):
        if (cell_dir / RESULT).exists():  # finished by an earlier run that stopped before writing its row
            break
        resume = training.latest_valid_checkpoint(cell_dir / "train") is not None
        code = runner(cell, cell_dir, sweep, resume)
        row["attempts"] = attempt
        if code != 0 or not (cell_dir / RESULT).exists():
            row["error"] = f"exit {code}: {last_log_line(cell_dir)}"
            tqdm.write(f"{cell.name}: attempt {attempt} failed ({row['error']}); log: {cell_dir / 'log.txt'}")
        if code == 2:  # bad arguments or missing files: the same again would fail the same way
            break
    if (cell_dir / RESULT).exists():
        row.update(json.loads((cell_dir / RESULT).read_text()), status="ok", error="")
    return row


# ---------------------------------------------------------------------------------------------------- report
def best_rows(rows: list[dict]) -> list[dict]:
    """The latest "ok" row per cell, best first (pass@1, then average reward)."""
    latest = {row["cell"]: row for row in rows if row["status"] == "ok"}
    return sorted(latest.values(), key=lambda r: (float(r["pass@1"] or 0), float(r["avg_reward"] or 0)), reverse=True)


def markdown_table(rows: list[dict], failed: list[str]) -> str:
    """results.md: every finished cell ranked, the best one named, and the cells still failing."""
    lines = ["| cell | u | rank | tie | lr | seed | trainable | pass@1 | avg reward | compile rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['cell']} | {row['u']} | {row['rank']} | {row['tie']} | {float(row['learning_rate']):g} "
                     f"| {row['seed']} | {row['trainable']} | {100 * float(row['pass@1']):.2f}% "
                     f"| {float(row['avg_reward']):.3f} | {100 * float(row['compile_rate']):.2f}% |")
    if rows:
        best = rows[0]
        lines += ["", f"Best cell: **{best['cell']}** ({best['trainable']} trainable parameters): pass@1 "
                      f"{100 * float(best['pass@1']):.2f}%, average reward {float(best['avg_reward']):.3f}; "
                      f"adapter {best['adapter']}"]
    if failed:
        lines += ["", f"Failed (rerun the sweep to retry): {', '.join(failed)}"]
    return "\n".join(lines) + "\n"


def write_report(sweep: Sweep) -> list[dict]:
    """results.md and the plot from every row so far (finished cells of earlier runs included)."""
    import plots

    rows = records.read_rows(sweep.output_dir / "results.csv")
    ranked = best_rows(rows)
    done = {row["cell"] for row in ranked}
    failed = sorted({row["cell"] for row in rows if row["status"] != "ok"} - done)
    (sweep.output_dir / "results.md").write_text(markdown_table(ranked, failed))
    print(markdown_table(ranked, failed))
    written = [sweep.output_dir / "results.csv", sweep.output_dir / "results.md"]
    if ranked:  # a picture of no finished cell would be an empty frame
        written.append(plots.sweep_points(ranked, sweep.output_dir / "pass_vs_params.png"))
    print(f"wrote {', '.join(map(str, written))}")
    return ranked


# ------------------------------------------------------------------------------------------------------ main
def canonical_settings(flags: dict[str, list[str]]) -> dict[str, list[str]]:
    """train_args and validate_args as sweep.json records them, retired flag spellings renamed: a sweep started with
    `max_samples:` resumes after its YAML says `num_problems:`, and the other way round."""
    return {key: arguments.canonical_flags(argv) for key, argv in flags.items()}


def run_sweep(sweep: Sweep, retries: int = 1, runner: Callable[..., int] = run_cell) -> list[dict]:
    """Every unfinished cell, in grid order; returns the ranked "ok" rows of the whole sweep."""
    records.check_settings(sweep.output_dir / "sweep.json", canonical_settings(
        {"train_args": sweep.train_args, "validate_args": sweep.validate_args}), "sweep", upgrade=canonical_settings)
    csv_path = sweep.output_dir / "results.csv"
    done = {row["cell"] for row in records.read_rows(csv_path) if row["status"] == "ok"}
    cells = sweep.cells()
    todo = [cell for cell in cells if cell.name not in done]
    print(f"sweep: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run -> {sweep.output_dir}")
    for cell in tqdm(todo, desc="sweep", unit="cell"):
        row = finish_cell(cell, sweep, retries, runner)
        records.append_row(csv_path, row, FIELDS)
        scores = f", pass@1 {row['pass@1']}, avg reward {row['avg_reward']}" if row["status"] == "ok" else ""
        tqdm.write(f"{cell.name}: {row['status']}{scores}")
    return write_report(sweep)


@errors.script_main
def main(argv: list[str] | None = None) -> list[dict]:
    """Exit 0 when every cell of the grid has finished, 1 when some still fail, 2 on bad arguments."""
    parser = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("yaml", nargs="?", metavar="CONFIG", help="the sweep YAML, positionally (as --config)")
    parser.add_argument("--config", help="sweep YAML: grid, train_args, validate_args, output_dir")
    parser.add_argument("--output_dir", help="overrides the YAML's output_dir")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a crashed cell (default 1)")
    args = parser.parse_args(argv)
    config = args.config or args.yaml
    if args.retries < 0 or not config or (args.config and args.yaml):
        raise errors.UsageError("give the sweep YAML once (--config FILE or FILE) and --retries >= 0")
    if not Path(config).is_file():
        raise errors.UsageError(f"sweep config {config} not found")
    sweep = load_sweep(config, args.output_dir)
    ranked = run_sweep(sweep, args.retries)
    if {cell.name for cell in sweep.cells()} - {row["cell"] for row in ranked}:
        sys.exit(1)
    return ranked


if __name__ == "__main__":
    main()
