"""Research tools on the tiny model: a sweep that finishes and resumes, an SFT baseline that trains only v and
lowers its loss, and a loss surface whose centre is the base model."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import is_png, logged_metrics, saved_v

import data
import loss_surface
import modeling
import sweep
import tinylora
import training
import sft
import train_sft

ROOT = Path(__file__).resolve().parent.parent
# The smallest real GRPO step: 2 problems, 2 generations of 32 tokens, one step, fp32 (NF4 is slow on a CPU).
CELL_TRAIN_ARGS = {"config": str(ROOT / "configs" / "tiny_cpu.yaml"), "num_problems": 2, "max_steps": 1,
                   "no_quant": True, "num_generations": 2, "per_device_train_batch_size": 2,
                   "gradient_accumulation_steps": 1, "max_completion_length": 32, "save_steps": 100}
CELL_VALIDATE_ARGS = {"num_problems": 2, "max_completion_length": 32, "batch_size": 2}
SFT_ARGS = ["--model", "tiny", "--no_quant", "--dataset", "sample", "--u", "4", "--num_problems", "2",
            "--max_steps", "3", "--learning_rate", "1.0", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--disable_tqdm", "true"]
SURFACE_ARGS = ["--model", "tiny", "--no_quant", "--dataset", "sample", "--num_problems", "2", "--points", "3",
                "--radius", "2.0"]


def write_sweep(tmp_path: Path, grid: dict, **extra) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"grid": grid, "train_args": CELL_TRAIN_ARGS, "validate_args": CELL_VALIDATE_ARGS,
                                    "output_dir": str(tmp_path / "out"), **extra}))
    return str(path)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def exits_2(capsys, main, argv: list[str]) -> str:
    """Run a script's main where it must fail: exit code 2 and one "error:" line, returned."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and not any(line.startswith("Traceback") for line in err)
    return err[-1]


# ---------------------------------------------------------------------------------------------------- sweep
def test_sweep_completes_and_a_rerun_redoes_no_cell(tmp_path):
    config = write_sweep(tmp_path, {"u": [1, 2], "learning_rate": [0.01]})
    ranked = sweep.main([config])
    out = tmp_path / "out"
    rows = csv_rows(out / "results.csv")
    assert [(r["cell"], r["status"], r["trainable"]) for r in rows] == [("u1-lr0.01", "ok", "1"), ("u2-lr0.01", "ok", "2")]
    assert {r["cell"] for r in ranked} == {"u1-lr0.01", "u2-lr0.01"}
    for row in rows:  # each cell really trained and validated its own adapter
        assert tinylora.read_meta(row["adapter"])["config"]["u"] == int(row["u"])
        summary = json.loads((out / row["cell"] / "validate" / "summary.json").read_text())
        assert summary["metrics"]["pass@1"] == float(row["pass@1"]) and summary["metrics"]["problems"] == 2
    assert "Best cell: **" in (out / "results.md").read_text()
    assert is_png(out / "pass_vs_params.png")

    def must_not_run(*args):
        raise AssertionError("a finished cell was run again")

    sweep.run_sweep(sweep.load_sweep(config), runner=must_not_run)
    assert csv_rows(out / "results.csv") == rows


def fake_runner(outcomes: dict[str, list[int]], calls: list[tuple[str, bool]]):
    """A runner that fails or succeeds per cell as scripted (exit codes in order), instead of training."""

    def run(cell, cell_dir, config, resume):
        calls.append((cell.name, resume))
        code = outcomes[cell.name].pop(0)
        (cell_dir / "log.txt").write_text(f"loading...\nRuntimeError: boom {cell.name}\n")
        if code == 0:
            result = {"cell": cell.name, "u": cell.u, "rank": 2, "tie": "all", "learning_rate": 1e-5, "seed": 42,
                      "trainable": cell.u, "pass@1": 0.5, "avg_reward": 0.6, "compile_rate": 1.0, "adapter": "A"}
            (cell_dir / sweep.RESULT).write_text(json.dumps(result))
        return code

    return run


