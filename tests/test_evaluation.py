"""Evaluation: runs that complete and add up, metric arithmetic on known programs, the paired comparison, and
the one-line errors a user gets for a wrong checkpoint or a mismatched run."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import is_png, load_script

import arguments
import data
import errors
import evaluation
import modeling
import tinylora

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "data" / "sample"
FAST = ["--model", "tiny", "--no_quant", "--dataset", "sample", "--max_completion_length", "12", "--batch_size", "3"]


test_cli, validate_cli = load_script("test"), load_script("validate")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return modeling.load_model("tiny", quant=False)


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return data.load_problems("sample", "test")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    """An adapter with non-zero v and non-default u / rank / tie, so the loaded values must come from its files."""
    model = tinylora.apply_tiny_lora(modeling.load_model("tiny", quant=False)[0], u=8, rank=3, tie="layer")
    tinylora.set_tiny_lora_v(model, {k: torch.linspace(-0.5, 0.5, v.numel()) for k, v in tinylora.tiny_lora_v(model).items()})
    return tinylora.save_tiny_lora(model, tmp_path_factory.mktemp("adapter") / "best")


def exit_message(capsys, argv: list[str]) -> str:
    """Run test.py's main where it must fail: exit code 2 and one "error:" line (the last one on stderr, after
    any loading progress bars), returned."""
    with pytest.raises(SystemExit) as exc:
        test_cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error: ")] == err[-1:], err
    return err[-1]


# ----------------------------------------------------------------------------------------------------- arithmetic
def test_pass_at_k_matches_hand_computed_values():
    assert evaluation.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert evaluation.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert evaluation.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert evaluation.pass_at_k(5, 4, 2) == 1.0  # fewer failures than k: every draw of 2 holds a pass
    assert evaluation.pass_at_k(5, 0, 3) == 0.0
    with pytest.raises(ValueError):
        evaluation.pass_at_k(2, 1, 3)


def test_mcnemar_exact_p_values():
    assert evaluation.mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)
    assert evaluation.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert evaluation.mcnemar_exact(3, 3) == 1.0  # capped
    assert evaluation.mcnemar_exact(0, 0) == 1.0  # no discordant problems: no evidence


def completion(text: str) -> evaluation.Completion:
    return evaluation.Completion(text, tokens=len(text.split()), truncated=False)


def program(kind: str, problem: dict) -> evaluation.Completion:
    code = (SOLUTIONS / kind / f"{problem['id'].split('/')[1]}.cpp").read_text()
    return completion(f"Read, then compute.\n```cpp\n{code}\n```\n")


def test_metrics_from_known_programs_through_the_judge(problems):
    """Reference solutions, a deliberately wrong one, a non-program and a syntax error: every count and rate is
    what the outcomes imply, pass@k included (n = 2 samples per problem)."""
    p0, p1, p2 = problems[:3]
    completions = [[program("solutions", p0), program("wrong", p0)],
                   [program("solutions", p1), program("solutions", p1)],
                   [completion("I am not sure how to solve this."), completion("```cpp\nint main( {\n```")]]
    samples = evaluation.judge_completions([p0, p1, p2], completions, progress=False)
    assert [s["outcome"] for s in samples[2:]] == ["pass", "pass", "no_code", "compile_error"]
    assert samples[0]["outcome"] == "pass" and samples[1]["outcome"] in ("partial", "compiled_zero")
    wrong = samples[1]
    assert wrong["reward"] == pytest.approx(0.5 + 0.5 * wrong["passed"] / wrong["total"])
    assert samples[0]["code"].startswith("#include") and samples[0]["verdicts"] == ["OK"] * samples[0]["total"]

    m = evaluation.compute_metrics(samples, ks=(1, 2))
    assert (m["problems"], m["samples"]) == (3, 6)
    assert sum(m["counts"].values()) == sum(m["verdicts"].values()) == 6
    assert m["counts"]["pass"] == 3 and m["verdicts"]["OK"] == 3
    assert m["pass@1"] == pytest.approx((1 / 2 + 2 / 2 + 0) / 3)
    assert m["pass@2"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["compile_rate"] == pytest.approx(4 / 6)
    assert m["no_code_rate"] == m["compile_error_rate"] == pytest.approx(1 / 6)
    assert m["avg_reward"] == pytest.approx((3 * 1.0 + wrong["reward"]) / 6)
    assert [p["first_pass"] for p in evaluation.per_problem(samples)] == [True, True, False]
    assert m["truncated_rate"] == 0 and m["pass_rate_uncut"] == pytest.approx(3 / 6)
    cut = [dict(s, truncated=i == 0) for i, s in enumerate(samples)]  # the first answer (a pass) hit the cap
    assert evaluation.compute_metrics(cut)["pass_rate_uncut"] == pytest.approx(2 / 5)
    assert "pass_rate_uncut" not in evaluation.compute_metrics([dict(s, truncated=True) for s in samples])


# ------------------------------------------------------------------------------------------------------- compare
def constructed_summary(passing: set[int], label: str, n_problems: int = 10) -> dict:
    """A summary of 10 problems where `passing` pass and the rest compile but pass no test (reward 0.5)."""
    samples = [{"id": f"p{i}", "outcome": "pass" if i in passing else "compiled_zero",
                "verdict": "OK" if i in passing else "WA", "reward": 1.0 if i in passing else 0.5, "compiled": True,
                "truncated": False, "completion_tokens": 100} for i in range(n_problems)]
    run = {"problem_ids": [f"p{i}" for i in range(n_problems)], "prompts_sha256": "abc",
           "generation": {"seed": 42, "temperature": 0.0}, "judge": {"max_tests": 0}}
    return {"label": label, "run": run, "metrics": evaluation.compute_metrics(samples),
            "per_problem": evaluation.per_problem(samples), "skipped": []}


def test_compare_table_and_p_value_on_a_constructed_pair():
    a, b = constructed_summary({0, 1, 2, 9}, "base"), constructed_summary({0, 1, 2, 3, 4, 5, 6}, "tuned")
    result = evaluation.compare_runs(a, b)
    assert (result["only_a"], result["only_b"]) == (1, 4)
    assert result["mcnemar_p"] == pytest.approx(2 * (1 + 5) / 32)  # Binomial(5, 1/2) <= 1, two-sided
    assert result["reward_diff"] == pytest.approx(0.85 - 0.70)
    low, high = result["reward_ci"]
    assert low < 0.15 < high and evaluation.compare_runs(a, b)["reward_ci"] == [low, high]  # seeded
    table = evaluation.format_comparison(a, b, result)
    assert "| pass@1 (all tests) | 40.00% | 70.00% | +30.00 pp |" in table
    assert "| average reward | 0.700 | 0.850 | +0.150 |" in table
    assert "only by A 1, only by B 4, two-sided p = 0.375" in table
    assert result["changed"] == [{"id": f"p{i}", "passes_a": int(i == 9), "passes_b": int(i != 9)}
                                 for i in (3, 4, 5, 6, 9)]
    assert "Problems whose passing samples (of 1) changed, A → B: p3 0→1, p4 0→1, p5 0→1, p6 0→1, p9 1→0" in table
    assert "changed, A → B: none" in evaluation.format_comparison(a, a, evaluation.compare_runs(a, a))


def test_compare_draws_paired_bars_into_the_output_dir(tmp_path, capsys):
    for name, passing in (("a", {0, 1, 2, 9}), ("b", {0, 1, 2, 3, 4, 5, 6})):
        (tmp_path / f"{name}.json").write_text(json.dumps(constructed_summary(passing, name)))
    result = test_cli.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                            "--output_dir", str(tmp_path / "chart")])
    chart = tmp_path / "chart" / "compare.png"
    assert result["chart"] == str(chart) and is_png(chart)
    assert f"wrote {chart}" in capsys.readouterr().out


@pytest.mark.parametrize("change, field", [
    (lambda run: run["generation"].update(seed=7), "generation.seed"),
    (lambda run: run.update(prompts_sha256="def"), "prompts_sha256"),
    (lambda run: run["problem_ids"].pop(), "problem_ids"),
])
def test_compare_refuses_unpaired_runs(tmp_path, capsys, change, field):
    a, b = constructed_summary({0}, "a"), constructed_summary({1}, "b")
    change(b["run"])
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    message = exit_message(capsys, ["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert f"not paired: {field} differs" in message


# ---------------------------------------------------------------------------------------------------- generation
def test_sampling_is_seeded_and_padding_side_restored(tiny):
    model, tokenizer = tiny
    prompts = [evaluation.prompt_text(p, tokenizer) for p in data.load_problems("sample", "test", 2)]
    settings = evaluation.GenerationSettings(max_new_tokens=6, temperature=1.0, n=2, batch_size=3, seed=5)
    tokenizer.padding_side = "right"
    first = evaluation.generate(model, tokenizer, prompts, settings, progress=False)
    assert tokenizer.padding_side == "right"
    assert evaluation.generate(model, tokenizer, prompts, settings, progress=False) == first
    assert [len(c) for c in first] == [2, 2] and all(0 <= c.tokens <= 6 for cs in first for c in cs)
    tokenizer.padding_side = "left"


def test_processes_write_what_one_process_writes(tiny, tmp_path):
    """Batches shared out among forked processes come back in prompt order with the completions one process
    draws (each batch seeds itself), with and without a journal; a resumed run's processes draw only what the
    journal lacks."""
    model, tokenizer = tiny
    prompts = [evaluation.prompt_text(p, tokenizer) for p in data.load_problems("sample", "test", 3)]
    settings = evaluation.GenerationSettings(max_new_tokens=8, temperature=1.0, n=2, batch_size=2, seed=3)
    alone = evaluation.generate(model, tokenizer, prompts, settings, progress=False)
    assert evaluation.generate(model, tokenizer, prompts, settings, progress=False, processes=2) == alone
    journal = evaluation.Journal(tmp_path / evaluation.GENERATIONS_FILE, "key")
    assert evaluation.generate(model, tokenizer, prompts, settings, False, journal, processes=3) == alone
    assert sorted(journal.read()) == [0, 1, 2]
    lines = journal.path.read_text().splitlines()
    journal.path.write_text(lines[0] + "\n")
    resumed = evaluation.Journal(journal.path, "key")
    assert evaluation.generate(model, tokenizer, prompts, settings, False, resumed, processes=2) == alone
    assert len(journal.path.read_text().splitlines()) == 3


class FailingTokenizer:
    """The tiny tokenizer, failing when asked to encode a batch that holds `bad` (so one generation process fails)."""

    def __init__(self, tokenizer, bad: str):
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "bad", bad)

    def __call__(self, texts, **kwargs):
        if self.bad in texts:
            raise RuntimeError("drawing this batch failed")
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __setattr__(self, name, value):
        setattr(self.tokenizer, name, value)


def test_a_failing_process_ends_the_run_and_keeps_what_landed(tiny, tmp_path, capfd):
    model, tokenizer = tiny
    prompts = sorted((evaluation.prompt_text(p, tokenizer) for p in data.load_problems("sample", "test", 2)), key=len)
    settings = evaluation.GenerationSettings(max_new_tokens=4, temperature=1.0, n=2, batch_size=2)
    journal = evaluation.Journal(tmp_path / evaluation.GENERATIONS_FILE, "key")
    with pytest.raises(evaluation.GenerationError, match="a generation process failed"):
        evaluation.generate(model, FailingTokenizer(tokenizer, prompts[0]), prompts, settings, False, journal, processes=2)
    assert "drawing this batch failed" in capfd.readouterr().err  # the child's traceback
    assert list(journal.read()) == [0]  # the longest prompt's batch landed; the shortest one's process failed


def test_processes_default_to_the_cores_and_stay_on_cpu():
    threads = torch.get_num_threads()
    assert modeling.generation_processes(None, "cpu") == max(1, modeling.usable_cores() // threads)
    assert modeling.generation_processes(3, "cpu") == 3 and modeling.generation_processes(None, "cuda") == 1
    with pytest.raises(errors.UsageError, match="on CPU only"):
        modeling.generation_processes(2, "cuda")


def test_skipped_problems_are_listed_and_not_counted(tiny, problems):
    model, tokenizer = tiny
    lengths = sorted(len(tokenizer(evaluation.prompt_text(p, tokenizer)).input_ids) for p in problems[:4])
    untested = {**copy.deepcopy(problems[4]), "tests": {"public": [], "private": [], "generated": []}}
    settings = evaluation.GenerationSettings(max_new_tokens=4, max_prompt_tokens=lengths[1])
    samples, summary = evaluation.evaluate(model, tokenizer, problems[:4] + [untested], settings, progress=False)
    reasons = [s["reason"] for s in summary["skipped"]]
    assert "no tests" in reasons and all(r == "no tests" or r.startswith("prompt too long") for r in reasons)
    evaluated = summary["metrics"]["problems"]
    assert evaluated == 5 - len(reasons) == len(samples) == len(summary["run"]["problem_ids"]) >= 2
    assert not set(summary["run"]["problem_ids"]) & set(summary["run"]["skipped_ids"])


def test_run_validation_on_a_training_peft_model(tiny, problems, adapter_dir):
    model = tinylora.load_tiny_lora(modeling.load_model("tiny", quant=False)[0], adapter_dir, trainable=True)
    model.train()
    metrics = evaluation.run_validation(model, tiny[1], problems[:2], max_new_tokens=6, batch_size=2)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert metrics["problems"] == 2 and {"pass@1", "compile_rate", "avg_reward"} <= set(metrics)


# ----------------------------------------------------------------------------------------------------------- CLI
def read_run(out_dir: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out_dir / "summary.json").read_text())
    return summary, [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def test_baseline_and_adapter_runs_add_up_and_compare(tmp_path, capsys, adapter_dir):
    test_cli.main(["--baseline", "--num_problems", "4", *FAST, "--output_dir", str(tmp_path / "base")])
    test_cli.main(["--checkpoint_path", str(adapter_dir), "--num_problems", "4", *FAST,
                   "--output_dir", str(tmp_path / "tuned")])
    assert "| pass@1 (all tests) |" in capsys.readouterr().out
    (base, base_rows), (tuned, tuned_rows) = read_run(tmp_path / "base"), read_run(tmp_path / "tuned")
    for summary, rows in ((base, base_rows), (tuned, tuned_rows)):
        m = summary["metrics"]
        assert m["problems"] == m["samples"] == len(rows) == len(summary["per_problem"]) == 4
        assert sum(m["counts"].values()) == sum(m["verdicts"].values()) == 4 and not summary["skipped"]
        assert {"id", "completion", "code", "verdicts", "reward"} <= set(rows[0])
    assert tuned["model"] | {"u": 8, "rank": 3, "tie": "layer", "parameters": 8 * 4} == tuned["model"]
    assert base["run"] == tuned["run"] and base["run"]["split"] == "test"

    result = test_cli.main(["--compare", str(tmp_path / "base" / "summary.json"),
                            str(tmp_path / "tuned" / "summary.json")])
    assert result["problems"] == 4 and "McNemar exact test" in capsys.readouterr().out
    assert result["chart"] == str(tmp_path / "tuned" / "compare_vs_base.png")  # beside B without --output_dir
    assert is_png(Path(result["chart"]))


def test_validate_shares_the_path_and_picks_a_split(tmp_path):
    summary = validate_cli.main(["2", *FAST, "--output_dir", str(tmp_path)])
    assert summary["run"]["split"] == "test" and summary["metrics"]["problems"] == 2
    assert data.validation_split("code_contests") == "valid"


def test_bad_flags_raise_a_usage_error_a_caller_can_catch():
    """evaluation's checks raise errors.UsageError (a sweep or a notebook can catch it); only test.py's and
    validate.py's main print it as one line and exit 2."""
    args = arguments.evaluation_parser(None).parse_args(["--n", "0"])
    args.num_problems, args.split, args.checkpoint_path = 1, "test", None
    with pytest.raises(errors.UsageError, match="--n must be positive"):
        evaluation.run_cli(args, "test")
    with pytest.raises(errors.UsageError, match="is not a directory"):
        modeling.load_adapted_model("tiny", quant=False, adapter="/nonexistent/adapter")


