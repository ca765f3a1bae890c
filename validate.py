"""Validate a base model or a TinyLoRA adapter on a validation split (the same code path as test.py).

    python validate.py 50                               # 50 problems, base model, greedy
    python validate.py 50 --checkpoint_path OUT/best    # with an adapter, asked with the prompt it was trained on

The default split is "valid" where the dataset has one (code_contests); sample and deepcoder have none, so
their "test" split is used: selecting checkpoints on it makes a later test on that split optimistic.
Writes results.jsonl and summary.json to --output_dir (default output/validate/<time>-<label>).
"""
from __future__ import annotations

import arguments
import data
import errors


@errors.script_main
def main(argv: list[str] | None = None) -> dict:
    parser = arguments.evaluation_parser(__doc__)
    parser.add_argument("num", nargs="?", type=int, metavar="NUM", help="problems to evaluate (default 50)")
    parser.add_argument("--num_problems", type=int, help="the same as NUM, spelled as test.py spells it")
    parser.add_argument("--checkpoint_path", metavar="DIR", help="adapter directory (default: the base model)")
    parser.add_argument("--split", help="dataset split (default: valid for code_contests, test otherwise)")
    args = arguments.parse_with_config(parser, argv)
    import evaluation  # after parsing: --help answers without torch

    args.num_problems = args.num_problems or args.num or 50
    args.split = args.split or data.validation_split(args.dataset)
    return evaluation.run_cli(args, "validate")


if __name__ == "__main__":
    main()