def test_a_crashed_cell_is_retried_once_and_a_failed_one_rerun_later(tmp_path):
    config = sweep.load_sweep(write_sweep(tmp_path, {"u": [1, 2, 3]}))
    calls: list[tuple[str, bool]] = []
    # u1 crashes once then finishes; u2 crashes twice; u3 has bad arguments (exit 2: not retried)
    rows = sweep.run_sweep(config, runner=fake_runner({"u1": [1, 0], "u2": [1, 1], "u3": [2]}, calls))
    assert [name for name, _ in calls] == ["u1", "u1", "u2", "u2", "u3"]
    assert [r["cell"] for r in rows] == ["u1"]
    by_cell = {r["cell"]: r for r in csv_rows(config.output_dir / "results.csv")}
    assert (by_cell["u1"]["status"], by_cell["u1"]["attempts"]) == ("ok", "2")
    assert (by_cell["u2"]["status"], by_cell["u2"]["attempts"]) == ("failed", "2")
    assert by_cell["u2"]["error"] == "exit 1: RuntimeError: boom u2"
    assert "Failed (rerun the sweep to retry): u2, u3" in (config.output_dir / "results.md").read_text()
    calls.clear()
    sweep.run_sweep(config, runner=fake_runner({"u2": [0], "u3": [0]}, calls))
    assert [name for name, _ in calls] == ["u2", "u3"]


@pytest.mark.parametrize("change, message", [
    ({"grid": {"alpha": [1]}}, "grid keys alpha are not sweepable"),
    ({"grid": {"u": ["x"]}}, "grid.u must be a list of int"),
    ({"train_args": {"u": 3}}, "train_args may not set --u"),
    ({"colour": 1}, "unknown keys"),
])
def test_bad_sweep_configs_are_one_line(tmp_path, capsys, change, message):
    raw = {"grid": {"u": [1]}, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert message in exits_2(capsys, sweep.main, [str(path)])


def test_sweep_refuses_to_mix_settings_in_one_output_dir(tmp_path, capsys):
    config = write_sweep(tmp_path, {"u": [1]})
    sweep.run_sweep(sweep.load_sweep(config), runner=fake_runner({"u1": [0]}, []))
    changed = write_sweep(tmp_path, {"u": [1]}, validate_args={"num_problems": 3})
    assert "other validate_args" in exits_2(capsys, sweep.main, [changed])


def test_a_sweep_started_before_the_flag_renames_resumes(tmp_path):
    """A sweep.json that recorded --max_samples and --num_samples (retired spellings, issue #33) matches the same
    sweep whose YAML now says num_problems."""
    config = sweep.load_sweep(write_sweep(tmp_path, {"u": [1]}))
    old = {"train_args": [{"--num_problems": "--max_samples"}.get(a, a) for a in config.train_args],
           "validate_args": [{"--num_problems": "--num_samples"}.get(a, a) for a in config.validate_args]}
    assert old["train_args"] != config.train_args and old["validate_args"] != config.validate_args
    config.output_dir.mkdir(parents=True)
    (config.output_dir / "sweep.json").write_text(json.dumps(old))
    assert [r["cell"] for r in sweep.run_sweep(config, runner=fake_runner({"u1": [0]}, []))] == ["u1"]


# ------------------------------------------------------------------------------------------------------ SFT
@pytest.fixture(scope="module")
def tiny():
    return modeling.load_model("tiny", quant=False)


def test_sft_examples_mask_the_prompt_and_answer_in_one_cpp_block(tiny):
    _, tokenizer = tiny
    problem = data.load_problems("sample", "train", 1)[0]
    (example,) = sft.build_examples([problem], tokenizer, max_length=None)
    answer = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    prompt = [t for t, label in zip(example["input_ids"], example["labels"]) if label == -100]
    assert example["input_ids"] == prompt + answer
    text = tokenizer.decode(answer)
    assert text.startswith("```cpp\n#include") and text.rstrip().endswith("```<|im_end|>")
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")  # the loss starts at the answer
    record = {**problem, "dataset": "code_contests", "reference_solutions": ["int main() {}"]}
    assert data.reference_solutions(record) == ["int main() {}"]


def test_sft_trains_only_v_and_lowers_its_training_loss(tmp_path, tiny):
    final = train_sft.main([*SFT_ARGS, "--output_dir", str(tmp_path / "sft")])
    meta = tinylora.read_meta(final)
    assert meta["method"] == "sft" and meta["trainable"] == 4
    base, tokenizer = modeling.load_model("tiny", quant=False)
    trained = tinylora.load_tiny_lora(base, final)
    fresh = tinylora.apply_tiny_lora(modeling.load_model("tiny", quant=False)[0], u=4, seed=42)
    trained_state, fresh_state = trained.state_dict(), fresh.state_dict()
    changed = {k for k in fresh_state if not torch.equal(trained_state[k], fresh_state[k])}
    # the shared v (listed once per module that uses it) moved; base weights, A, B and P are as they started
    assert "base_model.tinylora_v.default.0" in changed and all(k.endswith("tinylora_v.default.0") for k in changed)
    examples = sft.build_examples(data.load_problems("sample", "train", 2), tokenizer, max_length=1024)
    before, after = sft.sft_loss(tiny[0], examples), sft.sft_loss(trained, examples)
    assert after < before - 0.01
    assert meta["sft_loss"]["before"] == pytest.approx(before) and meta["sft_loss"]["after"] == pytest.approx(after)


def test_sft_resumes_from_its_checkpoint_with_identical_v(tmp_path, capsys):
    """A stopped SFT run continues with --resume as a GRPO run does: manifest-checked checkpoints, the same v as an
    unbroken run, and one console line, metrics.jsonl and a loss curve per step."""
    out = tmp_path / "sft"
    argv = [*SFT_ARGS, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out)]
    unbroken = saved_v(train_sft.main(argv))
    assert training.checkpoint_problem(out / "checkpoint-2") is None
    assert "step 1/4: loss " in capsys.readouterr().out
    assert [e["step"] for e in logged_metrics(out) if "loss" in e] == [1, 2, 3, 4] and is_png(out / training.CURVES_FILE)
    at_step_2 = saved_v(out / "checkpoint-2")
    for stopped in ("checkpoint-4", "final"):  # as if the run had died after step 2
        shutil.rmtree(out / stopped)
    resumed = saved_v(train_sft.main([*argv, "--resume"]))
    console = capsys.readouterr().out
    assert "resuming from" in console and "step 2/4: loss " not in console and "step 3/4: loss " in console
    assert [e["step"] for e in logged_metrics(out) if "loss" in e] == [1, 2, 3, 4]  # steps 3 and 4 of the first run replaced
    assert not torch.equal(resumed, at_step_2)
    assert torch.allclose(resumed, unbroken, atol=1e-7)  # same v, optimizer state and data order


