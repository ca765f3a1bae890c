"""Every script spells a notion one way (issue #33): our booleans are plain switches everywhere."""
from __future__ import annotations

import pytest

import arguments


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