def test_wrong_checkpoint_path_is_refused(capsys):
    assert exit_message(capsys, ["--checkpoint_path", "no/such/dir", *FAST]) == \
        "error: checkpoint path no/such/dir is not a directory (pass the adapter directory, e.g. OUT/best)"


def test_directory_without_adapter_is_refused(tmp_path, capsys):
    assert "not an adapter directory" in exit_message(capsys, ["--checkpoint_path", str(tmp_path), *FAST])


def test_adapter_of_another_base_model_is_refused(tmp_path, capsys):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{**modeling.TINY_CONFIG, "hidden_size": 64, "intermediate_size": 176},
                         vocab_size=modeling.TINY_VOCAB_SIZE)
    other = tinylora.apply_tiny_lora(Qwen2ForCausalLM(config), u=4)
    tinylora.save_tiny_lora(other, tmp_path / "other")
    message = exit_message(capsys, ["--checkpoint_path", str(tmp_path / "other"), *FAST])
    assert "does not fit this base model" in message


@pytest.mark.parametrize("argv, text", [
    (["--baseline", "--k", "1,5"], "pass@5 needs --n >= 5"),
    (["--baseline", "--n", "3"], "--n > 1 needs --temperature > 0"),
    (["--baseline", "--batch_size", "0"], "--batch_size must be positive"),
    (["--baseline", "--processes", "0"], "--processes must be positive"),
    (["--baseline", "--checkpoint_path", "x"], "not allowed with argument"),
    (["--baseline", "--dataset", "sample", "--split", "valid"], "has no split 'valid'"),
])
def test_bad_arguments_are_one_line(capsys, argv, text):
    assert text in exit_message(capsys, argv)


