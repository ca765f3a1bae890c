"""The 2D loss surface of a u=2 TinyLoRA: SFT loss (and optionally reward) on a grid of (v1, v2).

    python loss_surface.py --model tiny --no_quant --dataset sample --points 11 --radius 1.0
    python loss_surface.py --dataset code_contests --num_problems 64 --points 21 --radius 0.05 --reward_problems 16

With u=2 and one v shared by every projection (tie "all"), the whole adapter is two numbers, so its loss
landscape can be drawn: each grid point sets v = (v1, v2) and measures train_sft.py's SFT loss (sft.py: mean
cross-entropy per answer token on reference solutions); --reward_problems N also generates greedily on N of the
problems and scores them with the judge. The centre v = 0 is the base model. Rows are appended to surface.csv as
they are computed and points already there are skipped, so an interrupted scan resumes and a finer grid reuses
the coarse one. surface.png is the heatmap (surface_reward.png the reward's).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import arguments
import data
import errors
import records
import sft

FIELDS = ["v1", "v2", "loss", "avg_reward", "pass@1", "seconds"]


def grid_axis(radius: float, points: int) -> list[float]:
    """`points` evenly spaced values in [-radius, radius]; an odd count puts 0 (the base model) on the grid."""
    return [round(-radius + 2 * radius * i / (points - 1), 10) + 0.0 for i in range(points)]  # + 0.0: no -0.0


def key(v1: float, v2: float) -> tuple[str, str]:
    """Grid coordinates as the CSV stores them, so resumed points match what was written."""
    return f"{v1:.10g}", f"{v2:.10g}"


def set_v(model, v1: float, v2: float) -> None:
    """Point the model at (v1, v2): the single v that tie "all" shares across every projection."""
    import torch

    import tinylora

    (key,) = tinylora.tiny_lora_v(model)
    tinylora.set_tiny_lora_v(model, {key: torch.tensor([v1, v2])})


def measure(model, tokenizer, examples: list[dict], problems: list[dict], args) -> dict:
    """The loss at the model's current v, and the judge's scores on `problems` when there are any."""
    import evaluation  # here, not at the top: --help answers without torch

    row = {"loss": sft.sft_loss(model, examples, args.batch_size)}
    if problems:
        settings = evaluation.GenerationSettings(max_new_tokens=args.max_completion_length, batch_size=args.batch_size,
                                                 seed=args.seed)
        _, summary = evaluation.evaluate(model, tokenizer, problems, settings, prompt=args.prompt, progress=False)
        row["avg_reward"], row["pass@1"] = summary["metrics"]["avg_reward"], summary["metrics"].get("pass@1", 0.0)
    return row


def parse_args(argv: list[str] | None):
    parser = errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=arguments.DEFAULT_MODEL,
                        help="hub id, local dir, FILE.gguf, or offline 'smollm2' / 'tiny' / 'tiny-coder'")
    parser.add_argument("--no_quant", action="store_true", help="bf16 (fp32 on CPU) instead of NF4 4-bit")
    parser.add_argument("--dataset", default="code_contests",
                        help=f"problems with references: {' | '.join(data.DATASETS)} | a problems .jsonl file")
    parser.add_argument("--train_data", dest="dataset", help=argparse.SUPPRESS)  # the seed's --dataset PATH
    parser.add_argument("--split", default="train", help="split whose reference solutions give the loss (train)")
    parser.add_argument("--num_problems", type=int, default=32, help="problems for the loss (default %(default)s)")
    arguments.add_prompt_flags(parser)
    parser.add_argument("--rank", type=int, default=2, help="SVD rank r (default %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="projection and sampling seed (default %(default)s)")
    parser.add_argument("--radius", type=float, default=1.0, help="grid spans [-radius, radius]² (default %(default)s)")
    parser.add_argument("--points", type=int, default=11, help="grid points per axis, odd (default %(default)s)")
    parser.add_argument("--max_length", type=int, default=1024, help="longer examples are dropped (default %(default)s)")
    parser.add_argument("--batch_size", type=int, default=8, help="examples per forward pass (default %(default)s)")
    parser.add_argument("--reward_problems", type=int, default=0, help="also judge greedy answers on N problems")
    parser.add_argument("--max_completion_length", type=int, default=256, help="completion length cap for the reward")
    parser.add_argument("--output_dir", default="output/loss_surface", help="surface.csv and surface.png go here")
    args = arguments.parse_with_config(parser, argv)
    if args.points < 3 or args.points % 2 == 0:
        raise errors.UsageError("--points must be an odd number >= 3, so v = 0 (the base model) is on the grid")
    if args.radius <= 0 or min(args.num_problems, args.rank, args.batch_size, args.max_completion_length) < 1:
        raise errors.UsageError("--radius, --num_problems, --rank, --batch_size and --max_completion_length must be "
                              "positive")
    if args.reward_problems < 0:
        raise errors.UsageError("--reward_problems must be >= 0")
    args.prompt = data.PromptSettings().overridden(args)
    return args


def load_u2_model(args):
    """The base model with a u=2, tie "all" TinyLoRA (two numbers in all), and its tokenizer."""
    import modeling
    import tinylora

    try:
        model, tokenizer = modeling.load_model(args.model, quant=not args.no_quant)
    except OSError as err:
        raise errors.UsageError(str(err).splitlines()[0])
    return tinylora.apply_tiny_lora(model, u=2, rank=args.rank, seed=args.seed, tie="all"), tokenizer


def scan(model, tokenizer, examples: list[dict], problems: list[dict], axis: list[float], csv_path: Path,
         args) -> dict[tuple[str, str], dict]:
    """Every grid point not yet in `csv_path`, each appended as it is measured; all rows by grid key."""
    from tqdm import tqdm

    rows = {key(float(r["v1"]), float(r["v2"])): r for r in records.read_rows(csv_path)}
    todo = [(v1, v2) for v1 in axis for v2 in axis if key(v1, v2) not in rows]
    print(f"loss surface: {len(axis)}x{len(axis)} grid, {len(rows)} points already in {csv_path}, {len(todo)} to go")
    for v1, v2 in tqdm(todo, desc="surface", unit="point"):
        start = time.monotonic()
        set_v(model, v1, v2)
        row = {"v1": key(v1, v2)[0], "v2": key(v1, v2)[1], **measure(model, tokenizer, examples, problems, args)}
        row["seconds"] = round(time.monotonic() - start, 2)
        records.append_row(csv_path, row, FIELDS)
        rows[key(v1, v2)] = row
    return rows


def grid_values(rows: dict[tuple[str, str], dict], axis: list[float], column: str) -> list[list[float]]:
    """`column` over the grid as the heatmap draws it: one list per v2, each running over v1."""
    return [[float(rows[key(v1, v2)][column]) for v1 in axis] for v2 in axis]  # (v2, v1)


def report(rows: dict[tuple[str, str], dict], axis: list[float], out: Path, with_reward: bool) -> None:
    """The base model's loss against the grid's lowest, and the heatmaps."""
    import plots

    centre = rows[key(0.0, 0.0)]
    lowest = min((rows[key(v1, v2)] for v1 in axis for v2 in axis), key=lambda r: float(r["loss"]))
    print(f"base model (v = 0): loss {float(centre['loss']):.4f}; lowest on the grid: {float(lowest['loss']):.4f} "
          f"at v = ({lowest['v1']}, {lowest['v2']})")
    columns = {"loss": out / "surface.png", **({"avg_reward": out / "surface_reward.png"} if with_reward else {})}
    drawn = [plots.heatmap(grid_values(rows, axis, column), axis, column, path) for column, path in columns.items()]
    print(f"wrote {out / 'surface.csv'}" + "".join(f" and {p}" for p in drawn))


@errors.script_main
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    try:
        problems = data.load_problems(args.dataset, args.split, args.num_problems, args.seed)
    except (OSError, ValueError) as err:  # missing data, unknown dataset or split
        raise errors.UsageError(str(err).splitlines()[0])
    model, tokenizer = load_u2_model(args)
    examples = sft.build_examples(problems, tokenizer, args.max_length, prompt=args.prompt)
    reward_problems = problems[:args.reward_problems]
    out = Path(args.output_dir)
    settings = {k: getattr(args, k) for k in ("model", "no_quant", "rank", "seed", "max_length")}
    settings["max_new_tokens"] = args.max_completion_length  # surface.json's name for it: older scans still resume
    settings.update(prompt=args.prompt.to_dict(), examples=sft.examples_hash(examples),
                    reward_problems=[p["id"] for p in reward_problems])
    records.check_settings(out / "surface.json", settings, "loss surface")
    axis = grid_axis(args.radius, args.points)
    rows = scan(model, tokenizer, examples, reward_problems, axis, out / "surface.csv", args)
    report(rows, axis, out, with_reward=bool(reward_problems))
    return out / "surface.csv"


if __name__ == "__main__":
    main()