def test_sft_without_reference_solutions_is_one_line(tmp_path, capsys):
    problems = tmp_path / "no_refs.jsonl"
    record = {**data.load_problems("sample", "train", 1)[0], "dataset": "deepcoder"}
    problems.write_text(json.dumps(record) + "\n")
    argv = [*SFT_ARGS, "--train_data", str(problems), "--output_dir", str(tmp_path / "sft")]
    assert "no SFT examples" in exits_2(capsys, train_sft.main, argv)


# ------------------------------------------------------------------------------------------------ loss surface
def test_loss_surface_grid_centre_and_resume(tmp_path, tiny, capsys):
    out = tmp_path / "surface"
    csv_path = loss_surface.main([*SURFACE_ARGS, "--output_dir", str(out)])
    rows = csv_rows(csv_path)
    assert sorted((float(r["v1"]), float(r["v2"])) for r in rows) == [(a, b) for a in (-2, 0, 2) for b in (-2, 0, 2)]
    model, tokenizer = tiny
    examples = sft.build_examples(data.load_problems("sample", "train", 2), tokenizer, max_length=1024)
    (centre,) = [r for r in rows if float(r["v1"]) == 0 and float(r["v2"]) == 0]
    assert float(centre["loss"]) == pytest.approx(sft.sft_loss(model, examples), abs=1e-6)
    assert len({r["loss"] for r in rows}) == 9  # v moves the model: every point differs
    assert is_png(out / "surface.png")
    loss_surface.main([*SURFACE_ARGS, "--output_dir", str(out)])
    assert csv_rows(csv_path) == rows  # resumed: nothing recomputed
    assert "other rank" in exits_2(capsys, loss_surface.main, [*SURFACE_ARGS, "--rank", "3", "--output_dir", str(out)])


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("main", [sweep.main, train_sft.main, loss_surface.main])
def test_help(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("main, argv, message", [
    (sweep.main, ["missing.yaml"], "sweep config missing.yaml not found"),
    (train_sft.main, ["--config", "missing.yaml"], "config file missing.yaml not found"),
    (train_sft.main, ["--u", "0"], "must be positive"),
    (loss_surface.main, ["--points", "4"], "odd number"),
    (loss_surface.main, ["--model", "tiny", "--dataset", "sample", "--split", "valid"], "no split 'valid'"),
])
def test_bad_arguments_are_one_line(capsys, main, argv, message):
    assert message in exits_2(capsys, main, argv)
