"""Does whole-model `torch.compile` remove the adapter's forward overhead? Base vs adapted, compiled and eager.

At the 3b preset on a GPU the adapter costs about 20% of a no-grad forward, most of it the rank-2 accumulate's
extra pass over each projection's output (docs/benchmarks.md, "GPU, second lease"). No adapter outside the base
GEMM can go below that pass's bandwidth cost; compiling the whole model is the one library-made way to fuse it into
a neighbouring kernel (the residual add, SiLU·up, RoPE). This probe measures whether it does.

The compiled side runs one of three adapter forwards (`--accumulate`): `layer`, TinyLoraLinear's own (compiled,
it builds its factors per call instead of caching them, and adds the update with an in-place K = 2 `addmm_`); or
the formula written out (R from v, B·R, h = x Aᵀ, base + h (B·R)ᵀ) with the update added as a K = 2 matmul (`mm`)
or as a broadcast multiply-and-sum Inductor can fuse into a neighbouring pointwise kernel (`pointwise`, default).
The eager side is always TinyLoraLinear's cached forward. The report gives each compiled and written-out side's
largest logit difference from it.
Dense bases only (bf16 on a GPU, fp32 on a CPU); v is drawn at random so the update is not zero.

`--mode max-autotune` compiles both sides with Inductor's GEMM autotuning: on a GPU its Triton matmul templates
can take a pointwise epilogue, which is the one library-made way the rank-2 update (written out `pointwise`, a
sum of r = 2 broadcast products Inductor unrolls) could land inside the base GEMM itself. On a CPU it finds no
GEMM template without freezing the weights (which would freeze v too), so it runs the default mode's kernels.

    python -m bench.compile_probe --preset cpu                      # CPU, about 15 s
    python -m bench.compile_probe --preset 3b --accumulate mm       # one GPU, about 3 minutes (two compiles)
    python -m bench.compile_probe --preset 3b --mode max-autotune   # one GPU, longer: every GEMM shape is tuned
"""
from __future__ import annotations

import argparse
import json
import time

from bench import bench_model

ACCUMULATE = ("pointwise", "mm", "layer")
MODES = ("default", "max-autotune")  # torch.compile's modes the probe offers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import errors

    parser = errors.ArgumentParser(prog="python -m bench.compile_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_model.add_probe_arguments(parser)
    parser.add_argument("--accumulate", choices=ACCUMULATE, default="pointwise",
                        help="the compiled side's adapter: written out, adding h (B·R)ᵀ as a broadcast "
                             "multiply-and-sum (pointwise, default) or a K = 2 matmul (mm); "
                             "or TinyLoraLinear's own (layer)")
    parser.add_argument("--mode", choices=MODES, default="default",
                        help="torch.compile's mode for both compiled sides (default: default); max-autotune tunes "
                             "each GEMM and may fuse the update into its epilogue")
    parser.add_argument("--pairs", type=int, default=21,
                        help="timed rounds of the four forwards; ratios are medians over rounds (default 21)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        errors.cli_error("--pairs must be a positive integer")
    bench_model.check_probe_arguments(args)
    return args


def written_out_forward(accumulate: str):
    """TinyLoraLinear.forward as plain tensor algebra (no cache) for a layer `self`, for Dynamo to trace (run in the
    layer's place by bench_model.AdapterPart)."""
    import tinylora

    def forward(self, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)  # (batch, seq, out)
        for name in self.active_adapters:
            v, A = tinylora.layer_v(self, name), self.tinylora_A[name]
            B, P = self.tinylora_B[name], self.tinylora_P[name]
            R = (v.float() @ P.float().reshape(P.shape[0], -1)).view(P.shape[1:])  # (r, r)
            BR = (B.float() @ R).to(result.dtype)  # (out, r)
            h = x.reshape(-1, x.shape[-1]) @ A.to(x.dtype).T  # (tokens, r)
            if accumulate == "pointwise":
                delta = (h.unsqueeze(-1) * BR.T.unsqueeze(0)).sum(1)  # (tokens, out): a sum of r = 2 products
            else:
                delta = h @ BR.T  # (tokens, out)
            result = result + delta.view(result.shape).to(result.dtype)
        return result

    return forward


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    probe = bench_model.probe(bench_model.PRESETS[args.preset], False, args.threads)
    model, ids, device = probe.model, probe.ids, probe.device  # ids: (G, prompt + completion)
    written_out = {} if args.accumulate == "layer" else \
        bench_model.adapter_parts(model, written_out_forward(args.accumulate))  # for bench_model.swapped
    mode = None if args.mode == "default" else args.mode
    out: dict = {"preset": args.preset, "accumulate": args.accumulate, "mode": args.mode, "device": device,
                 "dtype": str(model.dtype).removeprefix("torch.")}
    with torch.no_grad():
        cached_logits = model(input_ids=ids).logits.float()
        with bench_model.without_adapter(model) as base:
            compiled_base = torch.compile(base, mode=mode)
            out["compile_time_base_s"] = bench_model.seconds(lambda: compiled_base(input_ids=ids), device)
        with bench_model.swapped(model, written_out):
            written_logits = model(input_ids=ids).logits.float()
            compiled = torch.compile(model, mode=mode)
            start = time.perf_counter()
            compiled_logits = compiled(input_ids=ids).logits.float()
            bench_model.sync(device)
            out["compile_time_adapted_s"] = time.perf_counter() - start
    out["logits_scale"] = cached_logits.abs().max().item()
    out["written_out_vs_cached"] = (written_logits - cached_logits).abs().max().item()
    out["compiled_vs_cached"] = (compiled_logits - cached_logits).abs().max().item()
    times: dict[str, list[float]] = {"compiled_base": [], "compiled_adapted": [], "eager_base": [], "eager_adapted": []}

    with torch.no_grad():
        for _ in range(args.pairs):
            with bench_model.without_adapter(model):
                times["compiled_base"].append(probe.timed(compiled_base))
            with bench_model.swapped(model, written_out):
                times["compiled_adapted"].append(probe.timed(compiled))
            with bench_model.without_adapter(model) as base:
                times["eager_base"].append(probe.timed(base))
            times["eager_adapted"].append(probe.timed(model))
    out.update({f"{k}_s": min(v) for k, v in times.items()})  # fastest of each: the least disturbed run
    for side in ("compiled", "eager"):  # the ratio: median of the rounds' own (bench_model.Paired)
        summary = bench_model.Paired(tuple(times[f"{side}_base"]), tuple(times[f"{side}_adapted"])).summary()
        out.update({f"{side}_ratio": summary["ratio"], f"{side}_ratio_quartiles": summary["ratio_quartiles"],
                    f"{side}_fastest_ratio": summary["fastest_ratio"]})
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