@pytest.mark.parametrize("script", [test_cli, validate_cli])
def test_help(capsys, script):
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0 and "--max_completion_length" in capsys.readouterr().out


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, capsys):
    """Every generated batch is saved as it lands; --resume generates only the batches the journal lacks, and what
    it finishes is what an unbroken run writes (each batch seeds its own draws). A journal of another run, or
    --resume without the folder to continue, is refused."""
    out = tmp_path / "run"
    flags = ["--baseline", "--num_problems", "4", *FAST, "--temperature", "0.8", "--n", "2", "--output_dir", str(out)]
    whole = test_cli.main(flags)
    whole_rows = read_run(out)[1]
    journal = out / evaluation.GENERATIONS_FILE
    lines = journal.read_text().splitlines()
    assert len(lines) == 3  # 8 samples in batches of 3
    journal.write_text(lines[0] + "\n" + lines[1][:40])  # stopped while the second batch was being written
    resumed = test_cli.main([*flags, "--resume"])
    assert resumed["timing"]["resumed_batches"] == 1
    assert resumed["per_problem"] == whole["per_problem"] and read_run(out)[1] == whole_rows
    kept = journal.read_text().splitlines()
    # the cut line stays and is ended; the two generation processes may land batches 1 and 2 in either order
    assert kept[1] == lines[1][:40] and sorted(json.loads(kept[i])["batch"] for i in (0, 2, 3)) == [0, 1, 2]
    assert exit_message(capsys, [*flags, "--max_completion_length", "10", "--resume"]).startswith(
        f"error: {journal} holds the generations of another run")
    assert exit_message(capsys, ["--baseline", *FAST, "--resume"]) == \
        "error: --resume continues the run in --output_dir: name it"
    fresh = test_cli.main(flags)  # without --resume a run starts over
    assert fresh["timing"]["resumed_batches"] == 0 and len(journal.read_text().splitlines()) == 3
