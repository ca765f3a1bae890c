"""Test a base model or a TinyLoRA adapter on held-out problems, or compare two runs.

    python test.py --baseline --num_problems 50                  # the base model, greedy
    python test.py --checkpoint_path OUT/best --num_problems 50  # base model + adapter (u/rank/tie/prompt from its files)
    python test.py --compare RUN_A/summary.json RUN_B/summary.json

Both runs of a comparison must use the same problems, prompts, seed and settings (compare refuses others).
Writes results.jsonl and summary.json to --output_dir (default output/test/<time>-<label>) and prints a markdown
table; --compare prints the paired table and draws it as bars in --output_dir/compare.png (default: beside B's
summary.json, named compare_vs_<A's folder>.png); see docs/evaluation.md. An adapter is asked with the prompt it
was trained on unless --system_prompt, --instruction or --show_examples say otherwise.
"""
from __future__ import annotations

import arguments
import errors


@errors.script_main
def main(argv: list[str] | None = None) -> dict:
    parser = arguments.evaluation_parser(__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--baseline", action="store_true", help="evaluate the base model without an adapter")
    mode.add_argument("--checkpoint_path", metavar="DIR", help="adapter directory saved by train_rl.py")
    mode.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two summary.json files to compare (B - A)")
    parser.add_argument("--num_problems", type=int, help="problems to evaluate (default: the whole split)")
    parser.add_argument("--split", default="test", help="dataset split (default %(default)s)")
    args = arguments.parse_with_config(parser, argv)
    import evaluation  # after parsing: --help answers without torch

    if args.compare:
        return evaluation.compare_cli(*args.compare, args.output_dir)
    return evaluation.run_cli(args, "test")


if __name__ == "__main__":
    main()
