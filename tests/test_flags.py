"""Every script spells a notion one way (issue #33): --help shows one flag per notion (and answers without torch),
a retired spelling still parses (and reads as a YAML key) as the flag it became, and our booleans are plain
switches everywhere."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
from conftest import ROOT, load_script
from test_structure import SCRIPTS

import arguments
import data
import errors
import evaluation
import loss_surface
import verify_pipeline

RETIRED = [f"--{old}" for old in arguments.RETIRED_FLAGS]
# where a notion applies, the flag --help shows for it
CANONICAL = {
    "train_rl": ["--num_problems", "--val_num_problems", "--n", "--max_completion_length",
                 "--val_max_completion_length"],
    "train_sft": ["--num_problems"],
    "test": ["--num_problems", "--n", "--max_completion_length"],
    "validate": ["--num_problems", "--n", "--max_completion_length"],
    "loss_surface": ["--num_problems", "--max_completion_length"],
    "verify_pipeline": ["--num_problems", "--max_completion_length"],
}


def help_text(script: str) -> str:
    """`python SCRIPT.py --help`, checked to exit 0 without importing torch, TRL or transformers: those take 3-10 s
    on a busy 2-core machine, and --help answers in under 2 s."""
    probe = (f"import sys, runpy; sys.argv = ['{script}.py', '--help']\n"
             f"try: runpy.run_path('{script}.py', run_name='__main__')\nexcept SystemExit as e: assert e.code == 0\n"
             "print('HEAVY', sorted({'torch', 'trl', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("HEAVY []"), out.stdout[-300:] + out.stderr
    return out.stdout


def shown(flag: str, text: str) -> bool:
    """`flag` as a whole word in `text` (--problems is not in --num_problems)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.mark.parametrize("script", [p.stem for p in SCRIPTS if p.parent == ROOT])
def test_help_shows_one_flag_per_notion(script):
    text = help_text(script)
    assert not [flag for flag in RETIRED if shown(flag, text)]
    assert all(shown(flag, text) for flag in CANONICAL.get(script, [])), text


def parsed(script: str, argv: list[str], monkeypatch) -> dict:
    """Every setting `script` makes of `argv`, by name (the training scripts' concerns and TRL config flattened)."""
    if script in ("train_rl", "train_sft"):
        flags = arguments.parse_grpo_args(argv) if script == "train_rl" else arguments.parse_sft_args(argv)
        trl_config = flags.grpo if script == "train_rl" else flags.config
        return {**vars(trl_config), **{k: v for c in flags.concerns() for k, v in dataclasses.asdict(c).items()}}
    if script in ("test", "validate"):
        monkeypatch.setattr(evaluation, "run_cli", lambda args, _script: vars(args))
        return load_script(script).main(argv)
    return vars({"loss_surface": loss_surface, "verify_pipeline": verify_pipeline}[script].parse_args(argv))


@pytest.mark.parametrize("script, argv, name, value", [
    ("train_rl", ["32", "7"], "num_problems", 7),  # the seed's positional form
    ("train_rl", ["32", "--max_samples", "7"], "num_problems", 7),
    ("train_rl", ["32", "--max-samples", "7"], "num_problems", 7),
    ("train_rl", ["32", "--val_samples", "3"], "val_num_problems", 3),
    ("train_rl", ["32", "--eval_samples", "3"], "n", 3),
    ("train_rl", ["32", "--eval-samples", "3"], "n", 3),
    ("train_rl", ["32", "--max_new_tokens", "64"], "max_completion_length", 64),  # TRL's own field
    ("train_rl", ["32", "--val_max_new_tokens", "9"], "val_max_completion_length", 9),
    ("train_sft", ["--max_samples", "5"], "num_problems", 5),
    ("test", ["--baseline", "--num_samples", "4"], "num_problems", 4),
    ("test", ["--baseline", "--max_new_tokens", "12"], "max_completion_length", 12),
    ("validate", ["--num_samples", "4"], "num_problems", 4),
    ("validate", ["6"], "num_problems", 6),
    ("validate", ["--max_new_tokens", "12"], "max_completion_length", 12),
    ("loss_surface", ["--max_samples", "3"], "num_problems", 3),
    ("loss_surface", ["--max_new_tokens", "5"], "max_completion_length", 5),
    ("verify_pipeline", ["--problems", "2"], "num_problems", 2),
    ("verify_pipeline", ["--max_new_tokens", "7"], "max_completion_length", 7),
])
def test_a_retired_spelling_parses_as_the_flag_it_became(monkeypatch, script, argv, name, value):
    assert parsed(script, argv, monkeypatch)[name] == value


def test_a_retired_yaml_key_sets_the_flag_it_became(tmp_path, monkeypatch):
    config = tmp_path / "old.yaml"
    config.write_text(f"max_samples: 5\nval_samples: 3\neval_samples: 2\nmax_new_tokens: 64\nval_max_new_tokens: 9\n"
                      f"use_cpu: true\noutput_dir: {tmp_path}\n")
    settings = parsed("train_rl", ["32", "--config", str(config)], monkeypatch)
    assert [settings[k] for k in ("num_problems", "val_num_problems", "n", "max_completion_length",
                                  "val_max_completion_length")] == [5, 3, 2, 64, 9]
    config.write_text("num_samples: 6\nmax_new_tokens: 12\n")
    settings = parsed("validate", ["--config", str(config)], monkeypatch)
    assert (settings["num_problems"], settings["max_completion_length"]) == (6, 12)


def test_a_flag_given_under_both_names_is_refused():
    with pytest.raises(errors.UsageError, match="gives num_problems twice, as max_samples and as num_problems"):
        arguments.canonical_keys({"max_samples": 5, "num_problems": 6}, {"num_problems"}, "x.yaml")


# ------------------------------------------------------------------------------------------------ switches
@pytest.fixture(scope="module")
def grpo_parser():
    from trl import GRPOConfig

    return arguments.trl_parser((*arguments.GRPO_CONCERNS, GRPOConfig), "train_rl.py")


def test_our_booleans_are_switches_and_trls_keep_their_value(grpo_parser):
    """`--no_quant 32` used to read 32 as the switch's value; now the switch takes none, as in test.py."""
    args, rest = grpo_parser.parse_known_args(["--no_quant", "32", "--do-validate", "--log_completions", "false"])
    assert (args.no_quant, args.do_validate, args.resume, rest) == (True, True, False, ["32"])
    assert args.log_completions is False  # TRL's own bool still takes a value


def test_a_yaml_key_sets_a_switch(tmp_path):
    from trl import GRPOConfig

    config = tmp_path / "c.yaml"
    config.write_text("no_quant: true\nexport_lora: true\nuse_cpu: true\n")
    parsed = arguments.parse_with_trl((*arguments.GRPO_CONCERNS, GRPOConfig),
                                      ["--config", str(config), "--output_dir", str(tmp_path)], "train_rl.py")
    model, run, grpo = parsed[0], parsed[-2], parsed[-1]
    assert (model.no_quant, run.export_lora, run.resume, grpo.use_cpu) == (True, True, False, True)


def test_dataset_help_names_every_dataset():
    """arguments.py stays below data.py, so it spells the dataset names itself: they must be data's."""
    assert arguments.DATASET_HELP.split(" | ")[:-1] == list(data.DATASETS)
